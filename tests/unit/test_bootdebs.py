"""The boot loader packages from the package cache (build.bootdebs): taken only as apt
fetched them for the same indexes and config, copied (never linked) out of the
chroot's archives."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from deblive.build import bootdebs
from deblive.build.bootdebs import BootDeb

from . import conftest

SHIM = "shim-signed_1.51~1+deb12u1+16.1-2~deb12u1_amd64.deb"
ISOLINUX = "isolinux_3%3a6.04~git20190206.bf6db5b4+dfsg1-3_all.deb"
FILES = {SHIM: b"shim deb\n", ISOLINUX: b"isolinux deb\n"}
NAMES = ["shim-signed", "isolinux"]


def _debs(directory: Path, files: dict[str, bytes] = FILES) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return sorted(directory / name for name in files)


def _recorded(tmp_path: Path) -> list[BootDeb]:
    """A record made from files apt fetched, read back."""
    cache = tmp_path / "cache"
    bootdebs.record(cache, "k", _debs(tmp_path / "fetched"))
    wanted = bootdebs.recorded(cache, "k")
    assert wanted is not None
    return wanted


def test_the_record_holds_name_size_and_hash_of_what_apt_fetched(tmp_path: Path) -> None:
    wanted = _recorded(tmp_path)
    assert sorted(wanted, key=lambda d: d.file) == sorted(
        (BootDeb(n, len(d), hashlib.sha256(d).hexdigest()) for n, d in FILES.items()),
        key=lambda d: d.file)
    assert bootdebs.recorded(tmp_path / "cache", "other") is None
    (tmp_path / "cache" / bootdebs.RECORDS / "bad.json").write_text('[{"file": "../x"}]')
    assert bootdebs.recorded(tmp_path / "cache", "bad") is None


def test_the_key_follows_the_indexes_the_config_and_the_names() -> None:
    config = conftest.parse({"name": "t"})
    key = bootdebs.record_key("idx1", config, NAMES)
    assert key == bootdebs.record_key("idx1", config, NAMES)
    assert key != bootdebs.record_key("idx2", config, NAMES)
    assert key != bootdebs.record_key("idx1", config, NAMES[:1])
    assert key != bootdebs.record_key("idx1", conftest.parse({"name": "t", "architecture": "i386"}),
                                      NAMES)


def test_recorded_packages_are_copied_from_the_archives(tmp_path: Path) -> None:
    wanted = _recorded(tmp_path)
    archives = tmp_path / "archives"
    _debs(archives)
    dest = tmp_path / "bootdebs"
    got = bootdebs.from_archives(wanted, archives, dest)
    assert got == sorted([dest / SHIM, dest / ISOLINUX])
    assert (dest / SHIM).read_bytes() == FILES[SHIM]
    assert os.stat(dest / SHIM).st_ino != os.stat(archives / SHIM).st_ino, "a copy, not a link"


def test_a_file_unlike_the_record_or_missing_is_not_taken(tmp_path: Path) -> None:
    wanted = _recorded(tmp_path)
    archives = tmp_path / "archives"
    _debs(archives, {SHIM: b"tampered\n", ISOLINUX: FILES[ISOLINUX]})
    dest = tmp_path / "d"
    assert bootdebs.from_archives(wanted, archives, dest) is None
    assert not dest.exists()
    (archives / SHIM).unlink()
    assert bootdebs.from_archives(wanted, archives, dest) is None


def test_a_link_or_a_fifo_in_the_archives_is_not_followed(tmp_path: Path) -> None:
    wanted = _recorded(tmp_path)
    archives = tmp_path / "archives"
    _debs(archives, {ISOLINUX: FILES[ISOLINUX]})
    outside = tmp_path / "host-secret"
    outside.write_bytes(FILES[SHIM])  # even the right bytes behind a link are refused
    os.symlink(outside, archives / SHIM)
    assert bootdebs.from_archives(wanted, archives, tmp_path / "d") is None
    (archives / SHIM).unlink()
    os.mkfifo(archives / SHIM)  # would block a reader without O_NONBLOCK
    assert bootdebs.from_archives(wanted, archives, tmp_path / "d") is None


def test_downloaded_packages_go_into_the_archives_as_copies(tmp_path: Path) -> None:
    archives = tmp_path / "archives"
    archives.mkdir()
    downloaded = _debs(tmp_path / "bootdebs")
    (archives / ISOLINUX).write_bytes(b"already there\n")
    bootdebs.into_archives(downloaded, archives)
    assert (archives / SHIM).read_bytes() == FILES[SHIM]
    assert os.stat(archives / SHIM).st_ino != os.stat(tmp_path / "bootdebs" / SHIM).st_ino
    assert (archives / ISOLINUX).read_bytes() == b"already there\n"


def test_only_the_newest_records_are_kept(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    debs = _debs(tmp_path / "fetched")
    for n in range(bootdebs.KEEP_RECORDS + 3):
        bootdebs.record(cache, f"k{n}", debs)
        os.utime(cache / bootdebs.RECORDS / f"k{n}.json", (n, n))
    kept = {p.stem for p in (cache / bootdebs.RECORDS).glob("*.json")}
    assert len(kept) == bootdebs.KEEP_RECORDS
    assert "k0" not in kept and f"k{bootdebs.KEEP_RECORDS + 2}" in kept
