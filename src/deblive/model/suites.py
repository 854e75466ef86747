"""Release names: codenames and the stable/testing/unstable aliases.

Aliases move: what "stable" means depends on the day. They are resolved from
distro-info-data's debian.csv (the file distro-info itself reads), never from
dates written into deblive.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

DEBIAN_CSV = Path(os.environ.get("DEBLIVE_DISTRO_INFO", "/usr/share/distro-info/debian.csv"))

# The oldest release deblive builds: the issue names bullseye as the floor
# (older ones lack the merged-/usr and signed shim layout the ISO relies on).
OLDEST_SUPPORTED = "bullseye"
ALIASES = ("oldstable", "stable", "testing", "unstable")


class SuiteError(ValueError):
    """The suite name is not one deblive can build."""


@dataclass(frozen=True)
class Release:
    version: str
    codename: str
    created: dt.date
    release: dt.date | None
    eol: dt.date | None


def _date(text: str | None) -> dt.date | None:
    return dt.date.fromisoformat(text) if text else None


def load_releases(path: Path | None = None) -> list[Release]:
    """Releases in the order of the CSV (oldest first), experimental left out."""
    csv_path = path or DEBIAN_CSV
    try:
        with csv_path.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise SuiteError(
            f"cannot read distro-info data {csv_path} ({exc.strerror}); "
            "install the distro-info-data package"
        ) from None
    releases = []
    for row in rows:
        if row["series"] == "experimental":
            continue
        created = _date(row["created"])
        assert created is not None
        releases.append(
            Release(
                row["version"], row["series"], created, _date(row.get("release")),
                _date(row.get("eol")),
            )
        )
    return releases


def resolve(name: str, today: dt.date | None = None, path: Path | None = None) -> str:
    """Return the codename a suite name stands for, or raise SuiteError."""
    day = today or dt.date.today()
    releases = load_releases(path)
    codenames = [r.codename for r in releases]
    released = [r for r in releases if r.release is not None and r.release <= day]
    numbered = [r for r in releases if r.codename != "sid" and r.created <= day]
    alias = {"unstable": "sid"}
    if released:
        alias["stable"] = released[-1].codename
        if len(released) > 1:
            alias["oldstable"] = released[-2].codename
    unreleased = [r for r in numbered if r.release is None or r.release > day]
    if unreleased:
        alias["testing"] = unreleased[0].codename
    if name in alias:
        return alias[name]
    if name not in codenames:
        raise SuiteError(f"unknown suite {name!r}")
    if codenames.index(name) < codenames.index(OLDEST_SUPPORTED):
        raise SuiteError(f"suite {name!r} is older than {OLDEST_SUPPORTED}, the oldest supported")
    return name


def supported_names(today: dt.date | None = None, path: Path | None = None) -> list[str]:
    """Codenames (oldest supported first) and aliases, for error messages."""
    day = today or dt.date.today()
    try:
        releases = load_releases(path)
    except SuiteError:
        return list(ALIASES)
    codenames = [r.codename for r in releases if r.created <= day]
    if OLDEST_SUPPORTED in codenames:
        codenames = codenames[codenames.index(OLDEST_SUPPORTED):]
    return [*codenames, *ALIASES]


def has_security_suite(codename: str) -> bool:
    """sid has no security or updates suites."""
    return codename != "sid"


def security_suite(codename: str) -> str:
    """bullseye and later use <codename>-security."""
    return f"{codename}-security"
