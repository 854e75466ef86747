"""When a layered build may take its initramfs from the cache, and the round trip."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from deblive.build import basecache, initramfsreuse
from deblive.host.imagetree import ImageTree
from tests.unit import conftest

# What a kept initramfs holds, as image paths (from lsinitramfs in a real build).
LISTED = frozenset({"/usr/bin/kmod", "/usr/lib/x86_64-linux-gnu/libc.so.6",
                    "/usr/lib/live/boot/9990-main.sh"})


@pytest.mark.parametrize(("path", "reaches"), [
    ("/usr/bin/kmod", True),  # a file it holds
    ("/usr/lib/x86_64-linux-gnu/libc.so.6", True),
    ("/etc/initramfs-tools/modules", True),
    ("/etc/default/keyboard", True),
    ("/etc/modprobe.d/blacklist.conf", True),
    ("/boot/vmlinuz-6.1.0-1-amd64", True),
    ("/usr/lib/modules/6.1.0-1-amd64/kernel/fs/new.ko", True),  # read whole
    ("/lib/firmware/new.bin", True),
    ("/usr/share/initramfs-tools/hooks/newhook", True),
    ("/boot/initrd.img-6.1.0-1-amd64", False),  # its own output
    ("/usr/bin/hello", False),  # a package's new program
    ("/usr/share/doc/hello/copyright", False),
    ("/etc/motd", False),
    ("/etc/apt/sources.list.d/debian.sources", False),
    ("/home/user/notes", False),
    ("/var/lib/dpkg/status", False),
])
def test_what_may_reach_the_initramfs(path: str, reaches: bool) -> None:
    assert initramfsreuse.may_reach_initramfs(path, LISTED) is reaches


def _layer(root: Path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    with ImageTree(root) as layer:
        return initramfsreuse.inputs_digest([layer], LISTED)


def test_the_digest_follows_only_what_may_reach_it(tmp_path: Path) -> None:
    files = {"etc/motd": "hello", "usr/bin/kmod": "kmod", "home/u/a": "x"}
    first = _layer(tmp_path / "a", files)
    # A package's files and a hook's notes: the same inputs.
    assert _layer(tmp_path / "b", {**files, "etc/motd": "other", "home/u/b": "y",
                                   "usr/bin/hello": "hi", "usr/share/doc/hello/c": "c",
                                   "boot/initrd.img-6.1": "made"}) == first
    assert _layer(tmp_path / "c", {**files, "etc/initramfs-tools/modules": "loop"}) != first
    assert _layer(tmp_path / "d", {**files, "usr/bin/kmod": "another kmod"}) != first
    assert _layer(tmp_path / "e", {**files, "usr/lib/modules/6.1/extra/new.ko": "m"}) != first
    (tmp_path / "f/usr").mkdir(parents=True)
    (tmp_path / "f/usr/lib").symlink_to("/etc/passwd")  # a link is recorded, not followed
    os.mknod(tmp_path / "f/usr/bin", 0o600 | 0o020000, 0)  # whiteout: /usr/bin deleted
    (tmp_path / "g").mkdir()
    empty = _layer(tmp_path / "g", {})
    with ImageTree(tmp_path / "f") as layer:
        assert initramfsreuse.inputs_digest([layer], LISTED) != empty
    (tmp_path / "f/usr/lib").unlink()
    with ImageTree(tmp_path / "f") as layer:
        assert initramfsreuse.inputs_digest([layer], LISTED) != empty


def test_a_directory_made_anew_counts_a_copied_up_one_does_not(tmp_path: Path) -> None:
    plain = _layer(tmp_path / "a", {"usr/lib/x86_64-linux-gnu/other.so": "x"})
    (tmp_path / "b/usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (tmp_path / "b/usr/lib/x86_64-linux-gnu/other.so").write_text("x")
    os.setxattr(tmp_path / "b/usr/lib/x86_64-linux-gnu", "trusted.overlay.opaque", b"y")
    with ImageTree(tmp_path / "b") as layer:
        assert initramfsreuse.inputs_digest([layer], LISTED) != plain  # it hides libc.so.6


def _digest(*roots: Path) -> str:
    with contextlib.ExitStack() as stack:
        layers = [stack.enter_context(ImageTree(root)) for root in roots]
        return initramfsreuse.inputs_digest(layers, LISTED)


def test_layers_over_the_base_digest_as_the_tree_they_make(tmp_path: Path) -> None:
    """A cached package layer and the build's upper directory count as one layer
    would: the higher one's entry wins, and what it hides counts no more."""
    packages, upper, merged = (tmp_path / n for n in ("packages", "upper", "merged"))
    _layer(packages, {"usr/bin/kmod": "kmod 2", "etc/modprobe.d/a.conf": "a",
                      "usr/bin/hello": "hi"})
    _layer(upper, {"etc/modprobe.d/a.conf": "b", "etc/motd": "hook"})
    _layer(merged, {"usr/bin/kmod": "kmod 2", "etc/modprobe.d/a.conf": "b",
                    "usr/bin/hello": "hi", "etc/motd": "hook"})
    assert _digest(packages, upper) == _digest(merged)
    assert _digest(packages, upper) != _digest(upper)  # the package layer's kmod counts
    # The upper directory deletes the package layer's kmod: a whiteout replaces it.
    gone = tmp_path / "gone"
    (gone / "usr/bin").mkdir(parents=True)
    os.mknod(gone / "usr/bin/kmod", 0o600 | 0o020000, 0)
    assert _digest(packages, gone) != _digest(packages)
    flat = tmp_path / "flat"
    _layer(flat, {"etc/modprobe.d/a.conf": "a"})
    (flat / "usr/bin").mkdir(parents=True)
    os.mknod(flat / "usr/bin/kmod", 0o600 | 0o020000, 0)
    assert _digest(packages, gone) == _digest(flat)
    # A directory made anew hides what the package layer put below it.
    opaque = tmp_path / "opaque"
    _layer(opaque, {"etc/modprobe.d/c.conf": "c"})
    os.setxattr(opaque / "etc/modprobe.d", "trusted.overlay.opaque", b"y")
    alone = tmp_path / "alone"
    _layer(alone, {"usr/bin/kmod": "kmod 2", "etc/modprobe.d/c.conf": "c"})
    os.setxattr(alone / "etc/modprobe.d", "trusted.overlay.opaque", b"y")
    assert _digest(packages, opaque) == _digest(alone)


