"""The mirror's package indexes a plan resolved from: their digest, and their loan.

The digest is part of a layered build's base key (a new index on the mirror
is a miss); the lists themselves, verified by the plan's apt, are copied into
a layered build's overlay instead of being fetched a second time.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
from collections.abc import Iterator
from pathlib import Path

from debian import deb822

from deblive.core.files import exclusive_lock

PLAN_LOCK = ".deblive-plan.lock"  # in the plan's apt root, beside state/lists


def is_binary_index(name: str, architecture: str) -> bool:
    """A Packages index a build of architecture reads, in any compression: a suite's
    binary-<arch>/ or binary-all/ one, or a flat archive's own (Packages at its top)."""
    directory, _, base = name.rpartition("/")
    if base.split(".")[0] != "Packages":
        return False
    return directory == "" or directory.endswith((f"binary-{architecture}", "binary-all"))


def index_digest(lists: Path, architecture: str) -> str:
    """sha256 of the Packages index entries of every InRelease in apt's lists directory.

    Only the indexes a build reads (binary-<arch>/Packages of each component)
    count: a new Date on an unchanged suite changes nothing, a new index does.
    """
    lines: list[str] = []
    for release in sorted(lists.glob("*_InRelease")):
        para = deb822.Release(release.read_text(encoding="utf-8", errors="replace"))
        for entry in para.get("SHA256", []):
            name = entry["name"]
            if is_binary_index(name, architecture):
                lines.append(f"{release.name} {name} {entry['sha256']}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def newest_release_date(lists: Path) -> int | None:
    """The newest Date: of the InRelease files in apt's lists (seconds since the epoch).

    A reproducible build's date when the environment gives none: the same
    mirror state gives the same date, on any host, at any time.
    """
    newest: int | None = None
    for release in sorted(lists.glob("*_InRelease")):
        para = deb822.Release(release.read_text(encoding="utf-8", errors="replace"))
        try:
            when = int(email.utils.parsedate_to_datetime(para.get("Date", "")).timestamp())
        except (TypeError, ValueError):
            continue
        newest = when if newest is None else max(newest, when)
    return newest


@contextlib.contextmanager
def held(lists: Path | None, architecture: str, digest: str) -> Iterator[Path | None]:
    """A plan's lists, unchanged while held (no other plan updates them), or None
    when there are none or they are no longer the ones with this digest."""
    if lists is None:
        yield None
        return
    with exclusive_lock(lists.parent.parent / PLAN_LOCK, wait=True):
        yield lists if index_digest(lists, architecture) == digest else None
