"""The default ISO: its medium, its boot records, and real boots.

The ISO is the session's default build; `deblive test` runs once per session in two
modes side by side (about 1.5 minutes a mode under TCG): BIOS from a CD with the boot
menu's screenshot, and Secure Boot from a USB stick; each mode's result is its own
test. The other four modes boot in the extended tier (tests/extended/test_iso_modes.py),
and UEFI without Secure Boot boots here through the layered, persistence and PXE tests.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from deblive.boottest.medium import read_entries
from deblive.boottest.modes import BootMode
from deblive.boottest.run import ModeResult, TestOptions, run_tests
from deblive.build import menus
from deblive.core.log import BuildLog

from .conftest import ARTIFACTS, Build, extract_iso, run_deblive

# CI boots the default image from a BIOS CD (with the menu's screenshot) and, side
# by side, from a CD with Secure Boot (a CD: OVMF's SMM build and USB emulation
# together double a boot under TCG); every mode of this image is booted in the
# extended tier (tests/extended/test_iso_modes.py).
CI_MODES = (BootMode.BIOS_CD, BootMode.SECUREBOOT_CD)


@pytest.fixture(scope="session")
def iso(default_build: Build) -> Path:
    return default_build.iso


@pytest.fixture(scope="session")
def medium(iso: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_iso(iso, tmp_path_factory.mktemp("medium") / "m")


def xorriso_report(iso: Path, what: str) -> str:
    return subprocess.run(
        ["xorriso", "-indev", str(iso), f"-report_{what}", "plain"],
        check=True, capture_output=True, text=True,
    ).stdout


def test_sha256sums_file_verifies_the_iso_and_the_sbom(iso: Path) -> None:
    lines = (iso.parent / "SHA256SUMS").read_text().splitlines()
    sbom = iso.with_suffix(".spdx.json")
    expected = sorted([iso, sbom])
    assert [line.split("  ", 1)[1] for line in lines] == [p.name for p in expected]
    for line, path in zip(lines, expected, strict=True):
        assert line.split()[0] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_boot_records(iso: Path) -> None:
    torito = xorriso_report(iso, "el_torito")
    assert "El Torito boot img :   1  BIOS" in torito
    assert "El Torito boot img :   2  UEFI" in torito
    area = xorriso_report(iso, "system_area")
    assert "MBR partition table" in area or "MBR" in area
    assert "0xef" in area, area  # the EFI image as a partition, for UEFI USB boot
    assert "isohybrid" in area.lower() or "System area summary: MBR" in area


def test_medium_follows_live_conventions(medium: Path, default_build: Build) -> None:
    live = medium / "live"
    assert (live / "vmlinuz").is_file() and (live / "initrd.img").is_file()
    assert list(live.glob("vmlinuz-*")) and list(live.glob("initrd.img-*"))
    assert (live / "filesystem.squashfs").stat().st_size == \
        default_build.path("filesystem.squashfs").stat().st_size
    assert (live / "filesystem.packages").read_text() == \
        default_build.path("filesystem.packages").read_text()
    report = json.loads(default_build.path("report.json").read_text())
    ids = list((medium / ".disk/id").iterdir())
    assert [p.name for p in ids] == [report["build_id"]]
    assert "Debian GNU/Linux" in (medium / ".disk/info").read_text()
    assert (medium / ".disk/mkisofs").read_text().startswith("xorriso")
    for cfg in ("isolinux/isolinux.cfg", "boot/grub/grub.cfg", "boot/grub/loopback.cfg",
                "EFI/debian/grub.cfg"):
        assert (medium / cfg).is_file(), cfg
    assert report["build_id"] in (medium / "EFI/debian/grub.cfg").read_text()
    assert "findiso=" in (medium / "boot/grub/loopback.cfg").read_text()
    assert "console=ttyS0" in (medium / "boot/grub/grub.cfg").read_text()


def test_sha256sum_txt_verifies(medium: Path) -> None:
    proc = subprocess.run(["sha256sum", "--check", "--quiet", "sha256sum.txt"], cwd=medium,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = (medium / "sha256sum.txt").read_text()
    assert "./live/filesystem.squashfs" in listed


def test_efi_image_holds_signed_shim_and_grub(medium: Path, tmp_path: Path) -> None:
    efi_img = medium / "boot/grub/efi.img"
    listing = subprocess.run(["mdir", "-/", "-b", "-i", str(efi_img), "::"],
                             check=True, capture_output=True, text=True).stdout
    for name in ("::/EFI/BOOT/BOOTX64.EFI", "::/EFI/BOOT/GRUBX64.EFI", "::/EFI/BOOT/MMX64.EFI",
                 "::/EFI/DEBIAN/GRUB.CFG"):
        assert name.lower() in listing.lower(), listing
    shim = tmp_path / "shim.efi"
    subprocess.run(["mcopy", "-i", str(efi_img), "::/EFI/BOOT/BOOTX64.EFI", str(shim)],
                   check=True)
    data = shim.read_bytes()
    # Debian's signed shim carries Microsoft's UEFI CA signature (an Authenticode blob).
    assert b"Microsoft Corporation UEFI CA" in data


@pytest.fixture(scope="session")
def boot_results(iso: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModeResult]:
    # Kept after the run (serial logs, screenshots, results.json) as CI artifacts.
    out = ARTIFACTS / "boot-default"
    if out.exists():
        shutil.rmtree(out)
    options = TestOptions(output=out, jobs=2, screenshot=True)
    log = BuildLog()
    results = run_tests(iso, list(CI_MODES), options, log)
    return {r.mode: r for r in results}


def test_boot_entries_describe_the_menus_on_the_medium(iso: Path, medium: Path) -> None:
    entries = read_entries(iso)
    assert entries is not None and entries.menu is not None
    assert (str(entries.architecture), entries.user, entries.sudo) == ("amd64", "user",
                                                                       "nopasswd")
    # The very menu both loaders were written from.
    assert (medium / "boot/grub/grub.cfg").read_text() == menus.render_grub(entries.menu)
    assert (medium / "isolinux/menu.cfg").read_text() == \
        menus.render_isolinux(entries.menu)["menu.cfg"]


@pytest.mark.parametrize("mode", [str(m) for m in CI_MODES])
def test_boots_to_a_working_live_session(boot_results: dict[str, ModeResult], mode: str) -> None:
    result = boot_results[mode]
    assert result.result == "pass", "\n".join(result.failures) + "\n" + result.serial_log
    passed = {c.name for c in result.checks if c.ok}
    assert {"sudo", "root-locked", "firmware", "machine", "system-running"} <= passed, result.checks
    if not mode.startswith("bios"):
        assert "secure-boot" in passed, result.checks  # enabled exactly in secureboot-*
    assert result.seconds_to_login is not None
    assert result.screenshot is not None  # and not blank: a blank one fails the mode
    assert Path(result.screenshot).stat().st_size > 1000


def test_test_command_bad_input(tmp_path: Path) -> None:
    proc = run_deblive("test", tmp_path / "missing.iso")
    assert proc.returncode == 2 and "not found" in proc.stderr
    proc = run_deblive("test", tmp_path / "missing.iso", "--mode", "floppy")
    assert proc.returncode == 2
