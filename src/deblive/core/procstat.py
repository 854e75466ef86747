"""The process table as /proc/PID/stat gives it: for ending a command's whole tree
(core.runner) and finding the compressors a pinned command started (host.cpus)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str  # the name, as the kernel keeps it (15 bytes at most)
    ppid: int
    pgrp: int


def process_table(proc: Path = PROC) -> Iterator[ProcStat]:
    """Every process's stat line, parsed; a process that ends while it is read is left out.

    The name is between the first "(" and the last ")": it may hold spaces and
    brackets itself, so the fields after it are split from the last ")".
    """
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            text = (proc / entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue  # it ended
        close = text.rfind(")")
        fields = text[close + 2:].split()  # state, ppid, pgrp, ...
        if close < 0 or len(fields) < 3:
            continue
        yield ProcStat(int(entry), text[text.find("(") + 1:close], int(fields[1]),
                       int(fields[2]))
