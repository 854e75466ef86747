"""The image matrix on a real CI engine: `deblive matrix` writes the pipeline for a
small config, gitlab-ci-local runs it with shell isolation (the build, its boot
test, the publish job), the release tree's checksums verify, the merged report
names the image and its boot, and the index page is rendered by headless
Chromium, its screenshot kept with the test artefacts. The extended tier runs the
same pipeline for two configs (tests/extended/test_matrix_extended.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ARTIFACTS, REPO

GITLAB_CI_LOCAL = REPO / "ci" / "gitlab-ci-local" / "node_modules" / ".bin" / "gitlab-ci-local"
DEBLIVE = Path(sys.executable).with_name("deblive")
CI_IMAGES = ("mxa",)
CONFIG = "suite: {suite}\nboot: {{timeout: 4}}\nsquashfs: {{compression: zstd, level: 3}}\n"
# Chromium as root in a closed network: no sandbox, no background connections.
CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--hide-scrollbars"]


def run_pipeline(repo: Path, names: tuple[str, ...]) -> Path:
    """Generate the pipeline for one small config per name, run it; returns the repo."""
    assert GITLAB_CI_LOCAL.exists(), "scripts/setup.sh installs gitlab-ci-local"
    (repo / "configs").mkdir(parents=True)
    for name in names:
        (repo / "configs" / f"{name}.yaml").write_text(
            f"name: {name}\n" + CONFIG.format(suite="bookworm"))
    gen = subprocess.run([str(DEBLIVE), "matrix", *(f"configs/{n}.yaml" for n in names),
                          "--test", "bios-cd", "-o", ".gitlab-ci.yml"], cwd=repo,
                         capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0, gen.stderr
    git = ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "images"], cwd=repo, check=True)
    proc = subprocess.run(
        [str(GITLAB_CI_LOCAL), "--shell-isolation", "--variable", f"DEBLIVE={DEBLIVE}"],
        cwd=repo, capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"matrix-pipeline-{len(names)}.txt").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    jobs = [job for n in names for job in (f"build:{n}-bookworm-amd64", f"test:{n}-bookworm-amd64")]
    for job in (*jobs, "publish"):
        assert any(line.split()[:2] == ["PASS", job] for line in proc.stdout.splitlines()), job
    return repo


def check_release(repo: Path, names: tuple[str, ...]) -> None:
    """Every image's files are in the release, its sums verify, the merged report
    names each image with its build and its passed boot."""
    release = repo / "release"
    iso_dir = release / "amd64" / "iso-hybrid"
    wanted = {f"{n}-bookworm-amd64" for n in names}
    for image in wanted:
        assert (iso_dir / f"{image}.iso").is_file()
        assert (iso_dir / f"{image}.spdx.json").is_file()
    for sums in ("SHA256SUMS", "SHA512SUMS"):
        tool = "sha256sum" if sums == "SHA256SUMS" else "sha512sum"
        check = subprocess.run([tool, "--check", "--strict", sums], cwd=iso_dir,
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.count(": OK") >= 3 * len(names)
    report = json.loads((release / "report.json").read_text())
    images = {i["image"]: i for i in report["images"]}
    assert set(images) == wanted
    for image in images.values():
        assert image["boot"]["bios-cd"]["result"] == "pass", image["boot"]
        assert image["build"]["result"] == "success"
    assert report["passed"] is True


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_pipeline(tmp_path_factory.mktemp("matrix") / "images", CI_IMAGES)


def test_the_pipeline_publishes_a_release_whose_checksums_verify(pipeline_run: Path) -> None:
    check_release(pipeline_run, CI_IMAGES)


def test_the_index_page_shows_the_table_in_a_real_browser(pipeline_run: Path,
                                                          tmp_path: Path) -> None:
    index = pipeline_run / "release" / "index.html"
    if shutil.which("chromium") is None:
        pytest.fail("chromium is missing: scripts/setup.sh installs it")
    profile = tmp_path / "profile"
    dom = subprocess.run([*CHROMIUM, f"--user-data-dir={profile}", "--dump-dom",
                          index.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = [line for line in dom.stdout.split("<tr") if "bookworm-amd64" in line]
    assert len(rows) == len(CI_IMAGES) and all("pass" in row for row in rows), dom.stdout[-3000:]
    shot = ARTIFACTS / "matrix-index.png"
    subprocess.run([*CHROMIUM, f"--user-data-dir={profile}", "--window-size=1280,900",
                    f"--screenshot={shot}", index.as_uri()], capture_output=True, text=True,
                   timeout=120, check=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    # The boot-menu screenshots the page shows are in the tree it links.
    screens = list((pipeline_run / "release" / "amd64" / "iso-hybrid").rglob("*.png"))
    assert len(screens) == len(CI_IMAGES), screens
