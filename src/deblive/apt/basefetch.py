"""The base's packages, downloaded into the shared package cache while the plan
resolves the rest.

A cold build's plan resolves the base first (apt, about 1 s here), then what
goes on it (as long again, with the index entries of both); only then does
mmdebstrap start and download the base (about 40 MiB, 3 s here). The base is
known exactly after the first resolution (name, version, size and SHA256 of
every package), so the host's apt fetches it (two downloads side by side)
while the second runs, with the plan's private configuration and lists (held:
the plan keeps its lock until the fetch ends).

Only a file whose size and SHA256 are those of the signed index entry enters
the shared cache; anything else is left out and mmdebstrap fetches it itself
(and apt checks every cached package again). A fetch that fails costs only
time: it is logged and never fails the plan. Nothing is fetched for the
`deblive plan` command, or when the plan's resolution came from its results
cache (nothing to overlap with then).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from debian import deb822

from deblive.core.errors import DebliveError
from deblive.core.files import sha256_file
from deblive.core.runner import Runner
from deblive.host import deletion

# Two downloads side by side, each with a half of the base by size: about 1.0 s for
# the 37.5 MiB of a minbase here, against 1.55 s for one (three or four: no faster).
DOWNLOADS = (0, 1)


def deb_name(name: str, version: str, architecture: str) -> str:
    """The file name apt gives a downloaded package (an epoch's colon escaped)."""
    return f"{name}_{version.replace(':', '%3a')}_{architecture}.deb"


def _entry_name(entry: deb822.Packages) -> str:
    return deb_name(entry["Package"], entry["Version"], entry["Architecture"])


@dataclass(frozen=True)
class Fetched:
    """What the base fetch put into the shared cache."""

    files: int
    bytes: int
    seconds: float
    problem: str | None  # why some or all were not fetched (mmdebstrap fetches them)

    def summary(self) -> str:
        text = (f"{self.files} base packages ({self.bytes / 2**20:.1f} MiB) fetched into "
                f"the package cache in {self.seconds:.1f} s beside the resolution")
        return text if self.problem is None else f"{text}; {self.problem}"


class BaseFetch:
    """One background download of the base's packages into the shared cache."""

    def __init__(self, entries: Sequence[deb822.Packages], shared: Path,
                 env: Mapping[str, str], runner: Runner) -> None:
        self.entries = [e for e in entries if not (shared / _entry_name(e)).exists()]
        # Each download's share of the entries, the largest first in turn.
        ordered = sorted(self.entries, key=lambda e: -int(e.get("Size", 0)))
        self.shares = [ordered[part::len(DOWNLOADS)] for part in DOWNLOADS]
        self.shared = shared
        self.env = dict(env)
        self.runner = runner
        self.scratch = shared.parent / f".base-fetch-{os.getpid()}"
        self._result: Fetched | None = None
        self._thread = threading.Thread(target=self._run, name="base fetch", daemon=True)

    def start(self) -> BaseFetch:
        if self.entries:
            self._thread.start()
        return self

    def wait(self) -> Fetched | None:
        """The fetch's outcome once it ended; None if there was nothing to fetch."""
        if self._thread.ident is not None:
            self._thread.join()
        return self._result

    def _run(self) -> None:
        started = time.monotonic()
        files = size = 0
        problem = None
        try:
            self.shared.mkdir(parents=True, exist_ok=True)
            deletion.remove_tree(self.scratch)
            self.scratch.mkdir(mode=0o755)
            with ThreadPoolExecutor(len(DOWNLOADS)) as pool:
                statuses = list(pool.map(self._download, DOWNLOADS))
            failed = [status for status in statuses if status != 0]
            if failed:
                problem = f"apt-get download exited with status {failed[0]}"
            files, size, refused = self._keep()
            if refused:
                problem = f"{problem or 'left out'}: {', '.join(refused)}"
        except (OSError, DebliveError) as exc:
            problem = str(exc)
        finally:
            try:
                deletion.remove_tree(self.scratch)
            except (OSError, DebliveError) as exc:
                problem = problem or str(exc)
            self._result = Fetched(files, size, time.monotonic() - started, problem)

    def _download(self, part: int) -> int:
        """apt-get download of one share of the entries into scratch/part."""
        share = self.shares[part]
        if not share:
            return 0
        where = self.scratch / str(part)
        where.mkdir(mode=0o755)
        argv = ["apt-get", "-q", "download", *(f"{e['Package']}={e['Version']}" for e in share)]
        return self.runner.run(argv, cwd=where, env=self.env, inherit_env=False, check=False,
                               quiet=True, what=f"fetching the base ({part + 1}/"
                               f"{len(DOWNLOADS)})").returncode

    def _keep(self) -> tuple[int, int, list[str]]:
        """Link the files that match their index entries into the shared cache."""
        files = size = 0
        refused = []
        for part, entry in ((p, e) for p in DOWNLOADS for e in self.shares[p]):
            name = _entry_name(entry)
            path = self.scratch / str(part) / name
            if not path.is_file() or path.is_symlink():
                refused.append(f"{name} (not downloaded)")
                continue
            if (path.stat().st_size != int(entry.get("Size", -1))
                    or sha256_file(path) != entry.get("SHA256")):
                refused.append(f"{name} (not as the index says)")
                continue
            try:
                os.link(path, self.shared / name, follow_symlinks=False)
            except FileExistsError:
                continue  # another build put it there meanwhile
            files += 1
            size += path.stat().st_size
        return files, size, refused
