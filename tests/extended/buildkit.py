"""The one way the extended tier builds an image: `deblive build CONFIG` as a user runs
it, into BASE/out and BASE/work, its console kept in BASE/build-output.txt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build_iso(config: Path, base: Path, timeout: float = 3 * 3600) -> tuple[Path, str]:
    """Build config; returns its one ISO and the build's console output."""
    proc = subprocess.run(
        [sys.executable, "-m", "deblive", "build", str(config), "-o", str(base / "out"),
         "--workdir", str(base / "work"), "--force"],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, stdin=subprocess.DEVNULL,
    )
    output = proc.stdout + proc.stderr
    (base / "build-output.txt").write_text(output)
    assert proc.returncode == 0, output[-4000:]
    isos = list((base / "out").glob("*.iso"))
    assert len(isos) == 1, isos
    return isos[0], output
