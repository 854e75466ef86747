"""Reproducible by default: the default image built a second time, without
SOURCE_DATE_EPOCH, in another work and output directory, later, under another
umask and time zone, is byte for byte the session's default build.

The build date then comes from the newest Date of the Release files used
(the report says so). On a difference, diffoscope's report of the two ISOs
is kept in test-artifacts/ to show what moved.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from .conftest import ARTIFACTS, DEBLIVE, REPO, Build


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _again(default_build: Build, base: Path) -> Path:
    """The default config built again, varied in everything but its inputs."""
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["TZ"] = "Asia/Tokyo"
    outdir = base / "elsewhere" / "out"
    proc = subprocess.run(
        [*DEBLIVE, "build", str(default_build.config), "-o", str(outdir),
         "--workdir", str(base / "another-work")],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=3600,
        stdin=subprocess.DEVNULL, preexec_fn=lambda: os.umask(0o077),
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return outdir


def _keep_diffoscope(one: Path, two: Path) -> None:
    if shutil.which("diffoscope") is None:
        return
    ARTIFACTS.mkdir(exist_ok=True)
    report = ARTIFACTS / "reproducible-diffoscope.txt"
    subprocess.run(["diffoscope", "--text", str(report), "--max-report-size", "2000000",
                    str(one), str(two)], capture_output=True, timeout=1800, check=False)


def test_two_builds_of_one_config_are_identical(default_build: Build, tmp_path: Path) -> None:
    report = json.loads(default_build.path("report.json").read_text())
    assert "SOURCE_DATE_EPOCH" not in os.environ
    assert report["source_date_epoch_from"] == "release", report["source_date_epoch_from"]
    again = _again(default_build, tmp_path)
    second = json.loads((again / "report.json").read_text())
    assert second["source_date_epoch"] == report["source_date_epoch"]
    assert second["build_id"] == report["build_id"]
    # The shared package cache kept the base's packages as well as the packages
    # stage's: the second build downloaded nothing.
    assert second["downloaded_bytes"] == 0
    pairs = [(default_build.iso, again / default_build.iso.name),
             (default_build.path("filesystem.squashfs"), again / "filesystem.squashfs")]
    differing = [one.name for one, two in pairs if _sha256(one) != _sha256(two)]
    if differing:
        _keep_diffoscope(*pairs[1] if "filesystem.squashfs" in differing else pairs[0])
    assert not differing, f"{differing} differ: see test-artifacts/reproducible-diffoscope.txt"
    # SHA256SUMS of both builds agree too (the published checksums of the same bytes).
    assert (again / "SHA256SUMS").read_text() == default_build.path("SHA256SUMS").read_text()
