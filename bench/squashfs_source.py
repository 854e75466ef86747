"""The squashfs a bench of one image tree works on: given, or the newest under out/."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def squashfs_argument(description: str, why_root: str) -> Path:
    """Parse [SQUASHFS] (default: the newest out/*/filesystem.squashfs); exit unless root."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("squashfs", nargs="?", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit(f"bench: run as root ({why_root})")
    source: Path | None = args.squashfs or max(
        (REPO / "out").glob("*/filesystem.squashfs"), key=lambda p: p.stat().st_mtime,
        default=None)
    if source is None:
        sys.exit("bench: no squashfs given and none under out/ (run make image first)")
    return source
