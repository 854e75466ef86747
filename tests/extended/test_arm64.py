"""Extended tier: the default image built for arm64 (a foreign architecture here:
mmdebstrap and the chroot run through qemu-user), then booted with `deblive test`'s
machinery in qemu-system-aarch64 (virt, AAVMF, TCG) from a CD, logged in on ttyAMA0.

Artifacts (serial logs, results.json) go to $DEBLIVE_ARTIFACTS or the pytest temp dir.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deblive.boottest.medium import read_entries
from deblive.boottest.modes import BootMode
from deblive.boottest.run import TestOptions, run_tests
from deblive.core.log import BuildLog
from deblive.model.arch import Arch
from tests.extended.test_flavours_extended import artifacts

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.extended


@pytest.fixture(scope="module")
def arm64_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("arm64")
    proc = subprocess.run(
        [sys.executable, "-m", "deblive", "build", "--arch", "arm64", "-o", str(base / "out"),
         "--workdir", str(base / "work"), "--force"],
        capture_output=True, text=True, timeout=3 * 3600, cwd=REPO, stdin=subprocess.DEVNULL,
    )
    (base / "build-output.txt").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    isos = list((base / "out").glob("*.iso"))
    assert len(isos) == 1
    return isos[0]


def test_arm64_iso_is_detected_and_boots_uefi_cd(
    arm64_iso: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    entries = read_entries(arm64_iso)
    assert entries is not None and entries.architecture is Arch.ARM64
    out = artifacts(tmp_path_factory, "arm64-boot")
    results = run_tests(arm64_iso, [BootMode.UEFI_CD], TestOptions(output=out), BuildLog())
    [result] = results
    assert result.result == "pass", f"{result.mode}: {result.failures}"
    assert result.accel == "tcg"
    names = {check.name: check for check in result.checks}
    assert names["firmware"].ok and names["system-running"].ok
    serial = Path(result.serial_log).read_text(encoding="utf-8", errors="replace")
    assert "ttyAMA0" in serial  # getty's banner: the PL011 serial console
    data = json.loads((out / "results.json").read_text())
    assert data["passed"] is True
