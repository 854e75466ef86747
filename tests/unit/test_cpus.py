"""host.cpus: the CPU a long chain of short programs runs on."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from deblive.core import procstat
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


def test_group_members_reads_names_and_groups(tmp_path: Path) -> None:
    """comm may hold spaces and brackets: it ends at the last one."""
    for pid, comm, pgrp in ((10, "zstd", 7), (11, "zstd", 8), (12, "a (zstd) b", 7),
                            (13, "sh", 7)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} ({comm}) S 1 {pgrp} {pgrp} 0 -1\n")
    (tmp_path / "14").mkdir()  # ended between the listing and the read: no stat
    (tmp_path / "self").mkdir()
    assert cpus.group_members({7}, cpus.COMPRESSORS, tmp_path) == [10]
    assert sorted(cpus.group_members({7, 8}, frozenset({"zstd", "a (zstd) b"}), tmp_path)) == [
        10, 11, 12]
    (tmp_path / "15").mkdir()
    (tmp_path / "15" / "stat").write_text("15 (cut")  # no fields after the name: left out
    table = sorted(procstat.process_table(tmp_path), key=lambda p: p.pid)
    assert [(p.pid, p.comm, p.ppid, p.pgrp) for p in table] == [
        (10, "zstd", 1, 7), (11, "zstd", 1, 8), (12, "a (zstd) b", 1, 7), (13, "sh", 1, 7)]


def test_a_pinned_compressor_gets_every_cpu_back(tmp_path: Path) -> None:
    """Real processes: a 'zstd' pinned to one CPU in a watched process group gets all
    of this process's CPUs; one in another group keeps its pin."""
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("one CPU: nothing to give back")  # the pin is then no pin at all
    cpu = min(allowed)
    program = tmp_path / "zstd"  # what the comm says is the name it was run by
    program.write_bytes(Path("/bin/sleep").read_bytes())
    program.chmod(0o755)
    watched, other = (subprocess.Popen(cpus.on_cpu(cpu, [str(program), "30"]),
                                       start_new_session=True) for _ in range(2))
    try:
        with cpus.compressors_unpinned(lambda: [watched.pid], interval=0.01) as widened:
            for _ in range(500):
                if watched.pid in widened and os.sched_getaffinity(watched.pid) == allowed:
                    break
                time.sleep(0.01)
        assert widened == {watched.pid}
        assert os.sched_getaffinity(watched.pid) == allowed
        assert os.sched_getaffinity(other.pid) == {cpu}
    finally:
        for proc in (watched, other):
            proc.kill()
            proc.wait()
