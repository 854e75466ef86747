"""The packages stage's packages, downloaded while the bootstrap runs.

A cold build spends its first half minute in mmdebstrap, which unpacks and
configures the base with the CPU while the network idles; then the packages
stage downloads everything that goes on top before apt can start. The plan
already knows exactly what that is (name and version of every package on the
base, resolved from the lists the chroot gets), so the host's apt fetches it
meanwhile with the plan's private configuration into a directory of the work
tree, and the packages stage moves the files into the build's archives
directory just before it runs apt.

Nothing is trusted for having been prefetched: apt in the chroot checks each
file against the signed indexes, as it does every cached package, and fetches
itself whatever is missing or wrong. So a prefetch that fails (a mirror
hiccup, lists another plan replaced meanwhile) costs only time: it is logged
and never fails the build.
"""

from __future__ import annotations

import collections
import errno
import shutil
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from deblive.apt import basefetch, indexes
from deblive.apt.packageset import Package
from deblive.apt.pkgcache import package_files
from deblive.apt.plan import Plan, apt_env
from deblive.core.errors import DebliveError
from deblive.core.log import BuildLog
from deblive.core.runner import Process, Runner


def deb_name(package: Package) -> str:
    """The file name apt gives a downloaded package (an epoch's colon escaped)."""
    return basefetch.deb_name(package.name, package.version, package.architecture)


def missing(plan: Plan, have: Path, skip: Collection[str] = ()) -> list[Package]:
    """The packages on the base that have no file in have (the build's archives yet),
    without the names in skip (local packages: apt reads them where they are)."""
    present = {p.name for p in package_files(have)}
    return [p for p in plan.added.packages
            if p.name not in skip and deb_name(p) not in present]


def download_argv(packages: Collection[Package]) -> list[str]:
    """apt-get download of exactly these versions (the plan's architecture is apt's only one)."""
    return ["apt-get", "-q", "download", *(f"{p.name}={p.version}" for p in packages)]


@dataclass(frozen=True)
class Handed:
    """What the packages stage got from the prefetch."""

    files: int
    bytes: int
    seconds: float  # the download's own time, beside the bootstrap
    problem: str | None  # why some or all were not fetched (apt fetches them itself)


class Prefetch:
    """One background download of a plan's packages on top of the base."""

    def __init__(self, plan: Plan, packages: list[Package], dest: Path, runner: Runner,
                 log: BuildLog) -> None:
        assert plan.lists is not None
        self.plan = plan
        self.packages = packages
        self.dest = dest
        self.runner = runner
        self.log = log
        self.conf = plan.lists.parent.parent / "apt.conf"
        self.problem: str | None = None
        self.seconds = 0.0
        self._lock = threading.Lock()
        self._process: Process | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._download, name="prefetch", daemon=True)

    def start(self) -> None:
        self.dest.mkdir(mode=0o755)
        self._thread.start()

    def _download(self) -> None:
        started = time.monotonic()
        plan = self.plan
        try:
            with indexes.held(plan.lists, plan.architecture, plan.indexes) as lists:
                if lists is None:
                    self.problem = "the plan's lists were replaced meanwhile"
                    return
                self._fetch()
        except (OSError, ValueError, DebliveError) as exc:  # ValueError: stop() closed the pipe
            self.problem = self.problem or str(exc)
        finally:
            self.seconds = time.monotonic() - started

    def _fetch(self) -> None:
        with self._lock:
            if self._stopped:
                self.problem = "stopped"
                return
            self._process = self.runner.spawn(
                download_argv(self.packages), cwd=self.dest, env=apt_env(self.conf),
                what="prefetching the packages", stderr="merge")
        process = self._process
        tail: collections.deque[str] = collections.deque(maxlen=3)
        assert process.stdout is not None
        for raw in process.stdout:
            tail.append(raw.decode("utf-8", "replace").rstrip())
        status = process.wait()
        process.stop()
        if status != 0:
            self.problem = f"apt-get download exited with status {status}: " + " / ".join(tail)

    def stop(self) -> None:
        """End the download if it still runs (a failed build's teardown), and wait for it."""
        with self._lock:
            self._stopped = True
            if self._process is not None:
                self._process.stop()
        if self._thread.is_alive():
            self._thread.join()

    def hand_over(self, archives: Path) -> Handed:
        """Wait for the download, then move its files into archives and remove dest."""
        if self._thread.is_alive():
            self.log.info("waiting for the prefetch to end")
            self._thread.join()
        count = size = 0
        for deb in package_files(self.dest):
            target = archives / deb.name
            if not target.exists():
                size += deb.stat().st_size
                count += 1
                _move(deb, target)
        shutil.rmtree(self.dest)
        return Handed(count, size, self.seconds, self.problem)


def _move(source: Path, target: Path) -> None:
    """A rename; a copy where the archives are the shared cache on another file system."""
    try:
        source.rename(target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(source, partial)
        partial.rename(target)
