"""The builder VM's disk: a small system of the target release with deblive in it.

Debian's own live images are built inside a VM of the release being built
(the seed, point 4): the tools that make the image (mmdebstrap, dpkg,
mksquashfs, xorriso, grub's and shim's packages) then come from that release,
not from whatever the build host runs. This module makes that VM's disk once
per (release, architecture, deblive version) and keeps it in the cache:

- mmdebstrap of the release with the build tools, a kernel and its initramfs;
- deblive itself and its Python dependencies, installed on the host with
  `pip install --target` for the guest's Python (wheels only, so nothing is
  compiled and the guest needs neither pip nor a network to PyPI) into a
  directory of deblive's own, then copied into the tree;
- deblive-builder-init as PID 1 (data/builder-init.sh): mounts, network,
  shares, one build, power off;
- an ext4 image made from the tree by `mke2fs -d`: no loop device, no mount.

The bootstrapped tree is made of packages: every host-side touch of it goes
through an ImageTree. The cached images are never shared with a guest.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from deblive.apt.keyring import DEBIAN_ARCHIVE_KEYRING
from deblive.apt.pkgcache import PackageCache
from deblive.core.errors import DebliveError
from deblive.core.files import exclusive_lock
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.host import deletion, sandbox
from deblive.host.hostapt import host_architecture
from deblive.host.imagetree import ImageTree
from deblive.model.arch import Arch
from deblive.model.suites import ReleaseTable

# What a build needs inside the builder, beyond the apt variant's base.
BUILDER_PACKAGES = (
    "mmdebstrap", "debootstrap", "squashfs-tools", "xorriso", "mtools", "dosfstools",
    "qemu-user-static", "binfmt-support", "arch-test", "distro-info-data",
    "debian-archive-keyring", "ca-certificates", "python3", "util-linux", "mount", "file",
    "cpio", "zstd", "xz-utils", "gpgv", "gpg", "rsync", "e2fsprogs", "iproute2", "kmod",
    "initramfs-tools", "procps", "apt-utils", "cryptsetup-bin", "grub-common",
)
PYTHON_MIN = (3, 11)
# The oldest release whose Python runs deblive; older targets are built by it
# (the seed: a newer builder may build an older release).
OLDEST_BUILDER = "bookworm"
INIT_PATH = "/usr/local/sbin/deblive-builder-init"
LIB_DIR = "/opt/deblive/lib"
FORMAT = 2  # bump when the image's layout changes
ARCHIVES = "var/cache/apt/archives"


class BuilderImageError(DebliveError):
    pass


@dataclass(frozen=True)
class BuilderImage:
    """A cached builder disk with the kernel and initramfs to boot it directly."""

    directory: Path
    codename: str
    architecture: Arch

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs.img"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def info(self) -> Path:
        return self.directory / "info.json"

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.rootfs, self.kernel, self.initrd, self.info))


def builder_codename(codename: str, releases: ReleaseTable) -> str:
    """The builder's release: the target's own, unless its Python is too old for deblive."""
    return OLDEST_BUILDER if releases.is_older(codename, OLDEST_BUILDER) else codename


def init_script() -> bytes:
    return resources.files("deblive").joinpath("data/builder-init.sh").read_bytes()


def package_dir() -> Path:
    """The deblive package as it runs now."""
    return Path(__file__).resolve().parents[1]


def requirements() -> list[str]:
    """deblive's own runtime requirements (no extras), as pip specifiers."""
    try:
        declared = importlib.metadata.requires("deblive") or []
    except importlib.metadata.PackageNotFoundError:
        declared = []
    return sorted(r for r in declared if "extra ==" not in r)


