"""The config's overlay: checked before the build, copied through the image tree."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from deblive.core.errors import DebliveError
from deblive.host import preflight
from deblive.host.imagetree import ImageTree
from tests.unit import conftest


def _overlay(root: Path, host_file: Path) -> None:
    (root / "etc/app/private").mkdir(parents=True)
    (root / "etc/app/app.conf").write_text("overlay")
    (root / "etc/app/app.conf").chmod(0o640)
    (root / "etc/app/private").chmod(0o700)
    (root / "etc/app/host-link").symlink_to(host_file)  # copied as a link
    (root / "etc/app/shared").symlink_to("/usr/share/app")  # a linked directory too
    (root / "etc/motd").write_text("overlay motd")  # over a link the image planted


def test_the_overlay_is_copied_with_modes_and_links_never_followed(tmp_path: Path) -> None:
    host_file = tmp_path / "host-secret"
    host_file.write_text("HOST")
    source, image = tmp_path / "overlay", tmp_path / "image"
    _overlay(source, host_file)
    (image / "etc").mkdir(parents=True)
    (image / "etc").chmod(0o755)
    (image / "etc/motd").symlink_to(host_file)  # what a package could plant
    with ImageTree(image) as tree:
        assert tree.copy_tree_in(source, "/") == 2
    assert host_file.read_text() == "HOST"  # written over the link, not through it
    assert (image / "etc/motd").read_text() == "overlay motd"
    assert not (image / "etc/motd").is_symlink()
    assert stat.S_IMODE((image / "etc/app/app.conf").stat().st_mode) == 0o640
    assert stat.S_IMODE((image / "etc/app/private").stat().st_mode) == 0o700
    assert stat.S_IMODE((image / "etc").stat().st_mode) == 0o755
    assert os.readlink(image / "etc/app/host-link") == str(host_file)
    assert os.readlink(image / "etc/app/shared") == "/usr/share/app"


def test_a_fifo_is_refused_when_checked_and_when_copied(tmp_path: Path) -> None:
    source = tmp_path / "cfg/overlay"
    (source / "etc").mkdir(parents=True)
    os.mkfifo(source / "etc/pipe")  # a reader would block on it forever
    config = tmp_path / "cfg/c.yaml"
    config.write_text("name: demo\noverlay: overlay\n")
    with pytest.raises(preflight.PreflightError, match=r"overlay: .*/etc/pipe is not a file"):
        preflight.check_paths(conftest.load(config))
    (tmp_path / "image").mkdir()
    with ImageTree(tmp_path / "image") as tree, pytest.raises(DebliveError, match="pipe"):
        tree.copy_tree_in(source, "/")


def test_the_overlay_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "overlay").write_text("a file")
    config = tmp_path / "c.yaml"
    config.write_text("name: demo\noverlay: overlay\n")
    cfg = conftest.load(config)
    with pytest.raises(preflight.PreflightError, match=r"overlay: .* is not a directory"):
        preflight.check_paths(cfg)
    assert cfg.overlay_path == tmp_path / "overlay"
    assert "overlay" in cfg.referenced_paths()
    assert conftest.parse({"name": "demo"}).overlay is None
