"""Extended tier: the desktop flavours' configs the CI tier does not plan validate and
plan; the standard flavour's Install entry reaches d-i's hostname question; the
standard and xfce flavours are built as configured (zstd for speed),
booted with `deblive test`; the xfce desktop must come up by itself (autologin), shown
by its processes over the serial shell and by a screenshot kept as an artifact.

Artifacts (serial logs, PNGs) go to $DEBLIVE_ARTIFACTS or the pytest temp dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from deblive.boottest.modes import BootMode
from deblive.boottest.run import TestOptions, run_tests
from deblive.core.log import BuildLog
from tests.extended.buildkit import build_iso
from tests.integration.test_flavours import CI_FLAVOURS, FLAVOURS, PRESEED, check_flavour_plan
from tests.support import desktop as sessiontest
from tests.support import installer as installtest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

pytestmark = pytest.mark.extended


def artifacts(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    base = os.environ.get("DEBLIVE_ARTIFACTS")
    path = Path(base) / name if base else tmp_path_factory.mktemp(name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_flavour(flavour: str, base: Path, preseed: str | None = None) -> Path:
    data = yaml.safe_load((EXAMPLES / f"{flavour}.yaml").read_text())
    data["squashfs"] = {"compression": "zstd"}
    if preseed is not None:
        data["installer"]["preseed"] = "preseed.cfg"
        (base / "preseed.cfg").write_text(preseed)
    config = base / f"{flavour}.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True))
    iso, _ = build_iso(config, base)
    return iso


@pytest.mark.parametrize("flavour", [f for f in FLAVOURS if f not in CI_FLAVOURS])
def test_other_flavours_validate_and_plan(flavour: str) -> None:
    check_flavour_plan(flavour)


@pytest.fixture(scope="module")
def standard_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The preseed answers d-i's first questions for the install entry's test.
    return build_flavour("standard", tmp_path_factory.mktemp("standard"), PRESEED)


@pytest.fixture(scope="module")
def xfce_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_flavour("xfce", tmp_path_factory.mktemp("xfce"))


def test_standard_flavour_boots_bios_and_uefi(
    standard_iso: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = artifacts(tmp_path_factory, "standard-boot")
    results = run_tests(standard_iso, [BootMode.BIOS_CD, BootMode.UEFI_USB],
                        TestOptions(output=out, screenshot=True), BuildLog())
    for result in results:
        assert result.result == "pass", f"{result.mode}: {result.failures}"


def test_install_entry_reaches_the_hostname_question(standard_iso: Path, tmp_path: Path
                                                     ) -> None:
    result = installtest.boot_installer(standard_iso, tmp_path, label="install")
    log = result.serial_log.read_text(errors="replace") if result.serial_log.exists() else ""
    assert result.reached, f"{result.detail}\n{log[-3000:]}"


def test_xfce_flavour_boots_into_its_desktop(
    xfce_iso: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = artifacts(tmp_path_factory, "xfce-desktop")
    result = sessiontest.boot_desktop(xfce_iso, out)
    assert result.screenshot is not None and result.screenshot.stat().st_size > 10_000
    assert result.display_manager == "lightdm", result.failures
    assert result.session_process == "xfce4-session", result.failures
    assert result.ok, result.failures
