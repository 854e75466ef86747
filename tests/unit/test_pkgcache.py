from __future__ import annotations

from pathlib import Path

import pytest

from deblive.apt.pkgcache import PackageCache
from deblive.core.log import BuildLog


def test_links_in_counts_and_links_back(tmp_path: Path) -> None:
    shared, work = tmp_path / "cache", tmp_path / "work" / "archives"
    shared.mkdir()
    (shared / "a_1_all.deb").write_bytes(b"a" * 10)
    cache = PackageCache(shared, work, BuildLog())
    cache.stage_in()
    assert cache.archives == work
    linked = work / "a_1_all.deb"
    assert linked.stat().st_ino == (shared / "a_1_all.deb").stat().st_ino  # a link, not a copy
    (work / "b_2_all.deb").write_bytes(b"b" * 25)  # what apt downloaded
    linked.unlink()  # a hook's apt-get clean must not empty the shared cache
    assert cache.stage_out() == 25
    assert (shared / "a_1_all.deb").exists()
    assert (shared / "b_2_all.deb").read_bytes() == b"b" * 25
    # A second build downloads nothing.
    again = PackageCache(shared, tmp_path / "w2" / "archives", BuildLog())
    again.stage_in()
    assert again.stage_out() == 0


def test_other_filesystem_uses_the_shared_directory_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared, work = tmp_path / "cache", tmp_path / "work" / "archives"
    shared.mkdir()
    (shared / "a_1_all.deb").write_bytes(b"a")
    monkeypatch.setattr(PackageCache, "_same_filesystem", lambda self: False)
    cache = PackageCache(shared, work, BuildLog())
    cache.stage_in()
    assert cache.archives == shared
    (shared / "new_1_all.deb").write_bytes(b"n" * 7)
    assert cache.stage_out() == 7
    assert cache._lock is None


def test_only_regular_package_files_move_between_caches(tmp_path: Path) -> None:
    shared, work = tmp_path / "cache", tmp_path / "work" / "archives"
    shared.mkdir()
    secret = tmp_path / "host-secret"
    secret.write_text("not a package")
    (shared / "planted_1_all.deb").symlink_to(secret)
    cache = PackageCache(shared, work, BuildLog())
    cache.stage_in()
    assert not (work / "planted_1_all.deb").exists()
    # What the chroot leaves in its archives directory: a symlink to a host
    # file, a file not named like a package, and one real download.
    (work / "evil_1_all.deb").symlink_to(secret)
    (work / "notes.txt").write_text("x")
    (work / "good_1_all.deb").write_bytes(b"g" * 3)
    assert cache.stage_out() == 3
    assert sorted(p.name for p in shared.iterdir()) == ["good_1_all.deb", "planted_1_all.deb"]
    assert not (shared / "evil_1_all.deb").exists()
