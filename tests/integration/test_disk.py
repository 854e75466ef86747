"""All three formats from one build: the ISO, `<name>.img` and the netboot tree share
one squashfs; the disk image's partition table and persistence partition are
read from the file, the persistence partition keeps a file across a reboot of
the same stick, and the netboot tree boots over PXE with Secure Boot, its
squashfs fetched over HTTP."""

from __future__ import annotations

import hashlib
import json
import socket
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
    config.write_text("name: disktest\nformats: [iso, disk, netboot]\n"
                      "persistence: {size: 64MiB}\n"
                      f"netboot: {{url: 'http://10.0.2.2:{_free_port()}/'}}\n"
                      "boot: {default: persistence, timeout: 1}\n"
                      "squashfs: {compression: zstd, level: 3}\n")
    result = build(config, base)
    assert result.returncode == 0, result.output[-4000:]
    return result


def _free_port() -> int:
    """A port free now on 127.0.0.1: the PXE test serves the tree there (qemu's guest
    reaches it as 10.0.2.2), so the tree is built with it in netboot.url."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    # uefi-usb: Secure Boot's SMM firmware on a USB stick doubles each boot under TCG
    # (5 minutes here); the Secure Boot chain is booted in test_iso.py and over PXE.
    proc = run_deblive("test", _image(disk_build), "--persistence", "--mode", "uefi-usb",
                       "--output", out, timeout=2400)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    boot2 = out / "persistence-uefi-usb" / "boot2" / "results.json"
    [mode] = json.loads(boot2.read_text())["modes"]
    assert mode["result"] == "pass", mode
    names = {c["name"] for c in mode["checks"] if c["ok"]}
    assert any("deblive-persistence-check" in n for n in names), names
    assert {"firmware", "sudo"} <= names, names


def test_the_netboot_tree_carries_both_loaders_the_same_squashfs_and_fetch_menus(
        disk_build: Build, tmp_path: Path) -> None:
    tree = disk_build.path("netboot")
    for name in ("pxelinux.0", "ldlinux.c32", "vesamenu.c32", "pxelinux.cfg/default",
                 "pxelinux.cfg/menu.cfg", "shimx64.efi", "grubx64.efi", "mmx64.efi",
                 "grub/grub.cfg", "live/vmlinuz", "live/initrd.img"):
        assert (tree / name).is_file(), name
    squashfs = tree / "live/filesystem.squashfs"
    assert squashfs.read_bytes() == disk_build.path("filesystem.squashfs").read_bytes()
    # Debian's signed network grub (its prefix is /grub), not the CD one; the same shim.
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(disk_build.iso),
                    "-extract", "/EFI/boot", str(tmp_path / "efi")], check=True,
                   capture_output=True)
    net_grub = (tree / "grubx64.efi").read_bytes()
    assert net_grub[:2] == b"MZ" and net_grub != (tmp_path / "efi/grubx64.efi").read_bytes()
    assert (tree / "shimx64.efi").read_bytes() == (tmp_path / "efi/bootx64.efi").read_bytes()
    entries = json.loads((tree / "boot-entries.json").read_text())
    url = entries["netboot"]["url"]
    assert entries["netboot"]["boot_files"] == {"bios": "pxelinux.0", "uefi": "shimx64.efi"}
    fetch = f"fetch={url}live/filesystem.squashfs"
    for menu in ("pxelinux.cfg/menu.cfg", "grub/grub.cfg"):
        text = (tree / menu).read_text()
        assert text.count(fetch) == 3, menu  # live, persistence, failsafe
        assert "install" not in text.lower(), menu  # d-i's initrd looks for a CD
    assert "INCLUDE /pxelinux.cfg/menu.cfg" in (tree / "pxelinux.cfg/default").read_text()
    sums = disk_build.path("SHA256SUMS").read_text()
    digest = hashlib.sha256(squashfs.read_bytes()).hexdigest()
    assert f"{digest}  netboot/live/filesystem.squashfs" in sums
    report = json.loads(disk_build.path("report.json").read_text())
    names = [o["name"] for o in report["outputs"]]
    assert "netboot/pxelinux.0" in names and "netboot/grub/grub.cfg" in names


def test_the_netboot_tree_boots_over_pxe_with_secure_boot(disk_build: Build) -> None:
    out = ARTIFACTS / "pxe"
    proc = run_deblive("test", disk_build.path("netboot"), "--mode", "pxe-secureboot",
                       "--output", out, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    [mode] = json.loads((out / "results.json").read_text())["modes"]
    checks = {c["name"]: c for c in mode["checks"]}
    for name in ("fetched", "http-fetch", "secure-boot", "firmware", "system-running"):
        assert checks[name]["ok"], checks[name]
    serial = Path(mode["serial_log"]).read_text(errors="replace")
    assert "GNU GRUB" in serial and "Station IP address" in serial


def test_an_encrypted_persistence_partition_is_luks2_opened_by_its_passphrase(
        tmp_path: Path) -> None:
    """The partition deblive encrypts offline (no device-mapper here): a LUKS2 volume
    with the derived UUID and the label, whose keyslot the passphrase opens and
    another does not; the key file is gone. Booting it is the extended tier's."""
    from deblive.build.stages import disk
    from deblive.core.log import BuildLog
    from deblive.core.runner import Runner

    image = disk.make_persistence(Runner(BuildLog()), tmp_path, size=32 * 2**20, label="keep",
                                  fs_uuid=disk.filesystem_uuid("id", "keep"),
                                  epoch=1790000000, passphrase="correct horse")
    assert image.stat().st_size == 32 * 2**20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content", "persistence.ext4"]
    dump = subprocess.run(["cryptsetup", "luksDump", str(image)], capture_output=True,
                          text=True, check=True).stdout
    assert "Version:       \t2" in dump and "argon2id" in dump
    assert "Label:         \tkeep" in dump
    for phrase, status in (("correct horse", 0), ("wrong horse", 2)):
        key = tmp_path / "key"
        key.write_text(phrase)
        proc = subprocess.run(["cryptsetup", "open", "--test-passphrase", "--disable-locks",
                               "--key-file", str(key), str(image)], capture_output=True)
        assert proc.returncode == status, proc.stderr
    assert b"/ union" not in image.read_bytes()  # persistence.conf is encrypted
