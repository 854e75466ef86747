"""The one way into the image tree from the host.

The image's root directory is filled by packages, maintainer scripts and the
hook: content deblive did not write. Debian packages ship absolute symlinks
(/etc/localtime, /etc/alternatives/*), and anything can be planted, so host
code that opens `rootfs / "etc/localtime"` would follow the link onto the
HOST's file. Every host-side access to a path in the tree goes through an
ImageTree instead, which resolves paths the way the image itself sees them:

* openat2(2) with RESOLVE_IN_ROOT: `..` and absolute symlinks stay inside the
  root, so "/etc/localtime -> /usr/share/zoneinfo/UTC" means the image's UTC;
* RESOLVE_NO_MAGICLINKS: no /proc/self/fd/... escapes;
* RESOLVE_NO_XDEV: never into a mount (the chroot's proc, sys, dev, run, the
  package cache bound in), so nothing of the host's kernel interfaces or
  caches is read or written through the tree;
* the last component is never followed when it is written, replaced,
  removed, chmodded or listed: writes go to a temporary name and are renamed
  over it, so a planted symlink is replaced, not written through;
* reads open regular files only (a FIFO or device node is refused, not read).

Nothing else in deblive joins a tree path onto the root and opens it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fnmatch
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from deblive.core.errors import DebliveError
from deblive.core.files import read_regular
from deblive.host import deletion

SYS_OPENAT2 = 437  # the same number on every architecture Linux added it for (5.6)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_IN_ROOT = 0x10
INSIDE = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


class TreeError(DebliveError):
    """A path in the image could not be used the safe way (names the path and why)."""


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = INSIDE) -> int:
    """openat2(2); OSError like os.open. EAGAIN (a concurrent rename) is retried."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, resolve)
    raw = os.fsencode(path)
    for _ in range(16):
        fd = _libc.syscall(SYS_OPENAT2, dirfd, raw, ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)


def _relative(path: str | PurePosixPath) -> str:
    """An image path ('/etc/hostname' or 'etc/hostname') relative to the root ('.' for /)."""
    text = str(path).lstrip("/")
    return text or "."


def _split(path: str | PurePosixPath) -> tuple[str, str]:
    """(parent, last component) of an image path; the last must be a real name."""
    pure = PurePosixPath("/" + _relative(path))
    name = pure.name
    if name in ("", ".", ".."):
        raise TreeError(f"{pure}: not a name of a file in the image")
    return _relative(pure.parent), name


