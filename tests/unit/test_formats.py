"""formats and persistence: sizes with IEC units, the checks that name the key, the
persistence boot entries and the disk image's persistence partition (mke2fs -d)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from deblive.build.stages import disk, iso
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.model.bootmenu import build_menu
from deblive.model.config import ConfigError, ImageConfig
from deblive.model.packages import PackageSelection
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
    ({"persistence": {"size": "1GiB", "encryption": "aes"}}, "persistence.encryption",
     "'none' or 'luks'"),
    ({"persistence": {"size": "1GiB", "encryption": "luks"}}, "persistence.passphrase",
     "needs a passphrase"),
    ({"persistence": {"size": "1GiB", "encryption": "luks", "passphrase": "short"}},
     "persistence.passphrase", "at least 8"),
    ({"persistence": {"size": "1GiB", "encryption": "luks", "passphrase": "line\nbreak!"}},
     "persistence.passphrase", "control characters"),
    ({"persistence": {"size": "1GiB", "passphrase": "long enough"}},
     "persistence.passphrase", "encryption is not luks"),
    ({"persistence": {"size": "16MiB", "encryption": "luks", "passphrase": "long enough"}},
     "persistence.passphrase", "at least 32MiB"),
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
    images: list[bytes] = []
    for name in ("one", "two"):
        if images:  # a second later: persistence.conf on the host is written at another time
            time.sleep(1.1)
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


def test_encrypted_persistence_brings_cryptsetup_and_asks_live_boot_for_luks() -> None:
    config = cfg(formats=["disk"], persistence={"size": "64MiB", "encryption": "luks",
                                                "passphrase": "correct horse"})
    assert {"cryptsetup", "cryptsetup-initramfs"} <= set(PackageSelection.from_config(config).live)
    assert "cryptsetup" not in PackageSelection.from_config(cfg()).live
    assert build_menu(config).entry("persistence").cmdline[:6] == (
        "boot=live", "components", "quiet", "splash", "persistence",
        "persistence-encryption=luks")
    dumped = str(config.public_dump())
    assert "correct horse" not in dumped and "**" in dumped


def test_the_passphrase_reaches_cryptsetup_in_a_file_only() -> None:
    argv = disk.luks_argv(Path("/w/disk/persistence.ext4"), Path("/w/disk/passphrase"),
                          "keep", "0b8a3f4e-1111-4222-8333-944445555666")
    assert argv[:4] == ["cryptsetup", "reencrypt", "--encrypt", "--type"]
    assert argv[argv.index("--reduce-device-size") + 1] == "16M"
    assert argv[argv.index("--key-file") + 1] == "/w/disk/passphrase"
    assert "--disable-locks" in argv and argv[-1] == "/w/disk/persistence.ext4"
    mke2fs = disk.mke2fs_argv(Path("p"), Path("c"), "keep", "u", 48 * 2**20)
    assert mke2fs[-2:] == ["p", "49152k"]  # the file system leaves the header's room
