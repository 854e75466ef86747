"""A layered build's initramfs, made again only when what it is made from changed.

The initramfs is the largest stage of a rebuild whose base came from the cache
(about 30 s of 33 s here). It is made from the kernel, its modules,
initramfs-tools' and live-boot's hooks and scripts, the binaries and
libraries they copy, and a few files of /etc; all of those are in the base,
except what the layer above it changes. So the initramfs of a base is kept
beside the cache entry, keyed on a digest of the layer's entries that can
reach it: everything the hook (and the session) changed outside the places
initramfs-tools never reads (/home, /root, /srv, /opt, /var, /tmp, and /etc
except the directories and files below). A hook that writes /etc/motd or a
user's files reuses the initramfs; one that installs a package, changes
/usr, /etc/initramfs-tools or /etc/default makes it anew.

The layer is read through an ImageTree like any image tree: its content is
the hook's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from pathlib import Path

from deblive.build.basecache import Entry
from deblive.core.files import write_atomic
from deblive.host import deletion
from deblive.host.imagetree import ImageTree

NEVER_READ = frozenset({"home", "root", "srv", "opt", "var", "tmp", "media", "mnt", "run",
                        "proc", "sys", "dev", "lost+found"})
# What of /etc initramfs-tools, its hooks (udev, kmod, console-setup, cryptsetup,
# mdadm, lvm, live-boot) and the linker read.
ETC_READ = frozenset({
    "initramfs-tools", "modprobe.d", "modules", "modules-load.d", "udev", "default",
    "console-setup", "crypttab", "fstab", "live", "ld.so.conf", "ld.so.conf.d",
    "ld.so.cache", "mdadm", "lvm", "iscsi", "cryptsetup-initramfs", "kernel", "plymouth",
    "alternatives", "kbd", "keyboard", "X11",
})
STATE = "/var/lib/initramfs-tools"


def may_reach_initramfs(path: str) -> bool:
    """Whether an image path (/a/b) is one initramfs-tools can read."""
    parts = path.strip("/").split("/")
    if parts[0] in NEVER_READ:
        return False
    return not (parts[0] == "etc" and len(parts) > 1 and parts[1] not in ETC_READ)


def _entry_line(layer: ImageTree, path: str, st: os.stat_result) -> str:
    kind = stat.S_IFMT(st.st_mode)
    head = f"{path} {kind:o} {stat.S_IMODE(st.st_mode):o} {st.st_uid}:{st.st_gid}"
    if stat.S_ISREG(st.st_mode):
        digest = hashlib.sha256()
        with layer.open_read(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return f"{head} {digest.hexdigest()}"
    if stat.S_ISLNK(st.st_mode):
        return f"{head} -> {layer.readlink(path)}"
    if stat.S_ISDIR(st.st_mode):
        return f"{head} opaque={layer.is_opaque(path)}"
    return f"{head} dev={st.st_rdev}"  # 0/0: a whiteout, a deletion from the base


def inputs_digest(layer: ImageTree) -> str:
    """sha256 over the layer's entries that may reach the initramfs (mtimes left out)."""
    digest = hashlib.sha256()
    for path, st in layer.walk(descend=may_reach_initramfs):
        line = _entry_line(layer, path, st)
        digest.update(line.encode("utf-8", errors="surrogateescape") + b"\n")
    return digest.hexdigest()


def _files(version: str) -> tuple[str, ...]:
    return (f"/boot/initrd.img-{version}", f"{STATE}/{version}")


def _stored(entry: Entry, digest: str) -> Path:
    return entry.directory / "initramfs" / digest


def lookup(entry: Entry, digest: str, versions: list[str]) -> Path | None:
    """The stored initramfs of every kernel for these inputs, or None."""
    stored = _stored(entry, digest)
    if not (stored / "complete").is_file():
        return None
    for version in versions:
        if not (stored / f"initrd.img-{version}").is_file():
            return None
    return stored


def restore(stored: Path, tree: ImageTree, versions: list[str]) -> None:
    """Put the stored initramfs (and update-initramfs's record of it) into the image."""
    for version in versions:
        initrd, record = _files(version)
        tree.copy_in(stored / f"initrd.img-{version}", initrd, 0o644)
        saved = stored / f"state-{version}"
        if saved.is_file():  # only what update-initramfs made: the layer stays the same
            tree.mkdir(STATE)
            tree.copy_in(saved, record, 0o644)


def store(entry: Entry, digest: str, tree: ImageTree, versions: list[str]) -> None:
    """Keep what update-initramfs made for these inputs beside the base entry."""
    final = _stored(entry, digest)
    if final.exists():
        return
    staging = final.with_name(f".{digest}.{os.getpid()}.tmp")
    deletion.remove_tree(staging)
    staging.mkdir(parents=True, mode=0o700)
    try:
        for version in versions:
            initrd, record = _files(version)
            tree.copy_out(initrd, staging / f"initrd.img-{version}")
            if tree.is_file(record) and not tree.is_symlink(record):
                tree.copy_out(record, staging / f"state-{version}")
        write_atomic(staging / "complete", " ".join(versions) + "\n")
        with contextlib.suppress(OSError):  # another build stored it first
            os.rename(staging, final)
    finally:
        deletion.remove_tree(staging)
