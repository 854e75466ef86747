"""The layered-build tests' image: one config, two hooks, and what the second must show.

Shared by the CI tier (tests/integration/test_layers.py: five builds, two boots)
and the extended tier (tests/extended/test_layers_extended.py: six modes and a
flat build), so both prove the same layer behaviour.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from deblive.build import basecache, pipeline

HOOK_A = """\
#!/bin/sh
set -eu
rm "$1/etc/issue.net"
echo a > "$1/etc/deblive-layer-a"
"""
HOOK_B = """\
#!/bin/sh
set -eu
rm "$1/etc/host.conf"
echo b > "$1/etc/deblive-layer-b"
echo "deblive layered motd" > "$1/etc/motd"
rm -r "$1/usr/share/doc/base-files"
mkdir "$1/usr/share/doc/base-files"
echo replaced > "$1/usr/share/doc/base-files/replaced"
mkdir -p "$1/etc/initramfs-tools/conf.d"
echo "# read by initramfs-tools" > "$1/etc/initramfs-tools/conf.d/deblive-test"
"""
# What the second image must show when booted, as the live user.
EXPECT = (
    "test -e /etc/deblive-layer-b",
    "! test -e /etc/deblive-layer-a",  # the first hook's file: not in this image
    "test -e /etc/issue.net",  # the first hook deleted it: back
    "! test -e /etc/host.conf",  # this hook deleted it: gone
    "grep -qx 'deblive layered motd' /etc/motd",  # replaced
    "test -e /usr/share/doc/base-files/replaced",  # a directory made anew (opaque)
    "! test -e /usr/share/doc/base-files/copyright",
    "dpkg -s live-boot > /dev/null",  # the base's packages
    "test $(grep -c ' squashfs ' /proc/mounts) -ge 2",  # both layers mounted
)
# The second hook's image with a package the cached base lacks: a package layer
# between the base and the hook's layer (build.stages.packagelayer).
PACKAGE = "hello"
EXPECT_PACKAGE = (
    *EXPECT[:-1],
    "hello | grep -qx 'Hello, world!'",  # the package layer's program
    "dpkg -s hello > /dev/null",  # and dpkg's record of it, in the same layer
    "test $(grep -c ' squashfs ' /proc/mounts) -ge 3",  # base, packages, hook's layer
)


def write_layered_config(directory: Path, name: str, compression: str) -> tuple[Path, Path]:
    """The config (a layered build with the first hook) and its hook, in directory.

    The host name is new to this process, so the first build's base key is
    new on any machine: a miss, never an earlier session's entry.
    """
    hook = directory / "hook.sh"
    hook.write_text(HOOK_A)
    hook.chmod(0o755)
    config = directory / f"{name}.yaml"
    config.write_text(textwrap.dedent(f"""\
        name: {name}
        hostname: {name}-{os.getpid()}
        hook: hook.sh
        squashfs: {{compression: {compression}, layout: layered}}
        """))
    return config, hook


def forget_cached_bases(image: str) -> None:
    """Remove the base cache entries a test's image left (they would only fill the cache)."""
    cache = basecache.BaseCache(pipeline.DEFAULT_CACHE)
    for entry in cache.entries():
        if entry.image == image:
            cache.remove(entry)
