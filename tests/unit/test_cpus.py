"""host.cpus: the CPU a long chain of short programs runs on."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deblive.host import cpus

STAT = """cpu  900 0 300 5000 40 0 10 0 0 0
cpu0 500 0 100 2000 20 0 5 0 0 0
cpu1 400 0 200 3000 20 0 5 0 0 0
intr 12345
ctxt 678
"""


def test_idle_ticks_reads_each_cpu_line(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    assert cpus.idle_ticks(stat) == {0: 2020, 1: 3020}  # idle + iowait, not the sum line


def test_quietest_cpu_is_the_one_idle_longest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    samples = iter([{0: 100, 1: 100, 2: 100, 3: 100}, {0: 105, 1: 110, 2: 109, 3: 110}])
    # 1 and 3 were idle as long: the lower numbered
    assert cpus.quietest_cpu(0, lambda: next(samples)) == 1
    # Only the CPUs this process may use count, whatever the others did.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2})
    samples = iter([{0: 100, 1: 100, 2: 100}, {0: 101, 1: 190, 2: 103}])
    assert cpus.quietest_cpu(0, lambda: next(samples)) == 2


def test_nothing_to_choose_is_no_pinning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert cpus.quietest_cpu(0, lambda: pytest.fail("no sample needed")) is None
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})

    def unreadable() -> dict[int, int]:
        raise OSError("no /proc/stat")

    assert cpus.quietest_cpu(0, unreadable) is None
    assert cpus.on_cpu(None, ["mkinitramfs"]) == ["mkinitramfs"]


def test_the_command_runs_on_that_cpu_alone() -> None:
    """The real taskset on this host: the program itself may use one CPU only."""
    cpu = cpus.quietest_cpu()
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        assert cpu is None
        return
    assert cpu in allowed
    out = subprocess.run(cpus.on_cpu(cpu, ["grep", "Cpus_allowed_list", "/proc/self/status"]),
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["Cpus_allowed_list:", str(cpu)]
