"""When a layered build may take its initramfs from the cache, and the round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from deblive.build import basecache, initramfsreuse
from deblive.host.imagetree import ImageTree
from tests.unit import conftest


@pytest.mark.parametrize(("path", "reaches"), [
    ("/usr/bin/busybox", True),
    ("/etc/initramfs-tools/modules", True),
    ("/etc/default/keyboard", True),
    ("/etc/modprobe.d/blacklist.conf", True),
    ("/boot/vmlinuz-6.1.0-1-amd64", True),
    ("/etc", True),
    ("/etc/motd", False),
    ("/etc/apt/sources.list.d/debian.sources", False),
    ("/home/user/notes", False),
    ("/var/lib/dpkg/status", False),
    ("/root/.bashrc", False),
])
def test_what_may_reach_the_initramfs(path: str, reaches: bool) -> None:
    assert initramfsreuse.may_reach_initramfs(path) is reaches


def _layer(root: Path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    with ImageTree(root) as layer:
        return initramfsreuse.inputs_digest(layer)


def test_the_digest_follows_only_what_may_reach_it(tmp_path: Path) -> None:
    files = {"etc/motd": "hello", "usr/sbin/policy-rc.d": "exit 101", "home/u/a": "x"}
    first = _layer(tmp_path / "a", files)
    assert _layer(tmp_path / "b", {**files, "etc/motd": "other", "home/u/b": "y"}) == first
    assert _layer(tmp_path / "c", {**files, "etc/initramfs-tools/modules": "loop"}) != first
    assert _layer(tmp_path / "d", {**files, "usr/sbin/policy-rc.d": "exit 0"}) != first
    (tmp_path / "e").mkdir()
    (tmp_path / "e/usr").mkdir()
    (tmp_path / "e/usr/lib").symlink_to("/etc/passwd")  # a link is recorded, not followed
    with ImageTree(tmp_path / "e") as layer, ImageTree(tmp_path / "a") as plain:
        assert initramfsreuse.inputs_digest(layer) != initramfsreuse.inputs_digest(plain)


def test_store_lookup_restore(tmp_path: Path) -> None:
    cache = basecache.BaseCache(tmp_path / "cache")
    made = tmp_path / "base.squashfs"
    made.write_bytes(b"s")
    entry = cache.store(basecache.base_inputs(conftest.parse({"name": "demo"}), [], "i"),
                        made, "demo", {})
    built = tmp_path / "built"
    (built / "boot").mkdir(parents=True)
    (built / "var/lib/initramfs-tools").mkdir(parents=True)
    (built / "boot/initrd.img-6.1").write_bytes(b"initrd")
    (built / "var/lib/initramfs-tools/6.1").write_text("sha1\n")
    assert initramfsreuse.lookup(entry, "d1", ["6.1"]) is None
    with ImageTree(built) as tree:
        initramfsreuse.store(entry, "d1", tree, ["6.1"])
    stored = initramfsreuse.lookup(entry, "d1", ["6.1"])
    assert stored is not None and initramfsreuse.lookup(entry, "d2", ["6.1"]) is None
    assert initramfsreuse.lookup(entry, "d1", ["6.1", "6.2"]) is None  # another kernel
    fresh = tmp_path / "fresh"
    (fresh / "boot").mkdir(parents=True)
    with ImageTree(fresh) as tree:
        initramfsreuse.restore(stored, tree, ["6.1"])
    assert (fresh / "boot/initrd.img-6.1").read_bytes() == b"initrd"
    assert (fresh / "var/lib/initramfs-tools/6.1").read_text() == "sha1\n"
    assert entry.size > 6  # the initramfs counts toward the entry's size
