"""Checks of the host and the config's files, made before a build touches the system.

Everything that can be known in advance is checked here, so a bad config, a
missing tool, a hook that is not executable or a foreign architecture
without its qemu-user handler ends the run in seconds with exit status 2,
not half an hour into a build. (The mirror is checked by apt.archive.)
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from deblive.core.errors import BadInputError
from deblive.core.runner import Runner
from deblive.host import distroinfo, sandbox
from deblive.host.hostapt import host_architecture
from deblive.model.arch import Arch
from deblive.model.config import ImageConfig
from deblive.model.suites import ReleaseTable

REQUIRED_TOOLS = {
    "chroot": "coreutils",
    "mksquashfs": "squashfs-tools",
    "unsquashfs": "squashfs-tools",
    "dpkg-deb": "dpkg",
    "taskset": "util-linux",  # the initramfs on one CPU (host.cpus)
}
ISO_TOOLS = {
    "xorriso": "xorriso",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mmd": "mtools",
}


class PreflightError(BadInputError):
    pass


def missing_tools(config: ImageConfig, with_iso: bool) -> list[str]:
    tools = dict(REQUIRED_TOOLS)
    tools[config.bootstrap.backend] = config.bootstrap.backend
    if with_iso:
        tools.update(ISO_TOOLS)
        layout = config.architecture.boot
        if layout is not None and not layout.signed:
            tools["grub-mkimage"] = "grub-common"  # links the unsigned EFI grub
    if with_iso and "disk" in config.formats:
        tools["mke2fs"] = "e2fsprogs"
        tools["debugfs"] = "e2fsprogs"
        if config.persistence is not None and config.persistence.encrypted:
            tools["cryptsetup"] = "cryptsetup-bin"
    if config.local_packages:
        tools.update({"apt-ftparchive": "apt-utils", "gpg": "gpg", "gpgconf": "gpgconf",
                      "dpkg-deb": "dpkg"})
    return [f"{tool} (package {pkg})" for tool, pkg in tools.items() if shutil.which(tool) is None]


def _not_copyable(directory: Path) -> list[Path]:
    """Entries below directory that are not files, directories or symlinks (FIFOs,
    devices, sockets), without following symlinks."""
    odd = []
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            mode = (Path(dirpath) / name).lstat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                odd.append(Path(dirpath) / name)
    return odd


def check_paths(config: ImageConfig) -> None:
    """The files the config names exist, the hook is executable, and with confine_paths
    every one of them really (symlinks followed) lies inside the config's directory."""
    where = config.where
    paths = config.referenced_paths()
    for key, path in paths.items():
        if key in ("installer.directory", "overlay"):
            if not path.is_dir():
                raise PreflightError(f"{where}: {key}: {path} is not a directory")
        elif key.startswith("local_packages["):
            if not (path.is_dir() or (path.is_file() and path.suffix == ".deb")):
                raise PreflightError(f"{where}: {key}: {path} is not a .deb file or a "
                                     "directory of them")
        elif not path.is_file():
            raise PreflightError(f"{where}: {key}: {path} does not exist or is not a file")
    overlay = paths.get("overlay")
    odd = _not_copyable(overlay) if overlay is not None else []
    if odd:
        raise PreflightError(f"{where}: overlay: {odd[0]} is not a file, directory or symlink "
                             "(an overlay copies only those)")
    hook = paths.get("hook")
    if hook is not None and not os.access(hook, os.X_OK):
        raise PreflightError(f"{where}: hook: {hook} is not executable (chmod +x it)")
    if config.confine_paths:
        tree = config.base_dir.resolve()
        for key, path in paths.items():
            real = path.resolve()
            if not real.is_relative_to(tree):
                raise PreflightError(
                    f"{where}: {key}: {real} is outside the config's directory {tree} "
                    "(confine_paths is true; symlinks are followed)"
                )


def ensure_binfmt(architecture: Arch, runner: Runner) -> None:
    """Foreign architectures run through qemu-user binfmt: make sure it is there."""
    if not architecture.is_foreign(host_architecture()):
        return
    if shutil.which("arch-test") and runner.run(
        ["arch-test", "-n", str(architecture)], check=False, quiet=True
    ).returncode == 0:
        return
    sandbox.mount_binfmt_misc()
    if shutil.which("update-binfmts"):
        runner.run(["update-binfmts", "--enable", architecture.binfmt_name], check=False,
                   quiet=True)
    if not (sandbox.BINFMT_MISC / architecture.binfmt_name).exists():
        raise PreflightError(
            f"architecture: {architecture} is foreign here and no qemu-user binfmt handler "
            f"is registered for it (install qemu-user-static and binfmt-support)"
        )


def check(config: ImageConfig, runner: Runner, *, with_iso: bool) -> None:
    """Root, tools, the config's files, a bootable architecture, binfmt for a foreign one."""
    if os.geteuid() != 0:
        raise PreflightError("deblive build must run as root (debootstrap makes device nodes)")
    missing = missing_tools(config, with_iso)
    if missing:
        raise PreflightError("missing tools: " + ", ".join(missing))
    check_paths(config)
    if with_iso:
        check_bootable(config)
    ensure_binfmt(config.architecture, runner)


def check_bootable(config: ImageConfig, releases: ReleaseTable | None = None) -> None:
    """PreflightError if config's architecture cannot boot from its suite's archive."""
    why = config.architecture.boot_refusal(config.codename, releases or distroinfo.load())
    if why is not None:
        raise PreflightError(f"{config.where}: {why}")

