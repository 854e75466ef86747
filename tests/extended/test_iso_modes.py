"""Extended tier: the default image booted in all six medium modes (BIOS, UEFI and
Secure Boot, each from a CD and a USB stick), a boot-menu screenshot in each. The CI
tier boots it in two (bios-cd, secureboot-usb) and UEFI elsewhere.

Artifacts (serial logs, screenshots, results.json) go to $DEBLIVE_ARTIFACTS or the
pytest temp dir.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deblive.boottest.modes import MEDIUM_MODES
from deblive.boottest.run import TestOptions, run_tests
from deblive.core.log import BuildLog
from tests.extended.test_flavours_extended import artifacts

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.extended


@pytest.fixture(scope="module")
def default_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("default")
    proc = subprocess.run(
        [sys.executable, "-m", "deblive", "build", "-o", str(base / "out"),
         "--workdir", str(base / "work"), "--force"],
        capture_output=True, text=True, timeout=3600, cwd=REPO, stdin=subprocess.DEVNULL,
    )
    (base / "build-output.txt").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    [iso] = (base / "out").glob("*.iso")
    return iso


def test_the_default_image_boots_in_every_medium_mode(
    default_iso: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = artifacts(tmp_path_factory, "boot-six-modes")
    results = run_tests(default_iso, list(MEDIUM_MODES),
                        TestOptions(output=out, jobs=2, screenshot=True), BuildLog())
    assert [r.mode for r in results] == [str(m) for m in MEDIUM_MODES]
    for result in results:
        assert result.result == "pass", f"{result.mode}: {result.failures}"
        passed = {c.name for c in result.checks if c.ok}
        assert {"sudo", "root-locked", "firmware", "machine", "system-running"} <= passed
        if not result.mode.startswith("bios"):
            assert "secure-boot" in passed, result.checks
        assert result.screenshot is not None
    assert json.loads((out / "results.json").read_text())["passed"] is True
