"""Extended tier: the default image built for i386 (bookworm, the last release with i386
kernels; amd64's CPU runs it without qemu-user), then booted in qemu-system-i386 in every
medium mode: BIOS from CD and USB (ISOLINUX), 32-bit UEFI from CD and USB (shimia32,
gcdia32 on ovmf-ia32); the Secure Boot modes are skipped with their reason (ovmf-ia32
has no varstore with enrolled keys).

Artifacts (serial logs, results.json) go to $DEBLIVE_ARTIFACTS or the pytest temp dir.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deblive.boottest.medium import read_entries
from deblive.boottest.modes import MEDIUM_MODES
from deblive.boottest.run import TestOptions, run_tests
from deblive.core.log import BuildLog
from deblive.model.arch import Arch
from tests.extended.buildkit import build_iso
from tests.extended.test_flavours_extended import artifacts

pytestmark = pytest.mark.extended


@pytest.fixture(scope="module")
def i386_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("i386")
    config = base / "i386.yaml"
    config.write_text("name: deblive\nsuite: bookworm\narchitecture: i386\n")
    iso, output = build_iso(config, base, timeout=3600)
    assert "qemu-user" not in output  # no emulation for its bootstrap
    assert iso.name == "deblive-bookworm-i386.iso"
    return iso


def test_i386_iso_boots_bios_and_32_bit_uefi_from_cd_and_usb(
    i386_iso: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    entries = read_entries(i386_iso)
    assert entries is not None and entries.architecture is Arch.I386 and entries.bios
    out = artifacts(tmp_path_factory, "i386-boot")
    results = {r.mode: r for r in run_tests(i386_iso, list(MEDIUM_MODES),
                                            TestOptions(output=out, jobs=2), BuildLog())}
    for mode in ("bios-cd", "bios-usb", "uefi-cd", "uefi-usb"):
        result = results[mode]
        assert result.result == "pass", f"{mode}: {result.failures}"
        names = {check.name: check for check in result.checks}
        assert names["firmware"].ok and names["machine"].ok and names["system-running"].ok, \
            result.checks
    for mode in ("secureboot-cd", "secureboot-usb"):
        assert results[mode].result == "skipped"
        assert "enrolled keys" in " ".join(results[mode].notes)
    data = json.loads((out / "results.json").read_text())
    assert data["passed"] is True
