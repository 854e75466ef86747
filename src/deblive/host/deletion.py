"""Deleting trees without following a symlink or crossing into a mount.

`rm -rf --one-file-system` is not enough: it descends into bind mounts of the
same file system (tried in an `unshare -m` namespace: it emptied the bind
source). So deletion here walks with directory file descriptors, opens every
directory with O_NOFOLLOW, and before descending checks that the directory
is on the same device and the same mount (its mount id, from
/proc/self/fdinfo) as the top of the tree. A symlink is removed, never
followed; a mount point stops the deletion with an error naming it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from deblive.core.errors import DebliveError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class DeletionError(DebliveError):
    """A tree could not be deleted safely (a mount below it, a symlink at its top)."""


def mount_id(fd: int) -> int:
    """The id of the mount an open file lives on (same id: same mount, bind or not)."""
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as info:
        for line in info:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    raise DeletionError(f"no mount id for file descriptor {fd}")


def _same_mount(fd: int, dev: int, mnt: int, where: str) -> None:
    if os.fstat(fd).st_dev != dev or mount_id(fd) != mnt:
        raise DeletionError(f"refusing to delete across a mount point: {where}")


def empty_dir_fd(top: int, where: str, *, keep_dirs: bool = False) -> None:
    """Delete everything below the open directory top (itself stays).

    keep_dirs keeps the directories and deletes only what is not one (for
    /var/log: packages expect their log directories to exist).
    """
    dev, mnt = os.fstat(top).st_dev, mount_id(top)
    # (directory fd, its path for messages, entries left to handle)
    stack: list[tuple[int, str, list[str]]] = [(top, where, os.listdir(top))]
    try:
        while stack:
            fd, path, names = stack[-1]
            if not names:
                stack.pop()
                if fd != top:
                    os.close(fd)
                    if not keep_dirs:
                        parent = stack[-1][0]
                        os.rmdir(os.path.basename(path), dir_fd=parent)
                continue
            name = names.pop()
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=fd)
                continue
            child = os.open(name, DIR_FLAGS, dir_fd=fd)
            child_path = f"{path.rstrip('/')}/{name}"
            try:
                _same_mount(child, dev, mnt, child_path)
                entries = os.listdir(child)
            except BaseException:
                os.close(child)
                raise
            stack.append((child, child_path, entries))
    except OSError as exc:
        raise DeletionError(f"cannot delete below {where}: {exc}") from None
    finally:
        for fd, _path, _names in stack:
            if fd != top:
                with contextlib.suppress(OSError):
                    os.close(fd)


def remove_tree_at(parent: int, name: str, where: str) -> None:
    """Delete the entry name of the open directory parent: a tree, a file or a symlink."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent)
        return
    fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    try:
        empty_dir_fd(fd, where)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def remove_tree(path: Path) -> None:
    """Delete a host directory tree (a work tree); its top must not be a symlink."""
    path = Path(os.path.abspath(path))
    if len(path.parts) < 3:
        raise DeletionError(f"refusing to delete {path}: too close to /")
    try:
        parent = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        st = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise DeletionError(f"refusing to delete {path}: it is a symlink")
        remove_tree_at(parent, path.name, str(path))
    except FileNotFoundError:
        return
    finally:
        os.close(parent)
