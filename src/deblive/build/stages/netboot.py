"""The netboot tree: OUTDIR/netboot/, a TFTP root for PXE on BIOS and UEFI.

A site's DHCP server names the boot file, its TFTP server serves this
directory, its web server serves the same directory at netboot.url:

- BIOS:  pxelinux.0 loads ldlinux.c32 and the menu modules from the same
         directory, then pxelinux.cfg/default (the ISO's isolinux.cfg, with
         its paths under /pxelinux.cfg).
- UEFI:  shim<sfx>.efi (Debian's signed shim: Secure Boot works) loads
         grub<sfx>.efi from its own TFTP directory; that is Debian's signed
         network grub, whose built-in prefix /grub holds grub.cfg.
- Both:  the kernel and initrd come over TFTP; every live entry passes
         live-boot fetch=<netboot.url>live/filesystem.squashfs, which live-boot
         downloads over HTTP into RAM after its own DHCP.

The menus are the same menu model as the medium's (build_menu with
netboot=True: the installer entries stay on the medium, whose initrd looks
for a CD). The squashfs, kernel and initrd are hard links to the medium's
files: one squashfs for every format. boot-entries.json describes the tree
for `deblive test` and `deblive serve`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Final

from deblive.build import bootfiles, menus
from deblive.build.bootfiles import BootFiles
from deblive.build.context import BuildContext
from deblive.build.stage import Stage
from deblive.build.stages import bootloaders
from deblive.build.stages.squash import FLAT
from deblive.core.files import write_atomic
from deblive.host import deletion
from deblive.model import bootmenu
from deblive.model.arch import Arch

NETBOOT_DIR: Final = "netboot"
PXELINUX_CFG: Final = "pxelinux.cfg"
GRUB_PREFIX: Final = "grub"  # the signed network grub's built-in prefix
LIVE_FILES: Final = (bootmenu.KERNEL_PATH, bootmenu.INITRD_PATH, f"/live/{FLAT}")


def live_files(devicetree: bool) -> tuple[str, ...]:
    """The medium's files the tree links: kernel, initrd, squashfs, and the DTB if any."""
    return (*LIVE_FILES, *((bootmenu.DEVICETREE_PATH,) if devicetree else ()))


def tree_names(arch: Arch, devicetree: bool = False) -> list[str]:
    """Every file a netboot tree of arch holds, relative to it (what the builder VM's
    results may carry back, and nothing else)."""
    layout = bootfiles.arch_boot(arch)
    names = [bootloaders.BOOT_ENTRIES, *(p.lstrip("/") for p in live_files(devicetree))]
    sfx = layout.efi_suffix
    names += [f"shim{sfx}.efi", f"mm{sfx}.efi", f"grub{sfx}.efi",
              f"{GRUB_PREFIX}/grub.cfg", f"{GRUB_PREFIX}/{bootmenu.SPLASH_NAME}"]
    if layout.bios:
        names += ["pxelinux.0", *bootfiles.ISOLINUX_MODULES, f"{PXELINUX_CFG}/default",
                  f"{PXELINUX_CFG}/menu.cfg", f"{PXELINUX_CFG}/{bootmenu.SPLASH_NAME}"]
    return sorted(names)


def boot_file_names(files: BootFiles) -> dict[str, str]:
    """Firmware -> the file DHCP must name as the boot file."""
    assert files.efi is not None  # locate() gives no net files without UEFI
    names = {"uefi": f"shim{files.efi.suffix}.efi"}
    if files.net is not None and files.net.pxelinux is not None:
        names["bios"] = "pxelinux.0"
    return names


def link_or_copy(src: Path, dest: Path) -> None:
    """dest as a hard link to src (one squashfs on disk), a copy across file systems."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copyfile(src, dest)
        os.chmod(dest, 0o644)


def write_pxelinux(tree: Path, files: BootFiles, menu: bootmenu.Menu, splash: Path) -> None:
    """pxelinux.0 and its modules at the top, the menus in /pxelinux.cfg."""
    assert files.bios is not None and files.net is not None and files.net.pxelinux is not None
    copy = bootloaders.copy_file
    copy(files.net.pxelinux, tree / "pxelinux.0")
    for name, path in files.bios.modules.items():
        copy(path, tree / name)
    cfg = tree / PXELINUX_CFG
    cfg.mkdir()
    rendered = menus.render_isolinux(menu, loader_dir=f"/{PXELINUX_CFG}")
    (cfg / "default").write_text(rendered["isolinux.cfg"], encoding="utf-8")
    (cfg / "menu.cfg").write_text(rendered["menu.cfg"], encoding="utf-8")
    if menu.splash:
        copy(splash, cfg / bootmenu.SPLASH_NAME)


def write_efi(tree: Path, files: BootFiles, menu: bootmenu.Menu, splash: Path) -> None:
    """shim, MokManager and the network grub side by side, grub.cfg under /grub."""
    # locate() gives net files only with Debian's signed chain (shim and MokManager).
    assert files.net is not None and files.efi and files.efi.shim and files.efi.mokmanager
    sfx = files.efi.suffix
    copy = bootloaders.copy_file
    copy(files.efi.shim, tree / f"shim{sfx}.efi")
    copy(files.efi.mokmanager, tree / f"mm{sfx}.efi")
    copy(files.net.grub, tree / f"grub{sfx}.efi")
    prefix = tree / GRUB_PREFIX
    prefix.mkdir()
    (prefix / "grub.cfg").write_text(menus.render_grub(menu), encoding="utf-8")
    if menu.splash:
        copy(splash, prefix / bootmenu.SPLASH_NAME)


def make_tree(ctx: BuildContext, tree: Path) -> None:
    files = ctx.boot_files
    assert files is not None and files.net is not None and ctx.config.netboot is not None
    deletion.remove_tree(tree)
    tree.mkdir(parents=True)
    splash = ctx.config.splash_path or bootloaders.default_splash()
    menu = bootmenu.build_menu(ctx.config, splash=True, netboot=True)
    if files.net.pxelinux is not None:
        write_pxelinux(tree, files, menu, splash)
    write_efi(tree, files, menu, splash)
    for name in live_files(menu.devicetree is not None):
        link_or_copy(ctx.work.medium / name.lstrip("/"), tree / name.lstrip("/"))
    entries = bootloaders.boot_entries(ctx, menu, files)
    entries["netboot"] = {"url": ctx.config.netboot.url, "boot_files": boot_file_names(files)}
    write_atomic(tree / bootloaders.BOOT_ENTRIES, json.dumps(entries, indent=2) + "\n")
    for path in [tree, *tree.rglob("*")]:
        os.utime(path, (ctx.source_date_epoch, ctx.source_date_epoch), follow_symlinks=False)


class Netboot(Stage):
    name = "netboot"

    def wanted(self, ctx: BuildContext) -> bool:
        return ctx.make_iso and "netboot" in ctx.config.formats

    def run(self, ctx: BuildContext) -> None:
        tree = ctx.work.output / NETBOOT_DIR
        make_tree(ctx, tree)
        ctx.outputs.append(tree)
        size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
        ctx.facts.netboot_bytes = size
        assert ctx.boot_files is not None
        names = ", ".join(f"{k}: {v}" for k, v in boot_file_names(ctx.boot_files).items())
        ctx.log.info(f"netboot tree written: {tree} ({size / 2**20:.0f} MiB; DHCP boot "
                     f"files {names})")
