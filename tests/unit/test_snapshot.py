"""snapshot: the build mirror and the image's sources from Debian's snapshot archive,
Check-Valid-Until off for those sources only, the build dated by the snapshot."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from deblive.apt.repositories import ExtraArchive
from deblive.apt.sources import build_sources, extra_sources, image_sources
from deblive.build import pipeline
from deblive.build.stages import bootstrap
from deblive.model.config import ConfigError, ImageConfig

from . import conftest

TS = "20261101T000000Z"
SERVICE = "http://snapshots.invalid"  # the unit tier names no real service


def cfg(**data: object) -> ImageConfig:
    return conftest.parse({"name": "demo", **data}, Path("/cfg/demo.yaml"))


def cfg_snap(**data: object) -> ImageConfig:
    return cfg(snapshot=TS, snapshot_url=SERVICE, **data)


def test_a_snapshot_becomes_every_mirror() -> None:
    config = cfg_snap()
    assert config.mirror == f"{SERVICE}/archive/debian/{TS}"
    assert config.apt_mirror == config.mirror
    assert config.security_mirror == f"{SERVICE}/archive/debian-security/{TS}"
    assert config.build_security_mirror == config.security_mirror
    local = cfg(snapshot=TS, snapshot_url="http://127.0.0.1:8080/")
    assert local.mirror == f"http://127.0.0.1:8080/archive/debian/{TS}"
    assert local.snapshot_epoch == int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp())


def test_valid_until_is_off_for_the_snapshot_sources_only() -> None:
    config = cfg_snap()
    for text in (build_sources(config), image_sources(config)):
        paragraphs = text.strip().split("\n\n")
        assert len(paragraphs) == 2
        assert all("Check-Valid-Until: no" in p for p in paragraphs)
    extra = ExtraArchive("deblive-1-x", "http://x/r", ("bookworm",), ("main",), b"\x99")
    assert "Check-Valid-Until" not in extra_sources([extra], "/k")
    own = cfg_snap(mirror="http://mirror.invalid/debian",
              apt_mirror="http://apt.invalid/debian")
    assert "Check-Valid-Until" not in image_sources(own)
    assert "Check-Valid-Until" not in image_sources(cfg())
    argv = bootstrap.mmdebstrap_argv(config, Path("/r"))
    assert '--aptopt=Acquire::Check-Valid-Until "false"' in argv
    assert not any("Valid-Until" in a for a in bootstrap.mmdebstrap_argv(cfg(), Path("/r")))


@pytest.mark.parametrize("value", ["2026-11-01", "20261301T000000Z", "20261101T000000",
                                   "20261101T000000Z\n"])
def test_a_bad_snapshot_time_names_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match=r"demo.yaml: snapshot: "):
        cfg(snapshot=value, snapshot_url=SERVICE)


def test_the_build_is_dated_by_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    config = cfg_snap()
    assert pipeline.build_date(config, None) == (config.snapshot_epoch, "snapshot")
    assert pipeline.build_date(cfg(), None)[1] == "clock"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234")
    assert pipeline.build_date(config, None) == (1234, "environment")


def test_a_snapshot_needs_the_service_named() -> None:
    with pytest.raises(ConfigError, match=r"demo.yaml: snapshot_url: not set, and snapshot"):
        cfg(snapshot=TS)
    assert cfg(snapshot_url=SERVICE).mirror == conftest.FAKE_MIRROR  # alone it does nothing
