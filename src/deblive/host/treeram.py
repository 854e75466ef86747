"""Where the image tree is built: in RAM (a tmpfs in the build's namespace) or on disk.

The tree is scratch until it is squashed, and writing it is most of a cold
build: dpkg unpacks some 17,700 files, mkinitramfs copies the kernel's
modules inside it, and a successful build deletes it all again. On this
machine (a nested VM, its ext4 mounted with `discard`) the deletion alone took
about 3 s, and a cold build of the bench image took 60.1 s with the tree on
disk and 54.4 s with it in RAM (alternating builds; bench/). debos's
fakemachine likewise builds in memory when it can.

So by default (`auto`) the tree goes to a tmpfs when the plan's installed size,
with room for what the hook and the initramfs add, fits easily in the memory
available; otherwise, without a plan to size it by, or with --keep-workdir,
on disk as before. `--tree ram` or `--tree disk` decides it outright.

The tmpfs is mounted in the build's private mount namespace, so it goes with
the build however it ends, a SIGKILL included: that is the one case in which
the tree is lost. A failed or interrupted build copies it to the work tree on
disk first (work/rootfs, as if it had been built there), so what is needed to
debug the failure is kept. Its size is capped (three quarters of the memory
available at the start, or DEBLIVE_TREE_RAM_MAX in MiB): a tree that outgrows
the cap fails the build with ENOSPC, which the failure message then names as
the tree's memory, not the disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from deblive.core.errors import BadInputError
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.host import deletion, sandbox

MIB = 2**20
CAP_ENV = "DEBLIVE_TREE_RAM_MAX"
# What the tree grows by beyond the installed size of the plan's packages: the
# hook's additions, the initramfs and mkinitramfs's scratch (its copy of the
# modules), generated locales, apt's caches until the clean stage.
GROWTH = 1.5
ALLOWANCE = 1024 * MIB
# auto takes RAM only when the estimate is at most this share of what is available.
AUTO_SHARE = 0.5
CAP_SHARE = 0.75
SAVED_SUFFIX = ".saving"


class TreePlace(StrEnum):
    """--tree: where the image tree is built."""

    AUTO = "auto"
    RAM = "ram"
    DISK = "disk"


@dataclass(frozen=True)
class TreeChoice:
    """The place decided for one build, and why (for the log and report.json)."""

    place: TreePlace  # RAM or DISK, never AUTO
    why: str
    cap_bytes: int = 0  # the tmpfs's size limit (RAM only)

    @property
    def in_ram(self) -> bool:
        return self.place is TreePlace.RAM

    def report(self) -> dict[str, object]:
        return {"place": str(self.place), "why": self.why,
                "cap_mib": self.cap_bytes // MIB if self.in_ram else None}


def mem_available(meminfo: Path = Path("/proc/meminfo")) -> int:
    """MemAvailable in bytes: what can be used without swapping (the kernel's estimate)."""
    for line in meminfo.read_text(encoding="ascii").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no MemAvailable in {meminfo}")


def cap_from_env(env: Mapping[str, str], available: int) -> int:
    """The tmpfs's cap: DEBLIVE_TREE_RAM_MAX (MiB) if set, else a share of what is available."""
    text = env.get(CAP_ENV)
    if text is None:
        return int(available * CAP_SHARE)
    if not text.isascii() or not text.isdigit() or int(text) < 64:
        raise BadInputError(f"{CAP_ENV}={text!r} in the environment: expected a whole "
                            "number of MiB, at least 64")
    return int(text) * MIB


def choose(wanted: TreePlace, installed_bytes: int | None, *, keep_workdir: bool = False,
           available: int | None = None, env: Mapping[str, str] = os.environ) -> TreeChoice:
    """Decide where this build's tree goes (BadInputError on a bad cap: exit 2)."""
    if wanted is TreePlace.DISK:
        return TreeChoice(TreePlace.DISK, "asked for (--tree disk)")
    avail = mem_available() if available is None else available
    cap = cap_from_env(env, avail)
    if wanted is TreePlace.RAM:
        return TreeChoice(TreePlace.RAM, "asked for (--tree ram)", cap)
    if keep_workdir:
        return TreeChoice(TreePlace.DISK, "--keep-workdir keeps the tree on disk")
    if installed_bytes is None:
        return TreeChoice(TreePlace.DISK, "no package plan to size the tree by")
    estimate = int(installed_bytes * GROWTH) + ALLOWANCE
    sizes = f"about {estimate // MIB} MiB, {avail // MIB} MiB of memory available"
    if estimate > min(avail * AUTO_SHARE, cap):
        return TreeChoice(TreePlace.DISK, f"too big for RAM: {sizes}")
    return TreeChoice(TreePlace.RAM, sizes, cap)


def is_full(rootfs: Path) -> bool:
    """The tmpfs at rootfs is (nearly) full: an ENOSPC in the build came from it.

    Looked at in the teardown, after the failed writer cleaned up (dpkg removes
    the file it could not finish), hence the margin: 64 MiB or 5 % of the cap.
    """
    st = os.statvfs(rootfs)
    free = st.f_bavail * st.f_frsize
    return free < max(64 * MIB, st.f_blocks * st.f_frsize // 20)


@dataclass
class RamTreeState:
    """What the tree's teardown found, for the failure message."""

    full: bool = False
    saved: bool = False


@contextmanager
def tree_in_ram(rootfs: Path, choice: TreeChoice, runner: Runner, log: BuildLog,
                keep: Callable[[bool], bool]) -> Iterator[RamTreeState]:
    """A tmpfs on the empty directory rootfs for the tree, unmounted at the end.

    keep(failed) says whether the tree is copied to disk first (a failed build
    keeps it; a successful one with --keep-workdir too). Entered before
    anything is mounted inside the tree, so everything inside is gone by then.
    """
    assert choice.in_ram
    sandbox.mount("deblive-tree", rootfs, "tmpfs", 0, f"mode=0755,size={choice.cap_bytes}")
    log.info(f"image tree in RAM (tmpfs, at most {choice.cap_bytes // MIB} MiB): {choice.why}")
    state = RamTreeState()
    failed = True
    try:
        yield state
        failed = False
    finally:
        saving = rootfs.with_name(rootfs.name + SAVED_SUFFIX)
        try:
            state.full = is_full(rootfs)
            if keep(failed):
                state.saved = save(rootfs, saving, runner, log)
        finally:
            sandbox.unmount_below(rootfs)  # normally nothing: the stages' mounts are gone
            sandbox.umount(rootfs)
        if state.saved:
            os.rmdir(rootfs)
            os.rename(saving, rootfs)


def save(rootfs: Path, saving: Path, runner: Runner, log: BuildLog) -> bool:
    """Copy the tree in RAM to saving on disk (every attribute, links as links, no
    mount below it crossed); False, and nothing half copied, if that fails."""
    deletion.remove_tree(saving)
    os.mkdir(saving, 0o755)
    try:
        runner.run(["cp", "-a", "--one-file-system", "--no-target-directory", str(rootfs),
                    str(saving)], what="saving the image tree from RAM to disk")
    except Exception as exc:  # a full disk, an interrupt: the failure's own error matters more
        log.warn(f"the image tree in RAM could not be saved to {rootfs}: {exc}")
        deletion.remove_tree(saving)
        return False
    log.info(f"image tree copied from RAM to {rootfs} for inspection")
    return True
