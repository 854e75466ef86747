"""The builder VM's disk: a small system of the target release with deblive in it.

Debian's own live images are built inside a VM of the release being built
(the seed, point 4): the tools that make the image (mmdebstrap, dpkg,
mksquashfs, xorriso, grub's and shim's packages) then come from that release,
not from whatever the build host runs. This module makes that VM's disk once
per (release, architecture, deblive version) and keeps it in the cache:

- mmdebstrap of the release with the build tools, a kernel and its initramfs;
- deblive itself and its Python dependencies, installed from the host with
  `pip install --target` for the guest's Python (wheels only, so nothing is
  compiled and the guest needs neither pip nor a network to PyPI);
- deblive-builder-init as PID 1 (data/builder-init.sh): mounts, network,
  shares, one build, power off;
- an ext4 image made from the tree by `mke2fs -d`: no loop device, no mount.

The VM boots that image with snapshot=on, so every build starts from the same
pristine system and leaves nothing behind: the throwaway builder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from deblive.apt.pkgcache import PackageCache
from deblive.build.stages.bootstrap import KEYRING
from deblive.core.log import BuildLog
from deblive.core.runner import DebliveError, Runner
from deblive.host import sandbox
from deblive.model import suites

# What a build needs inside the builder, beyond the apt variant's base.
BUILDER_PACKAGES = (
    "mmdebstrap", "debootstrap", "squashfs-tools", "xorriso", "mtools", "dosfstools",
    "qemu-user-static", "binfmt-support", "arch-test", "distro-info-data",
    "debian-archive-keyring", "ca-certificates", "python3", "util-linux", "mount", "file",
    "cpio", "zstd", "xz-utils", "gpgv", "gpg", "rsync", "e2fsprogs", "iproute2", "kmod",
    "initramfs-tools", "procps",
)
KERNEL_FLAVOUR = {"amd64": "amd64", "arm64": "arm64"}
PYTHON_MIN = (3, 11)
# The oldest release whose Python runs deblive; older targets are built by it
# (the seed: a newer builder may build an older release).
OLDEST_BUILDER = "bookworm"
INIT_PATH = "/usr/local/sbin/deblive-builder-init"
LIB_DIR = "/opt/deblive/lib"
FORMAT = 1  # bump when the image's layout changes


class BuilderImageError(DebliveError):
    exit_code = 1


@dataclass(frozen=True)
class BuilderImage:
    """A cached builder disk with the kernel and initramfs to boot it directly."""

    directory: Path
    codename: str
    architecture: str

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


def host_architecture() -> str:
    """The builder runs the host's architecture (fast), foreign targets go through binfmt."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def builder_codename(codename: str) -> str:
    """The builder's release: the target's own, unless its Python is too old for deblive."""
    names = [r.codename for r in suites.load_releases()]
    if codename in names and OLDEST_BUILDER in names and (
        names.index(codename) < names.index(OLDEST_BUILDER)
    ):
        return OLDEST_BUILDER
    return codename


def init_script() -> bytes:
    return resources.files("deblive").joinpath("data/builder-init.sh").read_bytes()


def package_dir() -> Path:
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


def cache_key(codename: str, architecture: str) -> str:
    blob = json.dumps({
        "format": FORMAT, "codename": codename, "architecture": architecture,
        "packages": BUILDER_PACKAGES, "requirements": requirements(),
        "deblive": source_digest(),
    }, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def mmdebstrap_argv(codename: str, architecture: str, tree: Path, mirror: str,
                    archives: Path) -> list[str]:
    kernel = f"linux-image-{KERNEL_FLAVOUR.get(architecture, architecture)}"
    return [
        "mmdebstrap", "--mode=root", "--variant=apt", f"--architectures={architecture}",
        f"--keyring={KEYRING}", "--components=main", "--aptopt=Acquire::Retries \"3\"",
        "--skip=download/empty",
        f"--include={','.join((*BUILDER_PACKAGES, kernel))}",
        f"--setup-hook=mkdir -p \"$1/var/cache/apt/archives\" && "
        f"mount --bind '{archives}' \"$1/var/cache/apt/archives\"",
        "--customize-hook=umount \"$1/var/cache/apt/archives\"",
        codename, str(tree), mirror,
    ]


def guest_python(tree: Path) -> tuple[int, int]:
    """The guest's python3 version, read from its /usr/bin/python3 link."""
    link = tree / "usr/bin/python3"
    try:
        target = os.readlink(link)
    except OSError as exc:
        raise BuilderImageError(f"builder tree has no python3 ({link}: {exc.strerror})") from None
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


def _newest(boot: Path, prefix: str) -> Path:
    found = sorted(boot.glob(prefix + "*"), key=lambda p: p.name)
    if not found:
        raise BuilderImageError(f"builder tree has no {boot}/{prefix}*")
    return found[-1]


@contextlib.contextmanager
def _lock(directory: Path, log: BuildLog) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another build making the same builder image")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def install_deblive(tree: Path, runner: Runner, machine: str) -> tuple[int, int]:
    """deblive and its dependencies into LIB_DIR, and a /usr/local/bin/deblive to run it."""
    version = guest_python(tree)
    if version < PYTHON_MIN:
        raise BuilderImageError(
            f"the builder's Python is {version[0]}.{version[1]}; deblive needs "
            f"{PYTHON_MIN[0]}.{PYTHON_MIN[1]} or newer"
        )
    lib = tree / LIB_DIR.lstrip("/")
    lib.mkdir(parents=True)
    runner.run(pip_target_argv(lib, version, machine, requirements()),
               what="install deblive's Python dependencies for the builder")
    shutil.copytree(package_dir(), lib / "deblive",
                    ignore=shutil.ignore_patterns("__pycache__"))
    wrapper = tree / "usr/local/bin/deblive"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={LIB_DIR} exec python3 -m deblive \"$@\"\n")
    wrapper.chmod(0o755)
    return version


