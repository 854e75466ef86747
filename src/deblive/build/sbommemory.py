"""What copyright files said, kept between builds: parsed once per file content.

Reading the licences from the DEP-5 copyright files is most of the SBOM's
time: 0.34 s for the 169 packages of the bench image here, seconds for a
desktop's two thousand, and again in every rebuild, though a package's
copyright file changes only with the package. So each file's result (its
SPDX expression and the LicenseRefs that expression names) is kept in the
build cache under the sha256 of the file's bytes, in a file named after the
code that made it: any change to the licence mapping starts a new memory.

The file is deblive's own, in its cache directory; what it holds is still only
data. An entry that is not the shape deblive writes is not used: the
copyright file is parsed again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from deblive.build import sbomlicences
from deblive.core.files import write_atomic

# Beyond this many entries the memory keeps only the last build's.
MAX_ENTRIES = 20_000


def memory_file(cache: Path) -> Path:
    """cache/sbom/licences-<digest of the licence mapping's code>.json."""
    code = hashlib.sha256(Path(sbomlicences.__file__).read_bytes()).hexdigest()[:16]
    return cache / "sbom" / f"licences-{code}.json"


def _is_entry(entry: Any) -> bool:
    if not isinstance(entry, dict) or set(entry) != {"expression", "refs"}:
        return False
    expression, refs = entry["expression"], entry["refs"]
    if expression is not None and not isinstance(expression, str):
        return False
    return isinstance(refs, dict) and all(
        isinstance(ref, str) and isinstance(info, dict)
        and set(info) == {"licenseId", "name", "extractedText"}
        and info["licenseId"] == ref and all(isinstance(v, str) for v in info.values())
        for ref, info in refs.items())


def load(path: Path) -> dict[str, dict[str, Any]]:
    """The kept entries by file digest; nothing if there is no memory or it is unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {digest: entry for digest, entry in data.items()
            if isinstance(digest, str) and len(digest) == 64 and _is_entry(entry)}


def save(path: Path, known: dict[str, dict[str, Any]], used: dict[str, dict[str, Any]]) -> None:
    """Keep this build's entries with the earlier ones (written whole, then renamed: a
    build beside this one reads the old memory or the new, never half of one)."""
    merged = {**known, **used}
    if len(merged) > MAX_ENTRIES:
        merged = dict(used)
    if merged == known:
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, json.dumps(merged, sort_keys=True) + "\n")
