"""A snapshot build: the build mirror and the image's sources are a stand-in for
Debian's snapshot service on 127.0.0.1 (answering from the host's mirror), with
Check-Valid-Until off for them only; the build is dated by the snapshot."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from tests.support.snapshot import snapshot_stand_in

from .conftest import build, unsquash

TIME = "20261101T000000Z"


def test_a_snapshot_build_reads_and_ships_the_snapshot(tmp_path: Path) -> None:
    with snapshot_stand_in(TIME) as stand_in:
        config = tmp_path / "snap.yaml"
        config.write_text(f"name: snap\nsnapshot: {TIME}\nsnapshot_url: {stand_in.url}\n"
                          "squashfs: {compression: lz4}\n")
        result = build(config, tmp_path, "--no-iso")
    assert result.returncode == 0, result.output[-4000:]
    report = json.loads(result.path("report.json").read_text())
    epoch = int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp())
    assert (report["source_date_epoch"], report["source_date_epoch_from"]) == (epoch, "snapshot")
    codename = report["codename"]
    asked = stand_in.requests
    assert f"/archive/debian/{TIME}/dists/{codename}/InRelease" in asked, asked[:20]
    assert any(p.startswith(f"/archive/debian-security/{TIME}/dists/{codename}-security/")
               for p in asked), asked[:20]
    tree = unsquash(result.path("filesystem.squashfs"), tmp_path / "t",
                    "etc/apt/sources.list.d")
    sources = (tree / "etc/apt/sources.list.d/debian.sources").read_text()
    paragraphs = sources.strip().split("\n\n")
    assert f"URIs: {stand_in.url}/archive/debian/{TIME}\n" in paragraphs[0]
    assert f"URIs: {stand_in.url}/archive/debian-security/{TIME}\n" in paragraphs[-1]
    assert all("Check-Valid-Until: no" in p for p in paragraphs)
