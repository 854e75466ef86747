"""The image tree is foreign ground: what it plants never reaches the host.

Every host-side step that touches the tree runs here against a tree in which
each path it touches is an absolute symlink (or has a symlinked parent)
pointing at sentinel files outside the tree. Afterwards the sentinels are
unchanged and nothing of them is in any output. The steps that need a real
chroot (useradd, the hook library, initramfs) are proven the same way by a
real build whose hook plants such links (tests/integration/test_safety.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from deblive.build import bootfiles, chroot, installer
from deblive.build.context import BuildContext, WorkTree
from deblive.build.report import build_report
from deblive.build.stages import bootstrap, clean, medium, sources
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.host.imagetree import ImageTree, TreeError
from deblive.model.arch import Arch

from . import conftest

SECRET = "HOST-SENTINEL-do-not-copy"


class Sentinels:
    """Host files and a host directory the tree's links point at."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "host"
        (self.dir / "ssh").mkdir(parents=True)
        self.file = self.dir / "file"
        self.file.write_text(SECRET)
        (self.dir / "ssh" / "ssh_host_rsa_key").write_text(SECRET)
        (self.dir / "localtime").write_text(SECRET)
        self.before = self.digest()

    def digest(self) -> dict[str, tuple[str, int]]:
        out = {}
        for path in sorted(self.dir.rglob("*")):
            st = path.lstat()
            data = path.read_bytes() if path.is_file() else b""
            out[str(path)] = (hashlib.sha256(data).hexdigest(), st.st_mode)
        return out

    def intact(self) -> bool:
        return self.digest() == self.before


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[tuple[ImageTree, Sentinels, Path]]:
    """A tree where every path the host-side steps touch leads to the sentinels."""
    host = Sentinels(tmp_path)
    root = tmp_path / "rootfs"
    dirs = ("etc/apt/sources.list.d", "etc/apt/apt.conf.d", "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial", "var/log/apt", "var/lib/dpkg", "usr/local/sbin",
            "usr/sbin", "boot", "var/cache/debconf", "etc/systemd/system", "var/lib/dbus",
            "usr/share/zoneinfo", "lib/modules/6.1.0-1-amd64")
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    links = {
        "etc/machine-id": host.file,
        "etc/localtime": host.dir / "localtime",
        "etc/resolv.conf": host.file,
        "etc/hostname": host.file,
        "etc/ssh": host.dir / "ssh",  # a symlinked parent: keys are globbed in it
        "etc/apt/sources.list": host.file,
        "etc/apt/sources.list.d/old.sources": host.file,
        "etc/apt/apt.conf.d/00deblive-dpkg-path": host.file,
        "var/lib/apt/lists/mirror_InRelease": host.file,
        "var/log/dpkg.log": host.file,
        "var/log/apt/term.log": host.file,
        "var/log/apt/history.log": host.file,
        "var/cache/apt/pkgcache.bin": host.file,
        "var/cache/apt/archives/x_1_all.deb": host.file,
        "var/cache/debconf/config.dat-old": host.file,
        "var/lib/dbus/machine-id": host.file,
        "usr/sbin/policy-rc.d": host.file,
        "usr/local/sbin/update-initramfs": host.file,
        "tmp": host.dir,  # a whole directory to empty, linked out
        "var/tmp": host.dir,
        "etc/systemd/system/deblive-ssh-hostkeys.service": host.file,
        "var/lib/dpkg/status": host.file,
    }
    for rel, target in links.items():
        os.symlink(target, root / rel)
    (root / "boot/vmlinuz-6.1.0-1-amd64").write_bytes(b"kernel")
    (root / "usr/sbin/sshd").write_bytes(b"")
    os.symlink(host.file, root / "boot/initrd.img-6.1.0-1-amd64")
    with ImageTree(root) as tree:
        yield tree, host, root


def no_secret_in(directory: Path) -> bool:
    return not any(SECRET.encode() in p.read_bytes() for p in directory.rglob("*")
                   if p.is_file() and not p.is_symlink())


def test_cleaning_removes_links_and_follows_none(planted: tuple[ImageTree, Sentinels, Path],
                                                 tmp_path: Path) -> None:
    tree, host, root = planted
    assert clean.keep_build_logs(tree, tmp_path / "logs") == list(clean.BUILD_LOGS)
    clean.clean_tree(tree)
    assert host.intact()
    assert no_secret_in(tmp_path / "logs")
    for rel in ("var/log/dpkg.log", "var/cache/apt/archives/x_1_all.deb",
                "var/lib/dbus/machine-id", "var/cache/apt/pkgcache.bin"):
        assert not os.path.lexists(root / rel), rel
    # /tmp and /var/tmp lead out of the image: left alone, not emptied through.
    assert os.path.islink(root / "tmp") and os.path.islink(root / "var/tmp")
    # machine-id: a link out is replaced by the image's own empty file.
    assert (root / "etc/machine-id").is_file() and not (root / "etc/machine-id").is_symlink()
    assert (root / "etc/machine-id").read_text() == ""
    # the ssh unit is written in the image, its link to a host file replaced
    assert not (root / "etc/systemd/system/deblive-ssh-hostkeys.service").is_symlink()


def test_the_package_list_is_never_read_through_a_link(
    planted: tuple[ImageTree, Sentinels, Path]
) -> None:
    tree, host, _root = planted
    with pytest.raises(TreeError):
        clean.packages_list(tree)  # /var/lib/dpkg/status leads out of the image
    assert host.intact()


