"""The package cache shared between builds, without copying and without apt lock fights.

Each build gets its own archives directory, filled with hard links to the
shared cache's packages before the bootstrap and bind-mounted into the chroot;
packages the build downloads are linked back into the shared cache after it.
So a second build of a config downloads nothing, two builds can run side by
side (apt locks each build's own directory), a hook's `apt-get clean` cannot
empty the shared cache, and no package is ever copied.

Where the cache and the work tree are on different file systems, hard links
are impossible: the build then uses the shared directory itself, holding an
exclusive lock on it for the whole time apt may use it, so side-by-side builds
wait for each other instead of failing on apt's lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from deblive.core.log import BuildLog

LOCK_NAME = ".deblive-cache.lock"


class PackageCache:
    def __init__(self, shared: Path, work_archives: Path, log: BuildLog) -> None:
        self.shared = shared
        self.work_archives = work_archives
        self.log = log
        self._lock_fd: int | None = None
        self._linked: set[str] = set()
        self.downloaded_bytes = 0

    @property
    def archives(self) -> Path:
        """The directory to bind into the chroot as /var/cache/apt/archives."""
        return self.work_archives if self._lock_fd is None else self.shared

    def _same_filesystem(self) -> bool:
        return os.stat(self.shared).st_dev == os.stat(self.work_archives.parent).st_dev

    def stage_in(self) -> None:
        """Make the cached packages visible to this build."""
        self.shared.mkdir(parents=True, exist_ok=True)
        self.work_archives.mkdir(parents=True, exist_ok=True)
        if not self._same_filesystem():
            self._lock_shared()
            self._linked = {p.name for p in self.shared.glob("*.deb")}
            return
        for deb in self.shared.glob("*.deb"):
            target = self.work_archives / deb.name
            try:
                os.link(deb, target)
            except FileExistsError:
                pass
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
            self._linked.add(deb.name)
        self.log.debug(f"package cache: {len(self._linked)} packages linked in from {self.shared}")

    def _lock_shared(self) -> None:
        fd = os.open(self.shared / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.log.info(f"waiting for the package cache {self.shared} (another build uses it)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd
        self.log.info(
            f"package cache {self.shared} is on another file system than the work tree: "
            "using it directly, locked for this build"
        )

    def stage_out(self) -> int:
        """Keep what this build downloaded; returns the bytes downloaded."""
        new_bytes = 0
        if self._lock_fd is not None:
            for deb in self.shared.glob("*.deb"):
                if deb.name not in self._linked:
                    new_bytes += deb.stat().st_size
            os.close(self._lock_fd)
            self._lock_fd = None
        elif self.work_archives.is_dir():
            for deb in self.work_archives.glob("*.deb"):
                if deb.name in self._linked:
                    continue
                new_bytes += deb.stat().st_size
                with contextlib.suppress(FileExistsError):
                    os.link(deb, self.shared / deb.name)
        self.downloaded_bytes = new_bytes
        self.log.debug(f"package cache: {new_bytes} bytes downloaded by this build")
        return new_bytes
