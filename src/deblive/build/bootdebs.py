"""The boot loader packages for the medium, taken from the package cache when it has them.

They are fetched with `apt-get download` in the chroot, which downloads every
time and first makes apt's binary cache of the freshly copied lists: about
0.9 s of a rebuild that changes nothing (6 s here). So the files it fetched
(verified by apt against the signed indexes) also go into the build's
archives, for the shared package cache, and their names, sizes and SHA256s
are recorded in the cache directory under a key of the plan's indexes, the
config and the package names. A later build with the same key takes each
file from its archives, a copy checked against the record, and runs no apt;
one missing or different file, and apt downloads them all as before.

The archives directory is the chroot's /var/cache/apt/archives (a hook sees it
later), so nothing there is trusted: only a regular file (no link followed,
no FIFO opened for good) whose copy has the recorded size and SHA256 is used,
and copies go both ways, never hard links.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from deblive.apt.pkgcache import DEB_NAME
from deblive.core.files import copy_regular, sha256_file, write_atomic
from deblive.host import deletion
from deblive.model.config import ImageConfig

RECORDS = "boot-packages"  # below the cache directory
KEEP_RECORDS = 50  # the newest; each is a few hundred bytes


@dataclass(frozen=True)
class BootDeb:
    """One package file as apt fetched it: its name in the archives, size and SHA256."""

    file: str
    size: int
    sha256: str


def record_key(indexes: str, config: ImageConfig, names: Sequence[str]) -> str:
    """What decides the files apt would fetch: the indexes, the config (its sources,
    pins, architecture), the names asked for."""
    blob = json.dumps({"indexes": indexes, "config": config.public_dump(),
                       "names": list(names)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def recorded(cache: Path, key: str) -> list[BootDeb] | None:
    """The files recorded for key, or None (no record, or one not of this form)."""
    try:
        data = json.loads((cache / RECORDS / f"{key}.json").read_text(encoding="utf-8"))
        debs = [BootDeb(str(d["file"]), int(d["size"]), str(d["sha256"])) for d in data]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return debs if debs and all(DEB_NAME.fullmatch(d.file) for d in debs) else None


def record(cache: Path, key: str, debs: Sequence[Path]) -> None:
    """Record the files apt fetched (and verified) for key; keep the newest records only."""
    records = cache / RECORDS
    records.mkdir(parents=True, exist_ok=True)
    entries = [asdict(BootDeb(d.name, d.stat().st_size, sha256_file(d))) for d in debs]
    write_atomic(records / f"{key}.json", json.dumps(entries, indent=1) + "\n")
    old = sorted(records.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in old[KEEP_RECORDS:]:
        with contextlib.suppress(OSError):
            path.unlink()


def from_archives(wanted: Sequence[BootDeb], archives: Path, dest: Path) -> list[Path] | None:
    """The recorded files copied from archives into dest (fresh), each checked against
    its record; None if one is missing or different (and dest is removed)."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for entry in wanted:
        target = dest / entry.file
        if not (copy_regular(archives / entry.file, target)
                and target.stat().st_size == entry.size and sha256_file(target) == entry.sha256):
            deletion.remove_tree(dest)
            return None
        out.append(target)
    return sorted(out)


def into_archives(debs: Sequence[Path], archives: Path) -> None:
    """Copies of the downloaded boot loader packages into the build's archives, for the
    shared cache (copies: the hook could write into a file the medium shares)."""
    for deb in debs:
        target = archives / deb.name
        if DEB_NAME.fullmatch(deb.name) and not os.path.lexists(target):
            with contextlib.suppress(OSError):
                copy_regular(deb, target)