def test_sources_are_written_in_the_image(planted: tuple[ImageTree, Sentinels, Path]) -> None:
    tree, host, root = planted
    ctx = context(tree, root)
    sources.use_build_mirror(ctx)
    sources.ImageSources().run(ctx)
    assert host.intact()
    assert "Types: deb" in (root / sources.IMAGE_SOURCES.lstrip("/")).read_text()
    assert not os.path.lexists(root / "var/lib/apt/lists/mirror_InRelease")


def test_temporary_changes_replace_links_and_put_back_the_images_own(
    planted: tuple[ImageTree, Sentinels, Path]
) -> None:
    tree, host, root = planted
    runner = Runner(BuildLog())
    with chroot.service_block(tree, runner), chroot.initramfs_deferred(tree, runner), \
            chroot.host_resolv_conf(tree):
        assert (root / "usr/sbin/policy-rc.d").read_text() == chroot.POLICY_RC_D
        assert not (root / "usr/local/sbin/update-initramfs").is_symlink()
        assert not (root / "etc/resolv.conf").is_symlink()
    assert host.intact()
    # The image's own (links, as they were) are back.
    assert os.readlink(root / "usr/sbin/policy-rc.d") == str(host.file)
    assert os.readlink(root / "etc/resolv.conf") == str(host.file)


def test_a_kernel_whose_initrd_leads_out_is_not_copied(
    planted: tuple[ImageTree, Sentinels, Path]
) -> None:
    tree, host, _root = planted
    with pytest.raises(medium.MediumError, match="no initrd"):
        medium.find_kernels(tree)
    assert host.intact()


def test_host_copies_are_dropped_only_as_the_images_own_files(
    planted: tuple[ImageTree, Sentinels, Path]
) -> None:
    tree, host, root = planted
    bootstrap.drop_host_copies(tree)
    assert host.intact() and os.path.islink(root / "etc/hostname")


def test_the_report_reads_no_host_file(planted: tuple[ImageTree, Sentinels, Path]) -> None:
    tree, host, root = planted
    report = build_report(context(tree, root), dt.datetime.now(dt.UTC), [], "failed")
    assert report["packages"]["count"] == 0 and SECRET not in str(report)
    assert host.intact()


def test_boot_and_installer_files_are_taken_out_of_a_package_only_as_its_own(
    tmp_path: Path
) -> None:
    host = Sentinels(tmp_path)
    unpacked = tmp_path / "unpacked"
    (unpacked / "usr/lib/shim").mkdir(parents=True)
    (unpacked / "usr/lib/shim/shimaa64.efi.signed").symlink_to(host.file)
    with pytest.raises(bootfiles.BootFilesError):
        bootfiles.locate(unpacked, tmp_path / "files", Arch.ARM64)
    images = unpacked / "usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64"
    images.mkdir(parents=True)
    (images / "linux").symlink_to(host.file)
    (images / "initrd.gz").symlink_to(host.file)
    with pytest.raises(installer.InstallerError):
        installer.from_unpacked(unpacked, Arch.AMD64, tmp_path / "out", "pkg", graphical=False)
    assert host.intact()
    assert not (tmp_path / "out").exists() or no_secret_in(tmp_path / "out")


def test_writes_never_follow_the_last_component(tmp_path: Path) -> None:
    host = Sentinels(tmp_path)
    root = tmp_path / "r"
    (root / "etc").mkdir(parents=True)
    (root / "etc/f").symlink_to(host.file)
    (root / "dev").mkdir()
    os.mkfifo(root / "dev/fifo")  # what a reader would block on forever
    (root / "etc/fifo").symlink_to("/dev/fifo")
    with ImageTree(root) as tree:
        tree.write("/etc/f", "image")
        with pytest.raises(TreeError):
            tree.chmod("/etc/fifo", 0o777)
        with pytest.raises(TreeError):
            tree.truncate("/etc/fifo")
        with pytest.raises(TreeError):
            tree.append("/etc/fifo", "x")
        with pytest.raises(TreeError, match="not a regular file"):
            tree.read_bytes("/etc/fifo")
        tree.unlink("/etc/fifo")
    assert host.intact() and (root / "etc/f").read_text() == "image"


def context(tree: ImageTree, root: Path) -> BuildContext:
    """A build context whose rootfs is root (the work tree is its parent)."""
    log = BuildLog()
    ctx = BuildContext(conftest.parse({"name": "t"}), log, Runner(log), WorkTree(root.parent),
                       root.parent / "out", root.parent / "cache")
    ctx._tree = tree
    return ctx


def test_a_walk_reports_links_and_never_follows_them(
        planted: tuple[ImageTree, Sentinels, Path]) -> None:
    tree, host, _root = planted
    seen = dict(tree.walk())
    assert "/etc/ssh" in seen and "/tmp" in seen  # reported as links
    assert not any(path.startswith(("/etc/ssh/", "/tmp/", "/var/tmp/")) for path in seen)
    assert list(seen) == sorted(seen, key=lambda p: p.split("/"))  # depth first, names sorted
    pruned = [path for path, _st in tree.walk(descend=lambda p: not p.startswith("/var"))]
    assert "/etc/apt/sources.list" in pruned and not any(p.startswith("/var") for p in pruned)
    assert [p for p, _st in tree.walk("/boot")] == ["/boot/initrd.img-6.1.0-1-amd64",
                                                   "/boot/vmlinuz-6.1.0-1-amd64"]
    assert host.intact()