def configure(tree: Path) -> None:
    """PID 1, hostname (the seed's 'sudo: unable to resolve host' warning), no apt lists."""
    init = tree / INIT_PATH.lstrip("/")
    init.parent.mkdir(parents=True, exist_ok=True)
    init.write_bytes(init_script())
    init.chmod(0o755)
    (tree / "etc/hostname").write_text("deblive-builder\n")
    (tree / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tdeblive-builder\n")
    lists = tree / "var/lib/apt/lists"
    for path in lists.glob("*"):
        if path.is_file():
            path.unlink()


def ensure(codename: str, mirror: str, cache: Path, log: BuildLog, runner: Runner,
           architecture: str | None = None, rebuild: bool = False) -> BuilderImage:
    """The builder image for codename: from the cache, or made now (a few minutes)."""
    architecture = architecture or host_architecture()
    key = cache_key(codename, architecture)
    builders = cache / "builders"
    image = BuilderImage(builders / f"{codename}-{architecture}-{key}", codename, architecture)
    with _lock(builders, log):
        if image.complete() and not rebuild:
            log.info(f"builder image {image.directory.name} from the cache")
            return image
        with log.stage("builder-image"):
            _make(image, mirror, cache, log, runner)
        for old in builders.glob(f"{codename}-{architecture}-*"):
            if old != image.directory and old.is_dir() and not old.name.endswith(".tmp"):
                log.info(f"removing the outdated builder image {old.name}")
                shutil.rmtree(old)
    return image


def _make(image: BuilderImage, mirror: str, cache: Path, log: BuildLog, runner: Runner) -> None:
    tmp = image.directory.with_name(image.directory.name + ".tmp")
    if tmp.exists():
        sandbox.safe_rmtree(tmp)
    tree = tmp / "tree"
    tmp.mkdir(parents=True)
    sandbox.enter_private_mount_namespace()
    packages = PackageCache(cache / "archives", tmp / "archives", log)
    packages.stage_in()
    try:
        runner.run(mmdebstrap_argv(image.codename, image.architecture, tree, mirror,
                                   packages.archives), what="bootstrap the builder")
    finally:
        packages.stage_out()
    python = install_deblive(tree, runner, platform.machine())
    configure(tree)
    (tmp / "vmlinuz").write_bytes(_newest(tree / "boot", "vmlinuz-").read_bytes())
    (tmp / "initrd.img").write_bytes(_newest(tree / "boot", "initrd.img-").read_bytes())
    size_mib = int(_tree_bytes(tree) * 1.3) // (1 << 20) + 512
    runner.run(["mke2fs", "-q", "-t", "ext4", "-L", "deblive-builder", "-d", str(tree), "-F",
                str(tmp / "rootfs.img"), f"{size_mib}M"], what="make the builder's disk")
    sandbox.safe_rmtree(tree)
    shutil.rmtree(tmp / "archives", ignore_errors=True)
    info = {
        "codename": image.codename, "architecture": image.architecture,
        "python": f"{python[0]}.{python[1]}",
        "size_mib": size_mib, "requirements": requirements(),
    }
    (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    if image.directory.exists():
        shutil.rmtree(image.directory)
    tmp.rename(image.directory)
    log.info(f"builder image {image.directory.name}: {size_mib} MiB")

