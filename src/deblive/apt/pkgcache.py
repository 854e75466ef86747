"""The package cache shared between builds, without copying and without apt lock fights.

Each build gets its own archives directory, filled with hard links to the
shared cache's packages before the bootstrap and bind-mounted into the chroot;
packages the build downloads are linked back into the shared cache after it.
So a second build of a config downloads nothing, two builds can run side by
side (apt locks each build's own directory), a hook's `apt-get clean` cannot
empty the shared cache, and no package is ever copied.

Only regular files named like packages (name_version_arch.deb) are linked in
either direction: what the chroot left in its archives directory (a symlink,
a device node, a file named anything) never enters the shared cache. apt
checks every package against the signed indexes before it uses it.

Where the cache and the work tree are on different file systems, hard links
are impossible: the build then uses the shared directory itself, holding an
exclusive lock on it for the whole time apt may use it, so side-by-side builds
wait for each other instead of failing on apt's lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from deblive.core.files import exclusive_lock
from deblive.core.log import BuildLog

LOCK_NAME = ".deblive-cache.lock"
DEB_NAME = re.compile(r"[a-z0-9][a-z0-9.+-]*_[A-Za-z0-9.+~%-]+_[a-z0-9-]+\.deb")


def package_files(directory: Path) -> Iterator[Path]:
    """The regular files named like Debian packages in directory (symlinks skipped)."""
    if not directory.is_dir() or directory.is_symlink():
        return
    for entry in os.scandir(directory):
        if DEB_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            yield Path(entry.path)


class PackageCache:
    def __init__(self, shared: Path, work_archives: Path, log: BuildLog) -> None:
        self.shared = shared
        self.work_archives = work_archives
        self.log = log
        self._lock: contextlib.ExitStack | None = None
        self._linked: set[str] = set()

    @property
    def archives(self) -> Path:
        """The directory to bind into the chroot as /var/cache/apt/archives."""
        return self.work_archives if self._lock is None else self.shared

    def _same_filesystem(self) -> bool:
        return os.stat(self.shared).st_dev == os.stat(self.work_archives.parent).st_dev

    def stage_in(self) -> None:
        """Make the cached packages visible to this build."""
        self.shared.mkdir(parents=True, exist_ok=True)
        self.work_archives.mkdir(parents=True, exist_ok=True)
        if not self._same_filesystem():
            self._lock_shared()
            self._linked = {p.name for p in package_files(self.shared)}
            return
        for deb in package_files(self.shared):
            try:
                os.link(deb, self.work_archives / deb.name, follow_symlinks=False)
            except FileExistsError:
                pass
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
            self._linked.add(deb.name)
        self.log.debug(f"package cache: {len(self._linked)} packages linked in from {self.shared}")

    def _lock_shared(self) -> None:
        stack = contextlib.ExitStack()
        stack.enter_context(exclusive_lock(
            self.shared / LOCK_NAME, wait=True,
            on_wait=lambda: self.log.info(
                f"waiting for the package cache {self.shared} (another build uses it)"),
        ))
        self._lock = stack
        self.log.info(
            f"package cache {self.shared} is on another file system than the work tree: "
            "using it directly, locked for this build"
        )

    def stage_out(self) -> int:
        """Keep what this build downloaded; returns the bytes downloaded."""
        new_bytes = 0
        if self._lock is not None:
            for deb in package_files(self.shared):
                if deb.name not in self._linked:
                    new_bytes += deb.stat().st_size
            self._lock.close()
            self._lock = None
        else:
            for deb in package_files(self.work_archives):
                if deb.name in self._linked:
                    continue
                st = deb.lstat()
                if not stat.S_ISREG(st.st_mode):
                    continue
                new_bytes += st.st_size
                with contextlib.suppress(FileExistsError):
                    os.link(deb, self.shared / deb.name, follow_symlinks=False)
        self.log.debug(f"package cache: {new_bytes} bytes downloaded by this build")
        return new_bytes
