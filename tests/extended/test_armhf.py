"""Extended tier: the default image built for armhf (bookworm; mmdebstrap and the chroot
run through qemu-user), its grub linked by the host's grub-mkimage from the release's
grub-efi-arm-bin, then booted from a CD in qemu-system-arm's virt with AAVMF32 under
TCG and logged in on ttyAMA0. The BIOS and Secure Boot modes are skipped with their
reasons (virt has no BIOS; Debian signs no armhf boot loader).

Artifacts (serial logs, results.json) go to $DEBLIVE_ARTIFACTS or the pytest temp dir.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deblive.boottest.medium import read_entries
from deblive.boottest.modes import BootMode
from deblive.boottest.run import TestOptions, run_tests
from deblive.core.log import BuildLog
from deblive.model.arch import Arch
from tests.extended.buildkit import arch_iso, efi_boot_files
from tests.extended.test_flavours_extended import artifacts

pytestmark = pytest.mark.extended


@pytest.fixture(scope="module")
def armhf_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("armhf")
    return arch_iso(base, "bookworm", "armhf")


def test_armhf_iso_carries_its_own_grub_and_boots_uefi_cd(
    armhf_iso: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    entries = read_entries(armhf_iso)
    assert entries is not None and entries.architecture is Arch.ARMHF and not entries.bios
    found = efi_boot_files(armhf_iso, tmp_path_factory.mktemp("armhf-efi"))
    assert found == ["bootarm.efi"], found  # no shim: the firmware starts grub itself
    out = artifacts(tmp_path_factory, "armhf-boot")
    modes = [BootMode.UEFI_CD, BootMode.BIOS_CD, BootMode.SECUREBOOT_CD]
    results = {r.mode: r for r in run_tests(armhf_iso, modes, TestOptions(output=out),
                                            BuildLog())}
    result = results["uefi-cd"]
    assert result.result == "pass", f"uefi-cd: {result.failures}"
    assert result.accel == "tcg"
    names = {check.name: check for check in result.checks}
    assert names["firmware"].ok and names["machine"].ok and names["sudo"].ok, result.checks
    assert names["system-running"].ok, result.checks
    serial = Path(result.serial_log).read_text(encoding="utf-8", errors="replace")
    assert "ttyAMA0" in serial  # getty's banner: the PL011 serial console
    assert results["bios-cd"].result == "skipped"
    assert results["secureboot-cd"].result == "skipped"
    assert "signs no shim or grub" in " ".join(results["secureboot-cd"].notes)
    data = json.loads((out / "results.json").read_text())
    assert data["passed"] is True
