"""One CPU for a long chain of short programs.

mkinitramfs (MODULES=most) starts some 19,500 programs one after another, each
waited for by its shell before the next starts. Left to the scheduler, a child
often starts on another CPU than its parent, and every start and exit then
wakes a process across CPUs, which a virtual machine pays for dearly. Pinned
to one CPU the chain runs faster: on this 2-CPU build VM, mkinitramfs of the
bench image took 23-30 s pinned against 28-40 s unpinned (five runs each,
alternating). Such a chain gains nothing from a second CPU, so it runs on the
one that was idle the longest a moment before; the build's other work, and
other builds on the host, keep the rest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

PROC_STAT = Path("/proc/stat")
SAMPLE_SECONDS = 0.1


def idle_ticks(stat: Path = PROC_STAT) -> dict[int, int]:
    """Each CPU's idle and iowait time so far (in clock ticks), from /proc/stat."""
    ticks: dict[int, int] = {}
    for line in stat.read_text(encoding="ascii").splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and len(fields) >= 5:
            ticks[int(name[3:])] = int(fields[3]) + int(fields[4])
    return ticks


def quietest_cpu(sample: float = SAMPLE_SECONDS,
                 ticks: Callable[[], dict[int, int]] = idle_ticks) -> int | None:
    """The CPU this process may use that was idle the longest over a short sample
    (the lowest numbered of equals); None when there is only one to use, or no
    /proc/stat to tell."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    try:
        before = ticks()
        time.sleep(sample)
        after = ticks()
    except (OSError, ValueError):
        return None
    return max(allowed, key=lambda cpu: (after.get(cpu, 0) - before.get(cpu, 0), -cpu))


def on_cpu(cpu: int | None, argv: Sequence[str]) -> list[str]:
    """argv run on that one CPU (util-linux's taskset execs it: the same process), or
    as it is for None."""
    if cpu is None:
        return list(argv)
    return ["taskset", "--cpu-list", str(cpu), *argv]