def source_digest() -> str:
    """Digest of the deblive package as it runs now: a changed file means a new builder."""
    digest = hashlib.sha256()
    root = package_dir()
    for path in sorted(root.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(codename: str, architecture: Arch) -> str:
    blob = json.dumps({
        "format": FORMAT, "codename": codename, "architecture": str(architecture),
        "packages": BUILDER_PACKAGES, "requirements": requirements(),
        "deblive": source_digest(),
    }, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def mmdebstrap_argv(codename: str, architecture: Arch, tree: Path, mirror: str) -> list[str]:
    """The builder's bootstrap; the package cache is bound in by the sandbox beforehand."""
    return [
        "mmdebstrap", "--mode=root", "--variant=apt", f"--architectures={architecture}",
        f"--keyring={DEBIAN_ARCHIVE_KEYRING}", "--components=main",
        "--aptopt=Acquire::Retries \"3\"", "--skip=download/empty", "--skip=check/empty",
        f"--include={','.join((*BUILDER_PACKAGES, architecture.kernel_package))}",
        codename, str(tree), mirror,
    ]


def guest_python(tree: ImageTree) -> tuple[int, int]:
    """The guest's python3 version, read from its /usr/bin/python3 link."""
    target = tree.readlink("/usr/bin/python3")
    if target is None:
        raise BuilderImageError("the builder tree has no /usr/bin/python3 link")
    match = re.search(r"python(\d+)\.(\d+)$", target)
    if match is None:
        raise BuilderImageError(f"cannot tell the builder's Python version from {target!r}")
    return int(match.group(1)), int(match.group(2))


def pip_target_argv(target: Path, version: tuple[int, int], machine: str,
                    reqs: list[str]) -> list[str]:
    """pip for another interpreter: binary wheels for its version and platform only."""
    tag = f"{version[0]}{version[1]}"
    argv = [
        sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-compile",
        "--target", str(target), "--only-binary=:all:", "--implementation", "cp",
        "--python-version", f"{version[0]}.{version[1]}",
        "--abi", f"cp{tag}", "--abi", "abi3", "--abi", "none",
    ]
    for plat in ("manylinux2014", "manylinux_2_17", "manylinux_2_28", "linux"):
        argv += ["--platform", f"{plat}_{machine}"]
    return [*argv, *reqs]


def _tree_bytes(tree: Path) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in filenames + dirnames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512 + 4096
    return total


def _newest(tree: ImageTree, prefix: str) -> str:
    found = sorted(tree.glob("/boot", prefix + "*"))
    if not found:
        raise BuilderImageError(f"the builder tree has no /boot/{prefix}*")
    return found[-1]


def install_deblive(tree: ImageTree, staging: Path, runner: Runner) -> tuple[int, int]:
    """deblive and its dependencies into LIB_DIR, and a /usr/local/bin/deblive to run it."""
    version = guest_python(tree)
    if version < PYTHON_MIN:
        raise BuilderImageError(
            f"the builder's Python is {version[0]}.{version[1]}; deblive needs "
            f"{PYTHON_MIN[0]}.{PYTHON_MIN[1]} or newer"
        )
    staging.mkdir(parents=True)
    runner.run(pip_target_argv(staging, version, os.uname().machine, requirements()),
               what="install deblive's Python dependencies for the builder")
    tree.copy_tree_in(staging, LIB_DIR)
    source = staging.parent / "deblive-source"
    source.mkdir()
    for path in package_dir().rglob("*"):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        dest = source / path.relative_to(package_dir())
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())
    tree.copy_tree_in(source, f"{LIB_DIR}/deblive")
    tree.mkdir("/usr/local/bin")
    tree.write("/usr/local/bin/deblive",
               f"#!/bin/sh\nPYTHONPATH={LIB_DIR} exec python3 -m deblive \"$@\"\n", 0o755)
    return version


def configure(tree: ImageTree) -> None:
    """PID 1, hostname (the seed's 'sudo: unable to resolve host' warning), no apt lists."""
    tree.mkdir("/usr/local/sbin")
    tree.write(INIT_PATH, init_script(), 0o755)
    tree.write("/etc/hostname", "deblive-builder\n")
    tree.write("/etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tdeblive-builder\n")
    for path in tree.glob("/var/lib/apt/lists", "*"):
        if tree.is_file(path) and not tree.is_symlink(path):
            tree.unlink(path)


def ensure(codename: str, mirror: str, cache: Path, log: BuildLog, runner: Runner,
           rebuild: bool = False) -> BuilderImage:
    """The builder image for codename: from the cache, or made now (a few minutes)."""
    architecture = host_architecture()
    key = cache_key(codename, architecture)
    builders = cache / "builders"
    builders.mkdir(parents=True, exist_ok=True)
    os.chmod(builders, 0o700)
    image = BuilderImage(builders / f"{codename}-{architecture}-{key}", codename, architecture)
    with exclusive_lock(builders / ".lock", wait=True, on_wait=lambda: log.info(
            "waiting for another build making the same builder image")):
        if image.complete() and not rebuild:
            log.info(f"builder image {image.directory.name} from the cache")
            return image
        with log.stage("builder-image"):
            _make(image, mirror, cache, log, runner)
        for old in builders.glob(f"{codename}-{architecture}-*"):
            # Outdated images, and what an interrupted making left (under this lock
            # nobody else is making one).
            if old != image.directory and old.is_dir() and not old.is_symlink():
                log.info(f"removing the outdated builder image {old.name}")
                deletion.remove_tree(old)
    return image


def _bootstrap(image: BuilderImage, tmp: Path, mirror: str, cache: Path,
               log: BuildLog, runner: Runner) -> ImageTree:
    tree_dir = tmp / "tree"
    tree_dir.mkdir()
    packages = PackageCache(cache / "archives", tmp / "archives", log)
    packages.stage_in()
    tree = ImageTree(tree_dir)
    try:
        with sandbox.bind_into(tree, packages.archives, ARCHIVES):
            runner.run(mmdebstrap_argv(image.codename, image.architecture, tree_dir, mirror),
                       what="bootstrap the builder")
    except BaseException:
        tree.close()
        raise
    finally:
        sandbox.unmount_below(tree_dir)
        packages.stage_out()
    return tree


def _make(image: BuilderImage, mirror: str, cache: Path, log: BuildLog, runner: Runner) -> None:
    tmp = image.directory.with_name(image.directory.name + ".tmp")
    sandbox.enter_private_mount_namespace()
    deletion.remove_tree(tmp)
    tmp.mkdir(mode=0o700)
    with _bootstrap(image, tmp, mirror, cache, log, runner) as tree:
        python = install_deblive(tree, tmp / "pip", runner)
        configure(tree)
        tree.copy_out(_newest(tree, "vmlinuz-"), tmp / "vmlinuz")
        tree.copy_out(_newest(tree, "initrd.img-"), tmp / "initrd.img")
    size_mib = int(_tree_bytes(tmp / "tree") * 1.3) // (1 << 20) + 512
    runner.run(["mke2fs", "-q", "-t", "ext4", "-L", "deblive-builder", "-d", str(tmp / "tree"),
                "-F", str(tmp / "rootfs.img"), f"{size_mib}M"], what="make the builder's disk")
    for leftover in ("tree", "archives", "pip", "deblive-source"):
        deletion.remove_tree(tmp / leftover)
    info = {
        "codename": image.codename, "architecture": str(image.architecture),
        "python": f"{python[0]}.{python[1]}", "size_mib": size_mib,
        "requirements": requirements(),
    }
    (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    deletion.remove_tree(image.directory)
    tmp.rename(image.directory)
    log.info(f"builder image {image.directory.name}: {size_mib} MiB")
