"""deblive metapackage: a real .deb from dpkg-deb, read back with dpkg-deb."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from debian import deb822

from deblive.build import metapackage
from deblive.build.metapackage import MetapackageError
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.model import config

from . import conftest

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
RUNNER = Runner(BuildLog())


def make_config(**data: object) -> config.ImageConfig:
    return conftest.parse({"name": "demo_img", "tasks": ["task-ssh-server", "live-task-standard"],
                         "packages": ["wpasupplicant", "task-ssh-server"], **data}, None)


def info(deb: Path) -> deb822.Deb822:
    out = subprocess.run(["dpkg-deb", "--field", str(deb)], check=True, capture_output=True,
                         text=True).stdout
    return deb822.Deb822(out)


def test_control_fields(tmp_path: Path) -> None:
    deb = metapackage.build(make_config(metapackage={"version": "1.2"}), tmp_path, RUNNER, epoch=0)
    assert deb.name == "demo-img-live-task_1.2_all.deb"
    fields = info(deb)
    assert fields["Package"] == "demo-img-live-task"
    assert fields["Architecture"] == "all"
    assert fields["Version"] == "1.2"
    assert fields["Depends"] == "task-ssh-server, live-task-standard, wpasupplicant"
    subprocess.run(["dpkg-deb", "--info", str(deb)], check=True, capture_output=True)


def test_contents_are_root_owned_docs_only(tmp_path: Path) -> None:
    deb = metapackage.build(make_config(), tmp_path, RUNNER, epoch=0)
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], check=True, capture_output=True,
                             text=True).stdout
    files = [line.split()[-1] for line in listing.splitlines() if line.startswith("-")]
    assert files == ["./usr/share/doc/demo-img-live-task/changelog.gz",
                     "./usr/share/doc/demo-img-live-task/copyright"]
    assert all(" root/root " in line for line in listing.splitlines())


def test_default_version_is_the_date_and_reproducible(tmp_path: Path) -> None:
    epoch = 1_700_000_000
    first = metapackage.build(make_config(), tmp_path / "a", RUNNER, epoch=epoch)
    second = metapackage.build(make_config(), tmp_path / "b", RUNNER, epoch=epoch)
    assert info(first)["Version"] == "20231114.2213"
    assert first.read_bytes() == second.read_bytes()


def test_nothing_to_depend_on_is_an_error(tmp_path: Path) -> None:
    cfg = conftest.parse({"name": "empty"}, None)
    with pytest.raises(MetapackageError, match="no tasks and no packages"):
        metapackage.build(cfg, tmp_path, RUNNER)


def test_config_accepts_true_and_a_mapping() -> None:
    assert make_config(metapackage=True).metapackage.install is True
    assert make_config().metapackage.install is False
    with pytest.raises(config.ConfigError, match=r"metapackage\.version"):
        make_config(metapackage={"version": "x1"})
    with pytest.raises(config.ConfigError, match=r"metapackage\.maintainer"):
        make_config(metapackage={"maintainer": "nobody"})