def _built(root: Path) -> Path:
    (root / "boot").mkdir(parents=True)
    (root / "var/lib/initramfs-tools").mkdir(parents=True)
    (root / "boot/initrd.img-6.1").write_bytes(b"initrd")
    (root / "var/lib/initramfs-tools/6.1").write_text("sha1\n")
    return root


def test_store_lookup_restore(tmp_path: Path) -> None:
    cache = basecache.BaseCache(tmp_path / "cache")
    made = tmp_path / "base.squashfs"
    made.write_bytes(b"s")
    entry = cache.store(basecache.base_inputs(conftest.parse({"name": "demo"}), [], "i"),
                        made, "demo", {})
    hook_layer, package_layer, module_layer = (tmp_path / n for n in ("l1", "l2", "l3"))
    (hook_layer / "etc").mkdir(parents=True)
    (hook_layer / "etc/motd").write_text("hook")
    (package_layer / "usr/bin").mkdir(parents=True)
    (package_layer / "usr/bin/hello").write_text("hi")
    (module_layer / "usr/lib/live/boot").mkdir(parents=True)
    (module_layer / "usr/lib/live/boot/9990-main.sh").write_text("changed")
    with ImageTree(_built(tmp_path / "built")) as tree, ImageTree(hook_layer) as layer:
        assert initramfsreuse.lookup(entry, [layer], ["6.1"]) is None
        digest = initramfsreuse.store(entry, [layer], tree, ["6.1"], LISTED)
        found = initramfsreuse.lookup(entry, [layer], ["6.1"])
        assert found is not None and found[1] == digest
        assert initramfsreuse.lookup(entry, [layer], ["6.1", "6.2"]) is None  # another kernel
    stored = found[0]
    assert frozenset((stored / "files.txt").read_text().splitlines()) == LISTED
    with ImageTree(package_layer) as layer:
        assert initramfsreuse.lookup(entry, [layer], ["6.1"]) == found  # a new program only
    with ImageTree(module_layer) as layer:
        assert initramfsreuse.lookup(entry, [layer], ["6.1"]) is None  # a file it holds
    fresh = tmp_path / "fresh"
    (fresh / "boot").mkdir(parents=True)
    with ImageTree(fresh) as tree:
        initramfsreuse.restore(stored, tree, ["6.1"])
    assert (fresh / "boot/initrd.img-6.1").read_bytes() == b"initrd"
    assert (fresh / "var/lib/initramfs-tools/6.1").read_text() == "sha1\n"
    assert entry.size > 6  # the initramfs counts toward the entry's size


def test_the_paths_its_scripts_name_are_inputs(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "usr/share/initramfs-tools/hooks").mkdir(parents=True)
    (root / "usr/sbin").mkdir(parents=True)
    (root / "sbin").symlink_to("usr/sbin")
    (root / "usr/share/initramfs-tools/hooks/live").write_text(
        '#!/bin/sh\n[ -x /sbin/mount.cifs ] && copy_exec /sbin/mount.cifs /sbin\n'
        'cp /etc/hosts "${DESTDIR}/etc"\nfor f in /lib/modules/${version}/x; do :; done\n'
        'manual_add_modules $(find /lib/x86_64-linux-gnu/libnss_dns* 2>/dev/null)\n'
        'copy_file config ${DESTDIR}/etc/x /etc/ignored # ${DESTDIR}/etc/x is not one\n')
    (root / "usr/sbin/mkinitramfs").write_text('. /usr/share/initramfs-tools/hook-functions\n')
    with ImageTree(root) as tree:
        named = initramfsreuse.named_paths(tree)
    assert named == {"/bin/sh", "/usr/sbin/mount.cifs", "/etc/hosts", "/etc/ignored",
                     "/usr/share/initramfs-tools/hook-functions"}
    # A layer that adds a program the hook copies when present: a new initramfs.
    assert initramfsreuse.may_reach_initramfs("/usr/sbin/mount.cifs", LISTED | named)
    assert not initramfsreuse.may_reach_initramfs("/usr/sbin/mount.cifs", LISTED)
