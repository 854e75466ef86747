"""Release names: codenames and the oldstable/stable/testing/unstable aliases.

Aliases move: what "stable" means depends on the day. They are resolved from
a ReleaseTable made from distro-info-data's debian.csv (the file distro-info
itself reads; host.distroinfo loads it), never from dates written into deblive.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass

# The oldest release deblive builds (older ones lack the merged-/usr and
# signed shim layout the ISO relies on).
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


@dataclass(frozen=True)
class ReleaseTable:
    """Debian's releases, oldest first (experimental left out)."""

    releases: tuple[Release, ...]

    @classmethod
    def from_csv(cls, text: str) -> ReleaseTable:
        """Parse distro-info-data's debian.csv."""
        rows = list(csv.DictReader(io.StringIO(text)))
        releases = []
        for row in rows:
            if row["series"] == "experimental":
                continue
            created = _date(row["created"])
            if created is None:
                raise SuiteError(f"release {row['series']} has no creation date")
            releases.append(Release(
                row["version"], row["series"], created, _date(row.get("release")),
                _date(row.get("eol")),
            ))
        return cls(tuple(releases))

    @property
    def codenames(self) -> list[str]:
        return [r.codename for r in self.releases]

    def aliases(self, today: dt.date) -> dict[str, str]:
        """What each alias means on a day."""
        released = [r for r in self.releases if r.release is not None and r.release <= today]
        numbered = [r for r in self.releases if r.codename != "sid" and r.created <= today]
        alias = {"unstable": "sid"}
        if released:
            alias["stable"] = released[-1].codename
            if len(released) > 1:
                alias["oldstable"] = released[-2].codename
        unreleased = [r for r in numbered if r.release is None or r.release > today]
        if unreleased:
            alias["testing"] = unreleased[0].codename
        return alias

    def resolve(self, name: str, today: dt.date | None = None) -> str:
        """The codename a suite name stands for, or SuiteError."""
        day = today or dt.date.today()
        alias = self.aliases(day)
        if name in alias:
            return alias[name]
        codenames = self.codenames
        if name not in codenames:
            raise SuiteError(f"unknown suite {name!r}")
        if OLDEST_SUPPORTED in codenames and (
            codenames.index(name) < codenames.index(OLDEST_SUPPORTED)
        ):
            raise SuiteError(
                f"suite {name!r} is older than {OLDEST_SUPPORTED}, the oldest supported")
        return name

    def supported_names(self, today: dt.date | None = None) -> list[str]:
        """Codenames (oldest supported first) and aliases, for error messages."""
        day = today or dt.date.today()
        codenames = [r.codename for r in self.releases if r.created <= day]
        if OLDEST_SUPPORTED in codenames:
            codenames = codenames[codenames.index(OLDEST_SUPPORTED):]
        return [*codenames, *ALIASES]

    def version_of(self, codename: str) -> str:
        """The release's version number ("12"), "" for sid and unknown names."""
        return next((r.version for r in self.releases if r.codename == codename), "")

    def is_older(self, codename: str, than: str) -> bool:
        names = self.codenames
        return codename in names and than in names and names.index(codename) < names.index(than)


def has_security_suite(codename: str) -> bool:
    """sid has no security or updates suites."""
    return codename != "sid"


def security_suite(codename: str) -> str:
    """bullseye and later use <codename>-security."""
    return f"{codename}-security"
