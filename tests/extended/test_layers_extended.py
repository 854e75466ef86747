"""Extended tier: a layered image booted in all six modes, and the same config flat in one.

The layered image comes from a base cache hit (a first build stores the base,
the second, with another hook and one package more, takes it and stores a
package layer over it), so what boots is a stack of three: the cached base,
the package layer and a fresh layer on top. Each mode checks in the booted
system that the top layer's deletions, replacements and new files are in
force and the package layer's program runs. The flat build of the same config
(`--flat`) must boot with the same result from one squashfs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deblive.boottest.modes import MEDIUM_MODES, BootMode
from deblive.boottest.run import ModeResult, TestOptions, run_tests
from deblive.core.log import BuildLog
from tests.extended.test_flavours_extended import artifacts
from tests.support.layers import (
    EXPECT_PACKAGE,
    HOOK_B,
    PACKAGE,
    forget_cached_bases,
    write_layered_config,
)

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.extended


def _build(config: Path, out: Path, *extra: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "deblive", "build", str(config), "-o", str(out), "--workdir",
         str(out.with_name(out.name + "-work")), "--force", *extra],
        capture_output=True, text=True, timeout=3600, cwd=REPO, stdin=subprocess.DEVNULL,
    )
    out.with_name(out.name + "-output.txt").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    report: dict[str, object] = json.loads((out / "report.json").read_text())
    return report


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    base = tmp_path_factory.mktemp("layers")
    config, hook = write_layered_config(base, "layerext", "zstd")
    _build(config, base / "first")
    hook.write_text(HOOK_B)
    config.write_text(config.read_text() + f"packages: [{PACKAGE}]\n")
    layered = _build(config, base / "layered")
    cache = layered["base_cache"]
    assert isinstance(cache, dict) and cache["result"] == "hit", cache
    assert cache["stored_layer"] and len(cache["chain"]) == 2, cache
    flat = _build(config, base / "flat", "--flat")
    assert flat["layout"] == "flat" and flat["base_cache"] is None
    assert not (base / "flat" / "layer.squashfs").exists()
    yield {name: next((base / name).glob("*.iso")) for name in ("layered", "flat")}
    forget_cached_bases("layerext")


def _boot(iso: Path, modes: list[BootMode], out: Path) -> dict[str, ModeResult]:
    options = TestOptions(output=out, jobs=2, expect=EXPECT_PACKAGE)
    return {r.mode: r for r in run_tests(iso, modes, options, BuildLog())}


@pytest.fixture(scope="module")
def layered_results(images: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                    ) -> dict[str, ModeResult]:
    return _boot(images["layered"], list(MEDIUM_MODES), artifacts(tmp_path_factory, "boot-layered"))


@pytest.mark.parametrize("mode", [str(m) for m in MEDIUM_MODES])
def test_layered_image_boots_in_every_mode(layered_results: dict[str, ModeResult],
                                           mode: str) -> None:
    result = layered_results[mode]
    assert result.result == "pass", "\n".join(result.failures) + "\n" + result.serial_log
    passed = {c.name for c in result.checks if c.ok}
    assert {f"expect: {command}" for command in EXPECT_PACKAGE} <= passed, result.checks


def test_flat_build_of_the_same_config_boots(images: dict[str, Path],
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    # The flat image is one squashfs: everything but the three-layer mount check holds.
    results = run_tests(images["flat"], [BootMode.UEFI_CD],
                        TestOptions(output=artifacts(tmp_path_factory, "boot-flat"),
                                    expect=EXPECT_PACKAGE[:-1]), BuildLog())
    result = results[0]
    assert result.result == "pass", "\n".join(result.failures)
