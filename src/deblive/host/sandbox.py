"""Keeping the host safe: a private mount namespace, and every mount deblive makes.

Interrupted builds elsewhere have left /dev bind-mounted inside a chroot, and a
later `rm -rf` went through it into the host's device nodes. deblive rules that
out three ways:

* every build runs in its own mount namespace with private propagation, so all
  its mounts vanish when the process ends, however it ends (even SIGKILL);
* the chroot never sees the host's /dev, /proc or /sys trees: it gets fresh
  proc and sysfs instances, a tmpfs /dev with its own device nodes and a new
  devpts instance; nothing is bind-mounted from the host but the package cache;
* a mount point in the image is resolved inside the image with no symlink
  allowed anywhere on its path (host.imagetree), and the mount is made on that
  open directory (/proc/self/fd/N), so a tree that turned /proc into a symlink
  cannot make deblive mount over a host directory. Deletion (host.deletion)
  never crosses a mount.

This module is the only one that mounts: the chroot's file systems, the
package cache during the bootstrap and the chroot session, binfmt_misc.

The namespace lives as long as any process in it, so a child that outlived a
SIGKILLed deblive (an apt, a hook's daemon) would keep the mounts alive. A
reaper process, forked when the namespace is made, waits for deblive's end
and then kills whatever is left in the namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import signal
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from deblive.core.errors import DebliveError
from deblive.core.runner import Runner
from deblive.host.imagetree import (
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    ImageTree,
)

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8
BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class SandboxError(DebliveError):
    """The host could not be protected, or a tree is not safe to delete."""

    errno: int | None = None  # the system call's, when one failed


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        error = SandboxError(f"{what}: {os.strerror(err)}")
        error.errno = err
        raise error


def mount(
    source: str, target: Path, fstype: str | None = None, flags: int = 0, data: str | None = None
) -> None:
    ret = _libc.mount(
        source.encode(),
        os.fsencode(target),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    _check(ret, f"mount {source} on {target}")


def umount(target: Path, lazy: bool = False) -> None:
    flags = UMOUNT_NOFOLLOW | (MNT_DETACH if lazy else 0)
    _check(_libc.umount2(os.fsencode(target), flags), f"umount {target}")


def in_private_namespace() -> bool:
    return os.environ.get("DEBLIVE_MOUNT_NS") == str(os.getpid())


def enter_private_mount_namespace() -> None:
    """Move this process into a new mount namespace where nothing propagates back.

    Must run before any thread starts (unshare(CLONE_NEWNS) refuses otherwise).
    After it, the host never sees a mount this build makes, and the kernel tears
    them all down when the last process of the namespace exits.
    """
    if in_private_namespace():
        return
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS) (deblive must run as root)")
    # Make every mount private, so nothing we mount propagates to the host.
    mount("none", Path("/"), None, MS_REC | MS_PRIVATE)
    os.environ["DEBLIVE_MOUNT_NS"] = str(os.getpid())
    start_reaper()


# The write end of the reaper's pipe: held (never written) until deblive ends.
_reaper_pipe: list[int] = []


def start_reaper() -> int:
    """Fork the reaper: when this process ends, however, it kills what is left in the namespace.

    It learns of the end from EOF on a pipe whose only writer is this process
    (the write end is close-on-exec, so no child holds it). Must run before any
    thread starts, like the unshare before it. Returns the reaper's PID.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            _reaper_main(read_fd, write_fd)
        finally:
            os._exit(0)
    os.close(read_fd)
    _reaper_pipe.append(write_fd)
    return pid


def _reaper_main(read_fd: int, write_fd: int) -> None:  # pragma: no cover - runs forked
    os.close(write_fd)
    # Out of the terminal's process group and deaf to the build's signals: it
    # must outlive deblive by a moment, whatever deblive was sent.
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    # No inherited descriptor (a test's pipe, the work-dir lock) may be kept open.
    os.closerange(3, read_fd)
    os.closerange(read_fd + 1, 65536)
    while True:
        try:
            if not os.read(read_fd, 1):
                break
        except InterruptedError:
            continue
    kill_namespace_members()


def namespace_members(ns: str | None = None) -> list[int]:
    """PIDs of the processes in mount namespace ns (default: this process's), self excluded."""
    own = ns or os.readlink("/proc/self/ns/mnt")
    me = os.getpid()
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/mnt") == own:
                members.append(int(entry))
        except OSError:
            continue
    return members


