"""The disk image: one build makes the ISO and `<name>.img` from one squashfs; the
image's partition table and persistence partition are read from the file, and
the persistence partition keeps a file across a reboot of the same stick."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import ARTIFACTS, Build, build, run_deblive

SECTOR = 512


@pytest.fixture(scope="session")
def disk_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    base = tmp_path_factory.mktemp("disk")
    config = base / "disk.yaml"
    config.write_text("name: disktest\nformats: [iso, disk]\npersistence: {size: 64MiB}\n"
                      "boot: {default: persistence, timeout: 1}\n"
                      "squashfs: {compression: zstd, level: 3}\n")
    result = build(config, base)
    assert result.returncode == 0, result.output[-4000:]
    return result


def _image(build: Build) -> Path:
    [image] = build.outdir.glob("*.img")
    return image


def _partitions(image: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["sfdisk", "--json", str(image)], check=True, capture_output=True,
                         text=True).stdout
    table = json.loads(out)["partitiontable"]
    assert table["label"] == "dos" and table["sectorsize"] == SECTOR
    parts: list[dict[str, Any]] = table["partitions"]
    return parts


def test_the_disk_image_has_the_medium_its_esp_and_a_persistence_partition(
        disk_build: Build, tmp_path: Path) -> None:
    image = _image(disk_build)
    iso, esp, persistence = _partitions(image)
    assert (iso["type"], esp["type"], persistence["type"]) == ("17", "ef", "83")
    assert iso["bootable"] is True
    assert int(persistence["size"]) * SECTOR == 64 * 2**20
    start = int(persistence["start"]) * SECTOR
    with image.open("rb") as f:
        f.seek(start)
        part = f.read(64 * 2**20)
    superblock = part[1024:2048]
    assert superblock[0x38:0x3A] == b"\x53\xef"  # ext2/3/4
    assert superblock[0x78:0x88].rstrip(b"\0") == b"persistence"
    (tmp_path / "p.ext4").write_bytes(part)
    conf = subprocess.run(["debugfs", "-R", "cat /persistence.conf", str(tmp_path / "p.ext4")],
                          capture_output=True, text=True, check=True).stdout
    assert conf == "/ union\n"


def test_both_formats_carry_one_squashfs_and_are_summed(disk_build: Build, tmp_path: Path
                                                         ) -> None:
    image = _image(disk_build)
    for source, name in ((image, "img"), (disk_build.iso, "iso")):
        dest = tmp_path / name
        subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(source), "-extract",
                        "/live/filesystem.squashfs", str(dest)], check=True, capture_output=True)
        assert dest.read_bytes() == disk_build.path("filesystem.squashfs").read_bytes()
    sums = disk_build.path("SHA256SUMS").read_text()
    assert f"{hashlib.sha256(image.read_bytes()).hexdigest()}  {image.name}" in sums
    report = json.loads(disk_build.path("report.json").read_text())
    assert image.name in [o["name"] for o in report["outputs"]]
    entries = json.loads(disk_build.path("boot-entries.json").read_text())
    assert entries["menu"]["default"] == "persistence"


def test_persistence_survives_a_reboot_of_the_stick(disk_build: Build) -> None:
    out = ARTIFACTS / "persistence"
    proc = run_deblive("test", _image(disk_build), "--persistence", "--mode", "uefi-usb",
                       "--output", out, timeout=2400)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    results = json.loads((out / "persistence-uefi-usb" / "boot2" / "results.json").read_text())
    [mode] = results["modes"]
    assert mode["result"] == "pass", mode
    names = {c["name"] for c in mode["checks"] if c["ok"]}
    assert any("deblive-persistence-check" in n for n in names), names
