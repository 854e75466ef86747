"""Extended tier: the matrix pipeline of tests/integration/test_matrix.py for two
configs: two build jobs side by side, two boot tests, and one publish job whose
release and merged report hold both images."""

from __future__ import annotations

import pytest

from tests.integration.test_matrix import check_release, run_pipeline

pytestmark = pytest.mark.extended

IMAGES = ("mxa", "mxb")


def test_two_images_are_built_tested_and_published_together(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    repo = run_pipeline(tmp_path_factory.mktemp("matrix2") / "images", IMAGES)
    check_release(repo, IMAGES)
    screens = list((repo / "release" / "amd64" / "iso-hybrid").rglob("*.png"))
    assert len(screens) == len(IMAGES), screens
