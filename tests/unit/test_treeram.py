"""Where the image tree is built (host.treeram): the choice, its cap, the failure message.

The tmpfs itself needs root and the build's namespace: the CI tier builds the
default image's tree in RAM and saves a failed build's tree from RAM to disk
(tests/integration/test_build.py); the extended tier fills the tmpfs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deblive.build.context import BuildContext, WorkTree
from deblive.build.failure import explain
from deblive.cli.parser import make_parser
from deblive.core.errors import BadInputError
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.host import diskspace, treeram
from deblive.host.treeram import TreeChoice, TreePlace, choose

from . import conftest

GIB = 2**30
MIB = 2**20


def test_auto_builds_in_ram_when_the_tree_fits_easily() -> None:
    got = choose(TreePlace.AUTO, 642 * MIB, available=22 * GIB, env={})
    assert got.place is TreePlace.RAM and got.in_ram
    assert got.cap_bytes == int(22 * GIB * 0.75)
    assert got.why == "about 1987 MiB, 22528 MiB of memory available"
    assert got.report() == {"place": "ram", "why": got.why, "cap_mib": 16896}


@pytest.mark.parametrize(("installed", "available", "why"), [
    (642 * MIB, 3 * GIB, "too big for RAM: about 1987 MiB, 3072 MiB of memory available"),
    (6 * GIB, 16 * GIB, "too big for RAM: about 10240 MiB, 16384 MiB of memory available"),
    (None, 22 * GIB, "no package plan to size the tree by"),
])
def test_auto_builds_on_disk_when_it_does_not(installed: int | None, available: int,
                                              why: str) -> None:
    got = choose(TreePlace.AUTO, installed, available=available, env={})
    assert got == TreeChoice(TreePlace.DISK, why)
    assert got.report() == {"place": "disk", "why": why, "cap_mib": None}


def test_auto_keeps_a_tree_asked_to_be_kept_on_disk() -> None:
    got = choose(TreePlace.AUTO, 642 * MIB, keep_workdir=True, available=22 * GIB, env={})
    assert got == TreeChoice(TreePlace.DISK, "--keep-workdir keeps the tree on disk")


def test_ram_and_disk_asked_for_are_taken_as_asked() -> None:
    assert choose(TreePlace.DISK, 642 * MIB, available=1).place is TreePlace.DISK
    ram = choose(TreePlace.RAM, None, keep_workdir=True, available=2 * GIB, env={})
    assert ram == TreeChoice(TreePlace.RAM, "asked for (--tree ram)", int(2 * GIB * 0.75))


def test_the_cap_from_the_environment_bounds_the_tmpfs_and_the_choice() -> None:
    env = {treeram.CAP_ENV: "1500"}
    assert choose(TreePlace.RAM, None, available=22 * GIB, env=env).cap_bytes == 1500 * MIB
    # 1987 MiB estimated does not fit a 1500 MiB cap, however much memory there is.
    assert choose(TreePlace.AUTO, 642 * MIB, available=22 * GIB, env=env).place \
        is TreePlace.DISK


@pytest.mark.parametrize("text", ["3x", "", "-5", "12", "١٢٨"])
def test_a_bad_cap_is_bad_input_naming_the_variable(text: str) -> None:
    with pytest.raises(BadInputError, match=rf"{treeram.CAP_ENV}=.* whole number of MiB"):
        choose(TreePlace.AUTO, 642 * MIB, available=22 * GIB, env={treeram.CAP_ENV: text})
    # disk needs no cap: nothing to refuse
    assert choose(TreePlace.DISK, None, env={treeram.CAP_ENV: text}).place is TreePlace.DISK


def test_mem_available_reads_the_kernels_estimate(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24576000 kB\nMemFree:  100 kB\n"
                       "MemAvailable:   23000000 kB\n")
    assert treeram.mem_available(meminfo) == 23000000 * 1024
    meminfo.write_text("MemTotal:       24576000 kB\n")
    with pytest.raises(OSError, match="no MemAvailable"):
        treeram.mem_available(meminfo)


def test_the_cli_takes_the_place() -> None:
    args = make_parser().parse_args(["build", "--tree", "ram"])
    assert TreePlace(args.tree) is TreePlace.RAM
    assert make_parser().parse_args(["build"]).tree == "auto"
    with pytest.raises(SystemExit):
        make_parser().parse_args(["build", "--tree", "tmpfs"])


def _ctx(tmp_path: Path, full: bool | None) -> BuildContext:
    log = BuildLog()
    ctx = BuildContext(conftest.parse({"name": "t"}), log, Runner(log), WorkTree(tmp_path / "w"),
                       tmp_path / "out", tmp_path / "cache", make_iso=False)
    if full is not None:
        ctx.tree_choice = TreeChoice(TreePlace.RAM, "asked for (--tree ram)", 300 * MIB)
        ctx.tree_ram = treeram.RamTreeState(full=full)
    return ctx


def test_a_full_tree_in_ram_is_named_as_memory_not_as_the_disk(tmp_path: Path) -> None:
    exc = OSError(28, "No space left on device", "/w/rootfs/usr/lib/x")
    error, stage = explain(exc, _ctx(tmp_path, full=True), tmp_path / "out")
    assert isinstance(error, diskspace.DiskFullError)
    assert str(error).startswith(
        f"the image tree outgrew its memory in stage {stage}: the tmpfs it is built in "
        "(at most 300 MiB) is full; build it on disk with --tree disk, or allow more with "
        "DEBLIVE_TREE_RAM_MAX=MiB\n")
    # The tmpfs had room: the disk is what filled up.
    for full in (False, None):
        error, stage = explain(exc, _ctx(tmp_path, full=full), tmp_path / "out")
        assert str(error).startswith(f"disk full: no space left on the device in stage {stage}")
