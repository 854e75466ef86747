"""Extended tier: the default image built for ppc64el (bookworm; mmdebstrap and the chroot
run through qemu-user), its grub linked by the host's grub-mkimage from the release's
grub-ieee1275-bin as a CHRP ELF with the early config inside, then booted in
qemu-system-ppc64's pseries through qemu's own SLOF under TCG and logged in on hvc0,
from a CD (ofw-cd) and from the same file as a USB disk (ofw-usb). BIOS, UEFI,
Secure Boot and PXE modes are skipped with their reason (Open Firmware only).

Artifacts (serial logs, results.json) go to $DEBLIVE_ARTIFACTS or the pytest temp dir.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deblive.boottest.medium import extract, read_entries
from deblive.boottest.modes import BootMode
from deblive.boottest.run import TestOptions, run_tests
from deblive.build.stages.bootloaders import BOOTINFO_TEXT
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.model.arch import Arch
from tests.extended.buildkit import arch_iso
from tests.extended.test_flavours_extended import artifacts

pytestmark = pytest.mark.extended


@pytest.fixture(scope="module")
def ppc64el_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ppc64el")
    # Bookworm: trixie's initramfs-tools would be far quicker under qemu-user, but the
    # mirror this was measured on lacks part of trixie's ppc64el pool (libc6: 404).
    return arch_iso(base, "bookworm", "ppc64el")


def test_ppc64el_iso_is_chrp_and_boots_through_slof(
    ppc64el_iso: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    entries = read_entries(ppc64el_iso)
    assert entries is not None and entries.architecture is Arch.PPC64EL and not entries.bios
    runner = Runner(BuildLog())
    report = runner.output(["xorriso", "-indev", ppc64el_iso, "-report_system_area", "plain"])
    assert "MBR CHRP" in report, report
    medium = tmp_path_factory.mktemp("ppc64el-medium")
    extract(runner, ppc64el_iso, ["/ppc/bootinfo.txt", "/boot/grub/powerpc.elf"], medium)
    assert (medium / "ppc/bootinfo.txt").read_text() == BOOTINFO_TEXT
    assert (medium / "boot/grub/powerpc.elf").read_bytes()[:6] == b"\x7fELF\x01\x02"  # 32-bit BE
    out = artifacts(tmp_path_factory, "ppc64el-boot")
    modes = [BootMode.OFW_CD, BootMode.OFW_USB, BootMode.BIOS_CD, BootMode.UEFI_CD,
             BootMode.SECUREBOOT_USB]
    results = {r.mode: r for r in run_tests(ppc64el_iso, modes, TestOptions(output=out),
                                            BuildLog())}
    for mode in ("ofw-cd", "ofw-usb"):
        result = results[mode]
        assert result.result == "pass", f"{mode}: {result.failures}"
        assert result.accel == "tcg"
        names = {check.name: check for check in result.checks}
        assert names["firmware"].ok and names["machine"].ok and names["sudo"].ok, result.checks
        assert names["root-locked"].ok and names["system-running"].ok, result.checks
        assert "secure-boot" not in names  # no UEFI, nothing to read
        serial = Path(result.serial_log).read_text(encoding="utf-8", errors="replace")
        assert "SLOF" in serial and "GNU GRUB" in serial  # the firmware chain
        assert "hvc0" in serial  # getty's banner on the hypervisor's console
    for skipped in ("bios-cd", "uefi-cd", "secureboot-usb"):
        assert results[skipped].result == "skipped"
        assert "Open Firmware only" in " ".join(results[skipped].notes), results[skipped].notes
    data = json.loads((out / "results.json").read_text())
    assert data["passed"] is True
