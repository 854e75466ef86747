"""A plan's resolution kept beside its lists, for the next plan of the same inputs.

Resolving costs two apt simulations and two `apt-cache show` runs (about
1.5 s here), on every build: most of what a rebuild with nothing changed
spends before its first stage. Their result depends only on the indexes
resolved from (their digest), the architecture, the names asked for, and the
code that asks, so it is kept under a key of exactly those, and any change
to one of them resolves anew. A result that cannot be read is resolved anew.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from deblive import __version__
from deblive.apt.packageset import Package, PackageSet
from deblive.core.files import write_atomic

RESULTS = "results"
# The plan's own code (its resolver, and the reader of apt's output): a changed
# resolver never reads an older one's results.
_CODE = hashlib.sha256(b"".join(Path(__file__).with_name(name).read_bytes()
                                for name in ("plan.py", "simoutput.py"))).hexdigest()


def result_key(indexes: str, architecture: str, base_request: Sequence[str],
               requested: Sequence[str], netboot_installer: bool) -> str:
    parts = {"deblive": __version__, "code": _CODE, "indexes": indexes,
             "architecture": architecture, "base_request": list(base_request),
             "requested": list(requested), "netboot_installer": netboot_installer}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


Resolution = tuple[PackageSet, PackageSet, "str | None"]  # base, added, installer package


def load(root: Path, key: str) -> Resolution | None:
    """The kept resolution of key; None if there is none or it is of another shape."""
    try:
        data: dict[str, Any] = json.loads(
            (root / RESULTS / f"{key}.json").read_text(encoding="utf-8"))
        return (PackageSet([Package(**p) for p in data["base"]]),
                PackageSet([Package(**p) for p in data["added"]]), data["installer_package"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(root: Path, key: str, base: PackageSet, added: PackageSet,
         installer_package: str | None) -> None:
    (root / RESULTS).mkdir(exist_ok=True)
    data = {"base": [asdict(p) for p in base.packages],
            "added": [asdict(p) for p in added.packages], "installer_package": installer_package}
    write_atomic(root / RESULTS / f"{key}.json", json.dumps(data, sort_keys=True))
