#!/usr/bin/env python3
"""Benchmark: mksquashfs options on a real image tree, for choosing the defaults.

Takes a squashfs deblive built (default: the newest out/*/filesystem.squashfs),
unpacks it once, then squashes the tree with each compressor, level, block
size and thread count in turn, and prints the time, the size and the ratio
against the tree, as a Markdown table for the README.

Run as root: .venv/bin/python bench/squash_options.py [SQUASHFS]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from squashfs_source import squashfs_argument

# (label, mksquashfs options): the compressors deblive accepts, at the levels
# people use, and what block size and threads change.
OPTIONS: list[tuple[str, list[str]]] = [
    ("xz, 1M", ["-comp", "xz", "-b", "1M"]),
    ("xz, 1M, x86 BCJ", ["-comp", "xz", "-b", "1M", "-Xbcj", "x86"]),
    ("zstd 15, 1M (zstd default)", ["-comp", "zstd", "-b", "1M"]),
    ("zstd 3, 1M", ["-comp", "zstd", "-b", "1M", "-Xcompression-level", "3"]),
    ("zstd 19, 1M", ["-comp", "zstd", "-b", "1M", "-Xcompression-level", "19"]),
    ("zstd 3, 128K", ["-comp", "zstd", "-b", "128K", "-Xcompression-level", "3"]),
    ("gzip 9, 1M", ["-comp", "gzip", "-b", "1M"]),
    ("lz4, 1M", ["-comp", "lz4", "-b", "1M"]),
    ("zstd 3, 1M, 1 thread", ["-comp", "zstd", "-b", "1M", "-Xcompression-level", "3",
                              "-processors", "1"]),
]


def tree_bytes(root: Path) -> int:
    total, seen = 0, set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def main() -> int:
    source = squashfs_argument(__doc__.splitlines()[0], "the tree keeps its owners")
    with tempfile.TemporaryDirectory(prefix="deblive-squash-", dir="/var/tmp") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["unsquashfs", "-q", "-n", "-d", str(tree), str(source)], check=True)
        size = tree_bytes(tree)
        print(f"tree: {source} unpacked, {size / 2**20:.0f} MiB, {os.cpu_count()} CPUs\n")
        print("| options | seconds | MiB | ratio |")
        print("|---|---:|---:|---:|")
        for label, options in OPTIONS:
            out = Path(tmp) / "out.squashfs"
            start = time.monotonic()
            subprocess.run(["mksquashfs", str(tree), str(out), "-noappend", "-no-progress",
                            "-quiet", *options], check=True, stdout=subprocess.DEVNULL)
            seconds = time.monotonic() - start
            made = out.stat().st_size
            print(f"| {label} | {seconds:.1f} | {made / 2**20:.0f} | {made / size:.3f} |",
                  flush=True)
            out.unlink()
        shutil.rmtree(tree, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
