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

The chain ends in one program that does use more CPUs: zstd, compressing the
initramfs (154 MB at -9: 5.0 s on one thread, 3.3 s on two, here). It
inherits the pin, so while the chain runs a watcher gives every zstd of the
chain's process group all of deblive's CPUs back, and ZSTD_NBTHREADS gives it
as many workers. zstd's output is the same for any number of workers (it splits
its input into the same jobs), so the initramfs stays byte for byte the one a
single worker makes. mkinitramfs leaves zstd's -T0 out when SOURCE_DATE_EPOCH
is set, as it does xz's --threads=0, whose output does depend on the threads.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from deblive.core.procstat import PROC, process_table

PROC_STAT = PROC / "stat"
SAMPLE_SECONDS = 0.1
COMPRESSORS = frozenset({"zstd"})
WATCH_SECONDS = 0.2  # zstd runs seconds: a late start costs little, a scan of /proc some ms


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


def compressor_env() -> dict[str, str]:
    """zstd's workers: one per CPU deblive may use."""
    return {"ZSTD_NBTHREADS": str(len(os.sched_getaffinity(0)))}


def group_members(groups: set[int], names: frozenset[str], proc: Path = PROC) -> list[int]:
    """PIDs of the processes named one of names (their comm) in one of the process groups."""
    return [p.pid for p in process_table(proc) if p.comm in names and p.pgrp in groups]


def widen(pid: int, allowed: set[int], proc: Path = PROC) -> None:
    """Every thread of pid on all the allowed CPUs (threads made later inherit it)."""
    with contextlib.suppress(OSError):
        for tid in os.listdir(proc / str(pid) / "task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), allowed)


@contextlib.contextmanager
def compressors_unpinned(groups: Callable[[], list[int]], names: frozenset[str] = COMPRESSORS,
                         interval: float = WATCH_SECONDS) -> Iterator[set[int]]:
    """While the block runs, every process named one of names in the process groups
    groups() returns (the runner's running commands lead their own) gets all the CPUs
    deblive may use; yields the set of PIDs so widened (filled in as it goes)."""
    allowed = os.sched_getaffinity(0)
    widened: set[int] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(interval):
            for pid in group_members(set(groups()), names):
                widen(pid, allowed)  # again each time: a thread it started since
                widened.add(pid)

    watcher = threading.Thread(target=watch, name="compressors-unpinned", daemon=True)
    watcher.start()
    try:
        yield widened
    finally:
        stop.set()
        watcher.join()
