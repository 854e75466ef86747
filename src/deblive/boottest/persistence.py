"""`deblive test IMAGE.img --persistence`: the stick keeps the live system's changes.

The disk image is copied (sparse) to a stick of its own that qemu does not
snapshot, then booted twice from USB in each mode: the first boot writes a
file in the live user's home and checks that live-boot mounted the
persistence partition; after a clean power-off, the second boot of the same
stick must find the file. The image must boot its persistence entry by
default (boot.default: persistence), as a user would pick it from the menu.
An encrypted partition is opened with the passphrase typed at live-boot's
prompt in each boot, and must be what is mounted (a /dev/mapper volume).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path

from deblive.boottest.medium import BOOT_ENTRIES, entries_path
from deblive.boottest.modes import BadInput, BootMode
from deblive.boottest.run import ModeResult, TestOptions, run_tests
from deblive.core.log import BuildLog
from deblive.core.runner import Runner

MARK = "deblive-persistence-check"
FILE = "$HOME/deblive-persistence"
# The partition live-boot found and mounted (its mount point under /run/live).
MOUNTED = "grep -q ' /run/live/persistence/' /proc/mounts"
WRITE = (MOUNTED, f"echo {MARK} > {FILE} && sync")
READ = (MOUNTED, f"grep -qx {MARK} {FILE}")
# An encrypted partition: what is mounted there is the opened LUKS volume.
DECRYPTED = "grep -q '^/dev/mapper/[^ ]* /run/live/persistence/' /proc/mounts"


def stick_copy(runner: Runner, image: Path, dest: Path) -> Path:
    """A sparse copy of image (and its boot entries) in dest: the stick to write."""
    dest.mkdir(parents=True, exist_ok=True)
    stick = dest / image.name
    runner.run(["cp", "--sparse=always", str(image), str(stick)],
               what="copying the disk image to a stick of its own")
    shutil.copyfile(entries_path(image), dest / BOOT_ENTRIES)
    return stick


def run_persistence(image: Path, modes: Sequence[BootMode], options: TestOptions,
                    log: BuildLog) -> list[ModeResult]:
    """Two boots per USB mode on one writable copy; results named '<mode> boot N'."""
    image = image.resolve()
    usb = [m for m in modes if m.media == "usb"]
    if not usb:
        raise BadInput("--persistence needs a USB mode (a CD keeps nothing): "
                       + ", ".join(m for m in BootMode if m.media == "usb"))
    if not entries_path(image).is_file():
        raise BadInput(f"{image.name}: no {entries_path(image)} beside it")
    results: list[ModeResult] = []
    base = options.output_dir(image)
    for mode in usb:
        stick = stick_copy(Runner(log), image, base / f"persistence-{mode}")
        for boot, expect in ((1, WRITE), (2, READ)):
            opened = (DECRYPTED,) if options.passphrase is not None else ()
            step = dataclasses.replace(
                options, expect=(*options.expect, *expect, *opened), writable_media=True,
                output=base / f"persistence-{mode}" / f"boot{boot}")
            [result] = run_tests(stick, [mode], step, log)
            result.mode = f"{mode} boot {boot}"
            results.append(result)
            if result.result != "pass":
                break
        stick.unlink(missing_ok=True)
    return results
