"""formats and persistence: sizes with IEC units, the checks that name the key, the
persistence boot entries and the disk image's persistence partition (mke2fs -d)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deblive.build.stages import disk, iso
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.model.bootmenu import build_menu
from deblive.model.config import ConfigError, ImageConfig
from deblive.model.sizes import format_size, parse_size

from . import conftest


def cfg(**data: object) -> ImageConfig:
    return conftest.parse({"name": "demo", **data}, Path("/cfg/demo.yaml"))


def test_sizes_take_iec_units_only() -> None:
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("4GiB") == 4 * 2**30 and parse_size("64 KiB") == 64 * 2**10
    assert format_size(512 * 2**20) == "512MiB" and format_size(3 * 2**30) == "3GiB"
    for bad in ("512", "512MB", "1.5GiB", "-1MiB", "MiB", 512, True):
        with pytest.raises(ValueError):
            parse_size(bad)


@pytest.mark.parametrize(("data", "key", "words"), [
    ({"persistence": {"size": "512"}}, "persistence.size", "e.g. 512MiB"),
    ({"persistence": {"size": "8MiB"}}, "persistence.size", "between 16MiB"),
    ({"persistence": {"size": "1GiB", "label": "a b"}}, "persistence.label", "ext4 label"),
    ({"persistence": {"size": "1GiB", "encryption": "luks"}}, "persistence.encryption", "none"),
    ({"formats": ["disk"]}, "persistence", "needs persistence"),
    ({"formats": ["iso", "cdrom"]}, "formats[1]", "'iso', 'disk' or 'netboot'"),
    ({"formats": ["iso", "netboot"]}, "netboot", "needs netboot.url"),
    ({"netboot": {"url": "http://192.0.2.1/"}}, "netboot", "formats has no 'netboot'"),
    ({"formats": ["netboot"], "netboot": {"url": "ftp://192.0.2.1/"}}, "netboot.url",
     "http:// or https://"),
    ({"formats": ["netboot"], "netboot": {"url": "http://192.0.2.1/a b"}}, "netboot.url",
     "fetch="),
    ({"formats": ["netboot"], "netboot": {"url": "http://192.0.2.1/$(reboot)"}},
     "netboot.url", "fetch="),
    ({"formats": ["netboot"], "netboot": {"url": "http://u:p@192.0.2.1/"}}, "netboot.url",
     "fetch="),
    ({"formats": ["netboot"], "netboot": {"url": "http://192.0.2.1/"},
      "squashfs": {"layout": "layered"}}, "squashfs", "one squashfs"),
    ({"formats": []}, "formats", "at least one"),
    ({"formats": ["iso", "iso"]}, "formats", "at most once"),
    ({"boot": {"default": "persistence"}}, "boot", "needs persistence"),
])
def test_bad_formats_and_persistence_name_the_key(data: dict[str, object], key: str,
                                                   words: str) -> None:
    with pytest.raises(ConfigError) as err:
        cfg(**data)
    assert f"demo.yaml: {key}: " in str(err.value) and words in str(err.value), err.value


def test_persistence_entries_in_the_menu() -> None:
    config = cfg(formats=["iso", "disk"], persistence={"size": "1GiB"},
                 boot={"default": "persistence"})
    menu = build_menu(config)
    entry = menu.entry("persistence")
    assert entry.label == "Live system (persistence)" and menu.default == "persistence"
    assert "persistence" in entry.cmdline and not any(
        a.startswith("persistence-label") for a in entry.cmdline)
    assert entry.cmdline[-1].startswith("console=")  # serial consoles stay last
    labelled = build_menu(cfg(persistence={"size": "1GiB", "label": "keep"}))
    assert "persistence-label=keep" in labelled.entry("persistence").cmdline
    assert [e.id for e in build_menu(cfg()).entries()] == ["live", "failsafe"]
    assert config.public_dump()["persistence"]["size"] == "1GiB"


def test_the_persistence_partition_is_ext4_with_its_label_and_conf(tmp_path: Path) -> None:
    runner = Runner(BuildLog())
    images = []
    for name in ("one", "two"):
        image = disk.make_persistence(runner, tmp_path / name, size=16 * 2**20, label="keep",
                                      fs_uuid=disk.filesystem_uuid("id", "keep"),
                                      epoch=1790000000)
        images.append(image.read_bytes())
    assert images[0] == images[1]  # reproducible: fixed UUID, hash seed and times
    superblock = images[0][1024:2048]
    assert superblock[0x38:0x3A] == b"\x53\xef"  # the ext2/3/4 magic
    assert superblock[0x78:0x88].rstrip(b"\0") == b"keep"
    conf = subprocess.run(["debugfs", "-R", "cat /persistence.conf", str(tmp_path / "two" /
                           "persistence.ext4")], capture_output=True, text=True, check=True)
    assert conf.stdout == "/ union\n"


def test_the_disk_image_appends_the_partition_after_the_efi_one() -> None:
    argv = iso.xorriso_command(Path("m"), Path("o.img"), volume_id="v", epoch=0,
                               efi_image=Path("m/boot/grub/efi.img"), isohdpfx=None,
                               appended=[(3, "0x83", Path("disk/persistence.ext4"))])
    efi = argv.index("0xef")
    assert argv[efi + 2:efi + 6] == ["-append_partition", "3", "0x83", "disk/persistence.ext4"]
    assert argv[-1] == "-commit"
