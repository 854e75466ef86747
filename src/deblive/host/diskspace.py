"""Free space: checked before the big writes, and a full disk named as such.

The squashfs and the ISO are the two large files a build writes; both are
checked against an estimate before they are started, so a build on a small
disk stops with "needs about N MiB, M MiB free" instead of half an hour of
work ending in a truncated file. When the disk fills anyway (an estimate is
only an estimate; something else may be writing), the error says "disk full"
plainly, whichever tool hit it: mksquashfs, xorriso, apt, dpkg, or deblive's
own log.

DEBLIVE_SKIP_SPACE_CHECK=1 skips the estimates (for a file system whose free
space statvfs misreports); the full-disk handling stays.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from deblive.core.errors import DebliveError
from deblive.core.runner import CommandError

MIB = 2**20
# Squashfs size as a fraction of the tree, per compressor: measured on a
# 303 MiB bookworm tree (gzip .43, xz .39, zstd .41, lz4 .54, see the design
# notes) plus a safety margin; lzo sits between gzip and lz4.
SQUASH_RATIO = {"xz": 0.45, "zstd": 0.48, "gzip": 0.50, "lzo": 0.58, "lz4": 0.62}
MARGIN = 64 * MIB
# Beyond the squashfs, the medium and ISO add kernel and initrd copies, the
# EFI image and boot loader files: a few tens of MiB.
ISO_EXTRA = 128 * MIB
FULL_DISK_WORDS = ("No space left on device", "exceeds free space on media", "Disk quota exceeded")


class DiskSpaceError(DebliveError):
    """Not enough free space for the next step (estimated before it starts)."""

    def __init__(self, message: str, stage: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage


class DiskFullError(DebliveError):
    """The disk filled up while a step was writing."""


def skip_checks() -> bool:
    return os.environ.get("DEBLIVE_SKIP_SPACE_CHECK", "") not in ("", "0")


def existing_ancestor(path: Path) -> Path:
    """path or its nearest existing parent: statvfs needs something that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on path's file system (root may use more)."""
    st = os.statvfs(existing_ancestor(path))
    return st.f_bavail * st.f_frsize


def same_filesystem(a: Path, b: Path) -> bool:
    return existing_ancestor(a).stat().st_dev == existing_ancestor(b).stat().st_dev


def estimate_squashfs(tree_bytes: int, compression: str) -> int:
    return int(tree_bytes * SQUASH_RATIO.get(compression, 0.65)) + MARGIN


def require(path: Path, needed: int, what: str, stage: str | None = None) -> str:
    """Raise DiskSpaceError unless path's file system has needed bytes free; returns a log line."""
    free = free_bytes(path)
    line = (
        f"free space for {what}: {free / MIB:.0f} MiB free in {existing_ancestor(path)}, "
        f"about {needed / MIB:.0f} MiB needed"
    )
    if free < needed and not skip_checks():
        raise DiskSpaceError(
            f"not enough free space for {what}: {existing_ancestor(path)} has "
            f"{free / MIB:.0f} MiB free, about {needed / MIB:.0f} MiB are needed (estimate). "
            "Free some space, or use --workdir/-o on a larger file system "
            "(DEBLIVE_SKIP_SPACE_CHECK=1 tries anyway)",
            stage,
        )
    return line


def _chain(exc: BaseException) -> list[BaseException]:
    """exc and the exceptions it replaced (a failing log write can mask the real error)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_disk_full(exc: BaseException) -> bool:
    """Did exc (or an error it replaced) come from a full disk?"""
    for item in _chain(exc):
        if isinstance(item, DiskFullError):
            return True
        if isinstance(item, OSError) and item.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(item, CommandError):
            text = "\n".join([*item.notable, *item.tail])
            if any(word in text for word in FULL_DISK_WORDS):
                return True
    return False


def root_error(exc: BaseException) -> BaseException:
    """The first deblive error in exc's chain: the one worth showing, not a log write's."""
    for item in _chain(exc):
        if isinstance(item, DebliveError):
            return item
    return exc


def full_disk_message(exc: BaseException, stage: str, paths: list[Path]) -> str:
    """One plain sentence first, then what the tool said."""
    where = ", ".join(
        f"{existing_ancestor(p)} ({free_bytes(p) / MIB:.0f} MiB free now)" for p in paths
    )
    first = root_error(exc)
    if isinstance(first, DiskFullError):
        return str(first)
    text = f"disk full: no space left on the device in stage {stage}; file systems: {where}"
    if isinstance(first, OSError):
        # deblive's own write (its log, a report): the sentence above says it all.
        return text + (f"; writing {first.filename}" if first.filename else "")
    return f"{text}\n{first}"
