"""The one way the extended tier builds an image: `deblive build CONFIG` as a user runs
it, into BASE/out and BASE/work, its console kept in BASE/build-output.txt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from deblive.boottest.medium import extract
from deblive.core.log import BuildLog
from deblive.core.runner import Runner

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


# Under TCG on this host udev's coldplug can take longer than systemd's 90 s for a
# serial console's device (ttyAMA0, ttyS0, hvc0), and its getty then fails for good.
SLOW_CONSOLE_CMDLINE = "systemd.default_device_timeout_sec=600"


def arch_iso(base: Path, suite: str, architecture: str) -> Path:
    """The default image of suite for a foreign architecture, built through qemu-user."""
    config = base / f"{architecture}.yaml"
    config.write_text(f"name: deblive\nsuite: {suite}\narchitecture: {architecture}\n"
                      f"boot: {{cmdline: {SLOW_CONSOLE_CMDLINE}}}\n")
    iso, _ = build_iso(config, base)
    assert iso.name == f"deblive-{suite}-{architecture}.iso"
    return iso


def efi_boot_files(iso: Path, dest: Path) -> list[str]:
    """The names of the files in the medium's /EFI/boot."""
    extract(Runner(BuildLog()), iso, ["/EFI/boot"], dest)
    return sorted(p.name for p in dest.rglob("*") if p.is_file())
