"""Debian's release table from distro-info-data, read once per file."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from deblive.model.suites import ReleaseTable, SuiteError

DEBIAN_CSV = Path(os.environ.get("DEBLIVE_DISTRO_INFO", "/usr/share/distro-info/debian.csv"))


@functools.cache
def _load(path: Path) -> ReleaseTable:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(
            f"cannot read distro-info data {path} ({exc.strerror}); "
            "install the distro-info-data package"
        ) from None
    return ReleaseTable.from_csv(text)


def load(path: Path | None = None) -> ReleaseTable:
    """The release table of path (default: distro-info-data's debian.csv)."""
    return _load(path or DEBIAN_CSV)
