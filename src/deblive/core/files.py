"""Files deblive writes for itself: locks, digests, atomic writes and publishing.

Every lock file is opened without following a symlink and must be a regular
file of ours: a lock in a directory another user could write to must not be
turned into a way to truncate some other file. Results appear under their
names only when complete (written beside, then renamed).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from deblive.core.errors import BadInputError, DebliveError

CHUNK = 1 << 20


class LockBusy(BadInputError):
    """Another process holds the lock; holder is the PID it recorded, if any."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        self.holder = holder
        super().__init__(f"{path} is held by another process (PID {holder})")


def open_lock_file(path: Path) -> int:
    """Open (or create, mode 0600) a lock file: never through a symlink, never someone else's."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DebliveError(f"refusing the lock {path}: it is a symlink") from None
        raise DebliveError(f"cannot open the lock {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise DebliveError(f"refusing the lock {path}: not a regular file owned by this user")
    return fd


@contextlib.contextmanager
def exclusive_lock(
    path: Path, *, wait: bool = False, record_pid: bool = False,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold an exclusive flock on path for the context.

    wait=False raises LockBusy (naming the holder's recorded PID) when another
    process holds it; wait=True calls on_wait once, then blocks. record_pid
    writes this process's PID into the file for the next one to name.
    """
    fd = open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise LockBusy(path, holder) from None
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        if record_pid:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


# Digests of large files already read, by what identifies a file's content as
# long as it is not written to: the squashfs and the ISO are each summed for the
# medium's sha256sum.txt, the report and SHA256SUMS (about 1 GiB read, 2 s here).
_DIGESTS: dict[tuple[int, int, int, int, int], str] = {}
REMEMBERED_FROM = 1 << 20


def sha256_file(path: Path) -> str:
    """sha256 of a file; a regular file of 1 MiB or more read before, and not changed
    since (the same inode, size, mtime and ctime), is not read again."""
    with path.open("rb") as f:
        st = os.fstat(f.fileno())
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        remember = stat.S_ISREG(st.st_mode) and st.st_size >= REMEMBERED_FROM
        if remember and key in _DIGESTS:
            return _DIGESTS[key]
        digest = hashlib.sha256()
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    if remember:
        _DIGESTS[key] = digest.hexdigest()
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def copy_regular(source: Path, target: Path) -> bool:
    """Copy source to a new file target if source is a regular file; False if it is not.

    For files another party could have made (the chroot's): no link is followed, a
    FIFO is not waited on, and target is never one that existed before.
    """
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        out_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644)
        with os.fdopen(out_fd, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    return True


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write path whole or not at all: a temporary file beside it, renamed over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = data.encode() if isinstance(data, str) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def move_into_place(src: Path, dest: Path) -> None:
    """Rename src to dest; across file systems copy beside dest first, then rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        partial = dest.with_name(f".{dest.name}.partial")
        try:
            shutil.copyfile(src, partial)
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        src.unlink()


def publish(files: list[Path], outdir: Path) -> list[Path]:
    """Move finished files into outdir, each appearing under its name only when complete."""
    published = []
    for src in files:
        dest = outdir / src.name
        move_into_place(src, dest)
        published.append(dest)
    return published


def read_regular(path: Path) -> bytes:
    """A host file's bytes, never through a symlink; a FIFO, device or socket there
    (even one put in place of the file just now) is refused, not read."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DebliveError(f"{path}: not a regular file: not read")
        return f.read()