class ImageTree:
    """The image's root directory, entered the way the image itself sees it.

    Paths are image paths (absolute or relative to the root, it is the same).
    Open it once per tree (after the bootstrap made it) and close it when done.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            self._fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise TreeError(f"{root}: cannot open the image root: {exc.strerror}") from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ImageTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ImageTree({str(self.root)!r})"

    # -- resolution -----------------------------------------------------------------

    def _error(self, path: str | PurePosixPath, exc: OSError, doing: str) -> TreeError:
        reason = {
            errno.EXDEV: "it leads out of the image or into a mount",
            errno.ELOOP: "it is a symlink (or too many symlinks)",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        return TreeError(f"{doing} /{_relative(path)} in the image {self.root}: {reason}")

    def open_fd(self, path: str | PurePosixPath, flags: int, mode: int = 0, *,
                resolve: int = INSIDE) -> int:
        """A file descriptor for path, resolved inside the root (OSError as is)."""
        return openat2(self._fd, _relative(path), flags, mode, resolve)

    @contextlib.contextmanager
    def _dir(self, path: str | PurePosixPath) -> Iterator[int]:
        fd = openat2(self._fd, _relative(path), os.O_PATH | os.O_DIRECTORY)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _parent(self, path: str | PurePosixPath, doing: str) -> Iterator[tuple[int, str]]:
        parent, name = _split(path)
        try:
            with self._dir(parent) as fd:
                yield fd, name
        except OSError as exc:
            raise self._error(path, exc, doing) from None

    # -- questions ------------------------------------------------------------------

    def lstat(self, path: str | PurePosixPath) -> os.stat_result | None:
        """The entry itself (a symlink is not followed); None if it does not exist."""
        try:
            with self._parent(path, "looking at") as (fd, name):
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except TreeError:
            return None
        except FileNotFoundError:
            return None

    def stat(self, path: str | PurePosixPath) -> os.stat_result | None:
        """Symlinks followed inside the image; None if nothing is there."""
        try:
            fd = self.open_fd(path, os.O_PATH)
        except OSError:
            return None
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def exists(self, path: str | PurePosixPath) -> bool:
        return self.stat(path) is not None

    def lexists(self, path: str | PurePosixPath) -> bool:
        return self.lstat(path) is not None

    def is_file(self, path: str | PurePosixPath) -> bool:
        st = self.stat(path)
        return st is not None and stat.S_ISREG(st.st_mode)

    def is_dir(self, path: str | PurePosixPath) -> bool:
        st = self.stat(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def is_symlink(self, path: str | PurePosixPath) -> bool:
        st = self.lstat(path)
        return st is not None and stat.S_ISLNK(st.st_mode)

    def listdir(self, path: str | PurePosixPath = "/") -> list[str]:
        """Names in a directory (symlinks on the way followed inside); [] if there is none."""
        try:
            fd = self.open_fd(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return []
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def walk(self, top: str | PurePosixPath = "/",
             descend: Callable[[str], bool] = lambda _path: True,
             ) -> Iterator[tuple[str, os.stat_result]]:
        """Every entry below top as (image path, lstat), depth first, names sorted;
        symlinks reported, never followed; what descend refuses skipped whole."""
        rel = _relative(top).rstrip("/")
        directory = "" if rel == "." else f"/{rel}"
        for name in self.listdir(directory or "/"):
            path = f"{directory}/{name}"
            st = self.lstat(path) if descend(path) else None
            if st is None:
                continue
            yield path, st
            if stat.S_ISDIR(st.st_mode):
                yield from self.walk(path, descend)

    def is_opaque(self, path: str | PurePosixPath) -> bool:
        """Whether a directory of an overlay's upper layer hides the lower layers' entries
        (overlayfs's trusted.overlay.opaque, set when a directory is made anew)."""
        try:
            fd = self.open_fd(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            return os.getxattr(fd, "trusted.overlay.opaque") == b"y"
        except OSError:
            return False
        finally:
            os.close(fd)

    def remove_xattrs(self, path: str | PurePosixPath, prefix: str,
                      keep: frozenset[str] = frozenset()) -> list[str]:
        """Remove the extended attributes under prefix (but keep) of one entry, which is
        never followed: reached as a name in its parent's descriptor. Returns them."""
        if _relative(path) == ".":
            # The root itself: through its descriptor's /proc link, which is followed
            # to the directory this tree holds open, never to anything else.
            return self._remove_xattrs(f"/proc/self/fd/{self._fd}", prefix, keep, follow=True)
        with self._parent(path, "clearing attributes of") as (fd, name):
            return self._remove_xattrs(f"/proc/self/fd/{fd}/{name}", prefix, keep, follow=False)

    @staticmethod
    def _remove_xattrs(target: str, prefix: str, keep: frozenset[str], *,
                       follow: bool) -> list[str]:
        removed = []
        for attr in os.listxattr(target, follow_symlinks=follow):
            if attr.startswith(prefix) and attr not in keep:
                os.removexattr(target, attr, follow_symlinks=follow)
                removed.append(attr)
        return removed

    def glob(self, directory: str | PurePosixPath, pattern: str) -> list[str]:
        """Image paths of the entries of directory whose names match pattern (fnmatch)."""
        rel = _relative(directory).rstrip("/")
        base = "" if rel == "." else f"/{rel}"
        return [f"{base}/{name}" for name in self.listdir(directory)
                if fnmatch.fnmatchcase(name, pattern)]

    def readlink(self, path: str | PurePosixPath) -> str | None:
        """The target a symlink names (as text; nothing is followed), None if not a symlink."""
        try:
            with self._parent(path, "reading the link") as (fd, name):
                return os.readlink(name, dir_fd=fd)
        except TreeError:
            return None

    # -- reading --------------------------------------------------------------------

    @contextlib.contextmanager
    def open_read(self, path: str | PurePosixPath) -> Iterator[BinaryIO]:
        """A regular file of the image, opened for reading (TreeError for anything else)."""
        try:
            fd = self.open_fd(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as exc:
            raise self._error(path, exc, "reading") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise TreeError(f"reading /{_relative(path)} in the image: not a regular file")
        with os.fdopen(fd, "rb") as f:
            yield f

    def read_bytes(self, path: str | PurePosixPath) -> bytes:
        with self.open_read(path) as f:
            return f.read()

    def read_text(self, path: str | PurePosixPath) -> str:
        return self.read_bytes(path).decode("utf-8", errors="replace")

    def copy_out(self, path: str | PurePosixPath, dest: Path, mode: int = 0o644) -> int:
        """Copy a regular file of the image to a new host file dest (ours); returns bytes."""
        dest.unlink(missing_ok=True)
        with self.open_read(path) as src:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, mode)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
                os.fchmod(out.fileno(), mode)
                return out.tell()

    # -- writing --------------------------------------------------------------------

    def write(self, path: str | PurePosixPath, data: str | bytes, mode: int = 0o644) -> None:
        """Replace path with a regular file holding data (a symlink there is replaced)."""
        payload = data.encode() if isinstance(data, str) else data
        with self._parent(path, "writing") as (fd, name):
            tmp = f".deblive-{secrets.token_hex(6)}"
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, mode, dir_fd=fd)
            try:
                with os.fdopen(out, "wb") as f:
                    f.write(payload)
                    os.fchmod(f.fileno(), mode)
                os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=fd)
                raise

    def copy_in(self, source: Path, path: str | PurePosixPath, mode: int = 0o644) -> None:
        """Put a host file deblive owns (never one of the tree) into the image."""
        self.write(path, source.read_bytes(), mode)

    def copy_tree_in(self, source: Path, dest: str | PurePosixPath) -> int:
        """Copy a host directory (deblive's, or the config's overlay; never a tree's) into
        the image at dest: modes kept (but of directories the image has), symlinks
        as symlinks, anything else refused. Returns the number of files."""
        count = 0
        base = PurePosixPath("/" + _relative(dest))
        self.mkdir(base)
        for dirpath, dirnames, filenames in os.walk(source):
            rel = Path(dirpath).relative_to(source)
            inside = base / rel.as_posix() if str(rel) != "." else base
            for name in sorted(dirnames) + sorted(filenames):
                host = Path(dirpath) / name
                st = host.lstat()
                if stat.S_ISLNK(st.st_mode):
                    self.symlink(os.readlink(host), inside / name)
                elif stat.S_ISDIR(st.st_mode):
                    if not self.is_dir(inside / name):
                        self.mkdir(inside / name)
                        self.chmod(inside / name, stat.S_IMODE(st.st_mode))
                else:
                    self.write(inside / name, read_regular(host), stat.S_IMODE(st.st_mode))
                    count += 1
        return count

    def append(self, path: str | PurePosixPath, data: str) -> None:
        """Append to a regular file (created if missing); a symlink there is refused."""
        with self._parent(path, "appending to") as (fd, name):
            try:
                out = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                              | os.O_NONBLOCK | os.O_CLOEXEC, 0o644, dir_fd=fd)
            except OSError as exc:
                raise self._error(path, exc, "appending to") from None
            with os.fdopen(out, "ab") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise TreeError(f"appending to /{_relative(path)}: not a regular file")
                f.write(data.encode())

    def truncate(self, path: str | PurePosixPath) -> None:
        """Empty a regular file in place (a symlink or anything else is refused)."""
        with self._parent(path, "emptying") as (fd, name):
            try:
                out = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                              dir_fd=fd)
            except OSError as exc:
                raise self._error(path, exc, "emptying") from None
            try:
                if not stat.S_ISREG(os.fstat(out).st_mode):
                    raise TreeError(f"emptying /{_relative(path)}: not a regular file")
                os.ftruncate(out, 0)
            finally:
                os.close(out)

    def mkdir(self, path: str | PurePosixPath, mode: int = 0o755) -> None:
        """Make a directory and its parents inside the image (existing ones are fine)."""
        parts = PurePosixPath("/" + _relative(path)).parts[1:]
        for depth in range(1, len(parts) + 1):
            current = "/".join(parts[:depth])
            if self.is_dir(current):
                continue
            with self._parent(current, "making the directory") as (fd, name):
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                except FileExistsError:
                    raise TreeError(f"making the directory /{current} in the image: "
                                    "something else is there") from None

    def symlink(self, target: str, path: str | PurePosixPath) -> None:
        """Make path a symlink to target (meant as the image sees it), replacing what is there."""
        with self._parent(path, "linking") as (fd, name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
            os.symlink(target, name, dir_fd=fd)

    def chmod(self, path: str | PurePosixPath, mode: int) -> None:
        """Change the mode of a file or directory; a symlink there is refused."""
        with self._parent(path, "changing the mode of") as (fd, name):
            try:
                target = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                                 | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise self._error(path, exc, "changing the mode of") from None
            try:
                os.fchmod(target, mode)
            finally:
                os.close(target)

    def rename(self, source: str | PurePosixPath, dest: str | PurePosixPath) -> None:
        """Rename within the image (symlinks are renamed themselves, not followed)."""
        with self._parent(source, "renaming") as (src_fd, src_name), \
                self._parent(dest, "renaming to") as (dst_fd, dst_name):
            os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)

    # -- deleting -------------------------------------------------------------------

    def unlink(self, path: str | PurePosixPath) -> bool:
        """Remove a file or symlink (never what it points at); False if nothing was there."""
        with self._parent(path, "removing") as (fd, name):
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                return False
            except IsADirectoryError:
                raise TreeError(f"removing /{_relative(path)}: it is a directory") from None
        return True

    def rmtree(self, path: str | PurePosixPath) -> None:
        """Remove a file, symlink or whole directory tree, never leaving the image's mount."""
        if not self.lexists(path):
            return
        with self._parent(path, "removing") as (fd, name):
            deletion.remove_tree_at(fd, name, f"{self.root}/{_relative(path)}")

    def empty_dir(self, path: str | PurePosixPath, *, keep_dirs: bool = False) -> None:
        """Delete what a directory holds; a missing directory or a symlink is left alone."""
        st = self.lstat(path)
        if st is None or not stat.S_ISDIR(st.st_mode):
            return
        try:
            fd = self.open_fd(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            raise self._error(path, exc, "emptying") from None
        try:
            deletion.empty_dir_fd(fd, f"{self.root}/{_relative(path)}", keep_dirs=keep_dirs)
        finally:
            os.close(fd)
