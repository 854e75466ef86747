#!/usr/bin/env python3
"""Benchmark: initramfs-tools options on a real image tree, for choosing the defaults.

Takes a squashfs deblive built (default: the newest out/*/filesystem.squashfs),
unpacks it once, and in a private mount namespace makes its kernel's
initramfs with mkinitramfs for each compressor and MODULES setting in turn,
printing the time and the size as a Markdown table for the README.

MODULES=dep is tried to show what it would save; it keeps only the modules the
build host's hardware needs, so a live image made with it would not boot on
other machines (and in a build chroot it finds no root device at all), and
deblive never uses it.

Run as root: .venv/bin/python bench/initramfs_options.py [SQUASHFS]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from squashfs_source import squashfs_argument  # noqa: E402

from deblive.build.chroot import chroot_argv, chroot_env  # noqa: E402
from deblive.host import sandbox  # noqa: E402
from deblive.host.imagetree import ImageTree  # noqa: E402

CONF = "/etc/initramfs-tools/initramfs.conf"
# (label, MODULES, COMPRESS, COMPRESSLEVEL or None for the compressor's default there)
VARIANTS: list[tuple[str, str, str, int | None]] = [
    ("most, zstd (Debian's default)", "most", "zstd", None),
    ("most, zstd 19", "most", "zstd", 19),
    ("most, gzip", "most", "gzip", None),
    ("most, xz", "most", "xz", None),
    ("most, lz4", "most", "lz4", None),
    ("dep, zstd (host hardware only)", "dep", "zstd", None),
]


def configured(text: str, modules: str, compress: str, level: int | None) -> str:
    text = re.sub(r"(?m)^#?\s*(MODULES|COMPRESS|COMPRESSLEVEL)=.*\n", "", text)
    extra = f"COMPRESSLEVEL={level}\n" if level is not None else ""
    return f"{text}MODULES={modules}\nCOMPRESS={compress}\n{extra}"


def main() -> int:
    source = squashfs_argument(__doc__.splitlines()[0], "chroot and mounts")
    sandbox.enter_private_mount_namespace()
    with tempfile.TemporaryDirectory(prefix="deblive-initramfs-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "tree"
        subprocess.run(["unsquashfs", "-q", "-n", "-d", str(root), str(source)], check=True)
        with ImageTree(root) as tree, sandbox.chroot_mounts(tree):
            versions = sorted(p.rsplit("/", 1)[1] for p in tree.glob("/lib/modules", "*"))
            if not versions:
                sys.exit(f"bench: {source} holds no kernel")
            version = versions[-1]
            original = tree.read_text(CONF)
            print(f"tree: {source} unpacked, kernel {version}, {os.cpu_count()} CPUs\n")
            print("| initramfs | seconds | MiB |")
            print("|---|---:|---:|")
            for label, modules, compress, level in VARIANTS:
                if not tree.exists(f"/usr/bin/{compress}"):
                    print(f"| {label} | not in the image | |", flush=True)
                    continue
                tree.write(CONF, configured(original, modules, compress, level))
                tree.unlink("/tmp/bench-initrd")
                start = time.monotonic()
                made = subprocess.run(
                    chroot_argv(root, ["mkinitramfs", "-o", "/tmp/bench-initrd", version]),
                    env=chroot_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    text=True)
                seconds = time.monotonic() - start
                if made.returncode != 0:
                    why = made.stderr.strip().splitlines()[0] if made.stderr.strip() else "?"
                    print(f"| {label} | fails: {why} | |", flush=True)
                    continue
                size = tree.lstat("/tmp/bench-initrd")
                assert size is not None
                print(f"| {label} | {seconds:.1f} | {size.st_size / 2**20:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
