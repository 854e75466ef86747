"""Extended tier: the default image built for riscv64 (trixie, its first release;
mmdebstrap and the chroot run through qemu-user), its grub linked by the host's
grub-mkimage from the release's grub-efi-riscv64-bin, then booted in
qemu-system-riscv64's virt through qemu's OpenSBI and U-Boot's UEFI under TCG and
logged in on ttyS0. U-Boot boots virtio disks only: the hybrid image boots as a
disk (uefi-usb); uefi-cd, BIOS and Secure Boot are skipped with their reasons.

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
def riscv64_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("riscv64")
    return arch_iso(base, "trixie", "riscv64")


def test_riscv64_image_carries_its_own_grub_and_boots_from_a_disk_under_u_boot(
    riscv64_iso: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    entries = read_entries(riscv64_iso)
    assert entries is not None and entries.architecture is Arch.RISCV64 and not entries.bios
    found = efi_boot_files(riscv64_iso, tmp_path_factory.mktemp("riscv64-efi"))
    assert found == ["bootriscv64.efi"], found  # no shim: the firmware starts grub itself
    out = artifacts(tmp_path_factory, "riscv64-boot")
    modes = [BootMode.UEFI_USB, BootMode.UEFI_CD, BootMode.BIOS_CD, BootMode.SECUREBOOT_USB]
    results = {r.mode: r for r in run_tests(riscv64_iso, modes, TestOptions(output=out),
                                            BuildLog())}
    result = results["uefi-usb"]
    assert result.result == "pass", f"uefi-usb: {result.failures}"
    assert result.accel == "tcg"
    names = {check.name: check for check in result.checks}
    assert names["firmware"].ok and names["machine"].ok and names["sudo"].ok, result.checks
    assert names["root-locked"].ok and names["system-running"].ok, result.checks
    serial = Path(result.serial_log).read_text(encoding="utf-8", errors="replace")
    assert "OpenSBI" in serial and "U-Boot" in serial  # the firmware chain
    assert "ttyS0" in serial  # getty's banner on the 16550 serial console
    for skipped, why in (("uefi-cd", "boots no CD-ROM"), ("bios-cd", "UEFI only"),
                         ("secureboot-usb", "signs no shim or grub")):
        assert results[skipped].result == "skipped"
        assert why in " ".join(results[skipped].notes), results[skipped].notes
    data = json.loads((out / "results.json").read_text())
    assert data["passed"] is True