def kill_namespace_members(rounds: int = 50) -> None:
    """SIGKILL everything else in this mount namespace until nothing is left."""
    for _ in range(rounds):
        members = namespace_members()
        if not members:
            return
        for pid in members:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _unescape(field: str) -> str:
    """/proc/self/mounts escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 1 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(path: Path, mounts_file: Path = Path("/proc/self/mounts")) -> list[Path]:
    """Mount points at or below path, deepest first."""
    base = os.path.realpath(path)
    found = []
    for line in mounts_file.read_text().splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        target = _unescape(fields[1])
        if target == base or target.startswith(base.rstrip("/") + "/"):
            found.append(Path(target))
    return sorted(set(found), key=lambda p: (len(p.parts), str(p)), reverse=True)


def unmount_all_under(path: Path) -> None:
    """Unmount everything below path, deepest first; lazily as a last resort."""
    for _ in range(5):
        targets = mounts_under(path)
        if not targets:
            return
        for target in targets:
            try:
                umount(target)
            except SandboxError:
                with suppress(SandboxError):
                    umount(target, lazy=True)
    left = mounts_under(path)
    if left:
        raise SandboxError(f"cannot unmount: {', '.join(map(str, left))}")




def unmount_below(root: Path) -> None:
    """Unmount everything below root (not root itself), deepest first."""
    for target in mounts_under(root):
        if target == Path(os.path.realpath(root)):
            continue
        try:
            umount(target)
        except SandboxError:
            umount(target, lazy=True)


# -- mounts in the image tree -------------------------------------------------------

# Mount points are directories reached without any symlink, inside the image,
# possibly crossing mounts made before (dev/pts lies on the dev tmpfs).
MOUNT_POINT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS


def _mount_point_fd(tree: ImageTree, rel: str) -> int:
    """An O_PATH descriptor of the directory rel in the image, made if missing."""
    parts = rel.strip("/").split("/")
    for depth in range(1, len(parts) + 1):
        current = "/".join(parts[:depth])
        try:
            fd = tree.open_fd(current, os.O_PATH | os.O_DIRECTORY, resolve=MOUNT_POINT)
        except FileNotFoundError:
            parent = "/".join(parts[: depth - 1]) or "."
            pfd = tree.open_fd(parent, os.O_PATH | os.O_DIRECTORY, resolve=MOUNT_POINT)
            try:
                os.mkdir(parts[depth - 1], 0o755, dir_fd=pfd)
            finally:
                os.close(pfd)
            fd = tree.open_fd(current, os.O_PATH | os.O_DIRECTORY, resolve=MOUNT_POINT)
        except OSError as exc:
            raise SandboxError(
                f"cannot mount on /{rel} in the image {tree.root}: {exc.strerror} "
                "(a mount point must be a directory reached without symlinks)"
            ) from None
        if depth < len(parts):
            os.close(fd)
    return fd


def _mount_in_tree(tree: ImageTree, rel: str, source: str, fstype: str | None, flags: int,
                   data: str | None) -> Path:
    fd = _mount_point_fd(tree, rel)
    try:
        mount(source, Path(f"/proc/self/fd/{fd}"), fstype, flags, data)
    finally:
        os.close(fd)
    return tree.root / rel


DEVICE_NODES = {
    # name: (major, minor, mode)
    "null": (1, 3, 0o666),
    "zero": (1, 5, 0o666),
    "full": (1, 7, 0o666),
    "random": (1, 8, 0o666),
    "urandom": (1, 9, 0o666),
    "tty": (5, 0, 0o666),
}
DEV_LINKS = {
    "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx",
}


def _populate_dev(tree: ImageTree) -> None:
    """A minimal /dev in the chroot's own tmpfs: the host's /dev is never involved."""
    fd = _mount_point_fd(tree, "dev")
    try:
        for name, (major, minor, mode) in DEVICE_NODES.items():
            os.mknod(name, stat.S_IFCHR | mode, os.makedev(major, minor), dir_fd=fd)
            node = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=fd)
            try:
                os.chmod(f"/proc/self/fd/{node}", mode)
            finally:
                os.close(node)
        for name, target in DEV_LINKS.items():
            os.symlink(target, name, dir_fd=fd)
        for name in ("pts", "shm"):
            os.mkdir(name, 0o755, dir_fd=fd)
    finally:
        os.close(fd)


@contextmanager
def chroot_mounts(tree: ImageTree) -> Iterator[None]:
    """proc, sys, dev, dev/pts, dev/shm and run for a chroot; unmounted deepest first."""
    if not in_private_namespace():
        raise SandboxError("chroot mounts need the build's private mount namespace")
    root = tree.root
    # A layered build's overlay is mounted on the root itself: that one belongs.
    leftovers = [m for m in mounts_under(root) if m != Path(os.path.realpath(root))]
    if leftovers:
        raise SandboxError(f"{root} already has mounts: {', '.join(map(str, leftovers))}")
    plan: list[tuple[str, str, str, int, str | None]] = [
        ("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
        ("sysfs", "sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, None),
        ("deblive-dev", "dev", "tmpfs", MS_NOSUID, "mode=0755,size=16M"),
        ("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
         "newinstance,ptmxmode=0666,mode=620"),
        ("shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"),
        ("deblive-run", "run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64M"),
    ]
    try:
        for source, rel, fstype, flags, data in plan:
            _mount_in_tree(tree, rel, source, fstype, flags, data)
            if rel == "dev":
                _populate_dev(tree)
        lock = _mount_point_fd(tree, "run/lock")
        try:
            os.chmod(f"/proc/self/fd/{lock}", 0o1777)
        finally:
            os.close(lock)
        yield
    finally:
        unmount_below(root)


@contextmanager
def bind_into(tree: ImageTree, source: Path, rel: str) -> Iterator[None]:
    """Bind a directory deblive owns (the package cache) onto rel in the image."""
    target = _mount_in_tree(tree, rel, str(source), None, MS_BIND, None)
    try:
        yield
    finally:
        try:
            umount(target)
        except SandboxError:
            umount(target, lazy=True)


# The overlay's upper directory must squash into a layer that stands on its own
# over the base: no metadata-only copies (metacopy), no directory redirects (a
# renamed directory is copied whole), no inode index, no xino bits.
OVERLAY_OPTIONS = ("redirect_dir=off", "metacopy=off", "index=off", "xino=off")
# The upper directory is scratch (squashed, or the build starts again): without
# `volatile` (Linux 5.10) overlayfs syncs the whole file system the upper
# directory lives on when it is unmounted, which here meant waiting for the ISO
# just written to reach the disk: 0.7-0.9 s per unmount in a rebuild of 6 s.
VOLATILE = "volatile"


def _unmount_here(target: Path) -> None:
    unmount_below(target)
    if Path(os.path.realpath(target)) in mounts_under(target):
        try:
            umount(target)
        except SandboxError:
            umount(target, lazy=True)


@contextmanager
def overlay(lower: Path | Sequence[Path], upper: Path, work: Path, target: Path
            ) -> Iterator[None]:
    """An overlay on target: lower read-only beneath, every change in upper.

    lower may be several directories, the topmost first (a cached base and the
    package layers over it): overlayfs honours their whiteouts and opaque
    directories as live-boot's stack does at boot. lower may be target itself
    (a base tree built in place): its path is resolved before the overlay
    covers it. Unmounted with everything below it.
    """
    if not in_private_namespace():
        raise SandboxError("an overlay needs the build's private mount namespace")
    lowers = [lower] if isinstance(lower, Path) else list(lower)
    if not lowers:
        raise SandboxError("an overlay needs at least one lower directory")
    for path in (*lowers, upper, work, target):
        if any(char in str(path) for char in ",:\\="):
            raise SandboxError(f"{path}: a path with , : = or \\ cannot name an overlay layer")
    for path, mode in ((upper, 0o755), (work, 0o700), (target, 0o755)):
        path.mkdir(mode=mode, exist_ok=True)
    os.chmod(upper, 0o755)  # the layer's root directory is the booted system's /
    options = ",".join((f"lowerdir={':'.join(str(p) for p in lowers)}", f"upperdir={upper}",
                        f"workdir={work}", *OVERLAY_OPTIONS))
    try:
        mount("overlay", target, "overlay", 0, f"{options},{VOLATILE}")
    except SandboxError as exc:
        if exc.errno != errno.EINVAL:  # an older kernel: synced at unmount, only slower
            raise
        mount("overlay", target, "overlay", 0, options)
    try:
        yield
    finally:
        _unmount_here(target)


@contextmanager
def squashfs_image(image: Path, target: Path, runner: Runner) -> Iterator[None]:
    """A squashfs file mounted read-only on target through a loop device.

    mount(8) sets the loop device to clear itself on unmount, and the private
    namespace unmounts it when the build's processes end, however they end.
    """
    if not in_private_namespace():
        raise SandboxError("a squashfs mount needs the build's private mount namespace")
    target.mkdir(mode=0o755, exist_ok=True)
    runner.run(["mount", "-t", "squashfs", "-o", "loop,ro", str(image), str(target)],
               what=f"mounting {image.name}")
    try:
        yield
    finally:
        _unmount_here(target)


def mount_binfmt_misc() -> None:
    """binfmt_misc, where foreign architectures' qemu-user handlers are registered."""
    if (BINFMT_MISC / "register").exists():
        return
    with suppress(SandboxError):
        mount("binfmt_misc", BINFMT_MISC, "binfmt_misc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
