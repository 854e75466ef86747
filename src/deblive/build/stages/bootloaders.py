"""Step 10: boot loaders onto the medium tree: ISOLINUX for BIOS, shim + grub for UEFI,
grub's CHRP ELF for Open Firmware.

UEFI: the firmware starts /EFI/boot/boot<arch>.efi, which is Debian's signed
shim; shim starts grub<arch>.efi beside it, which is Debian's signed CD grub
(gcd<arch>.efi). That grub has a built-in prefix of /EFI/debian and an
embedded config that sources $prefix/grub.cfg. On a CD or USB stick the
device it starts from is the FAT image efi.img (El Torito image or appended
partition), so efi.img holds /EFI/debian/grub.cfg, which finds the ISO 9660
filesystem by this build's marker /.disk/id/<uuid> (never /.disk/info:
Debian #1024346) and sources the real menu from /boot/grub/grub.cfg there.
Where Debian signs no boot loader (armhf), /EFI/boot/boot<arch>.efi is a grub
linked by grub-mkimage with the same prefix (build.bootfiles): the firmware
starts it directly and it reads the same /EFI/debian/grub.cfg.

Open Firmware (ppc64el; SLOF on qemu's pseries) reads /ppc/bootinfo.txt off
the CHRP medium (build.stages.iso) and loads the grub ELF its boot-script
names, /boot/grub/powerpc.elf. bootinfo.txt is fixed text, no config's words
in it. That grub carries its early config inside (build.bootfiles): the same
search for this build's marker as efi.img's, in the only language grub's
rescue parser reads before normal mode (no if/else), after which normal mode
reads the menu, /boot/grub/grub.cfg, on the medium it found.

efi.img is made without root or loop devices (mkfs.vfat -C plus mtools),
sized from its contents, with a fixed volume id, --invariant and file dates
from SOURCE_DATE_EPOCH so that two builds give the same bytes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
from importlib import resources
from pathlib import Path

from deblive.build import bootfiles, menus
from deblive.build.bootfiles import BiosFiles, BootFiles, EfiFiles
from deblive.build.context import BuildContext
from deblive.build.stage import Stage
from deblive.core.errors import DebliveError
from deblive.core.files import write_atomic
from deblive.core.runner import Runner
from deblive.host import deletion
from deblive.model import bootmenu

ISOLINUX_DIR = "isolinux"
GRUB_DIR = "boot/grub"
EFI_IMAGE = "boot/grub/efi.img"  # path on the medium, also the El Torito EFI image
EFI_VOLUME_ID = "0de811fe"  # mkfs.vfat -i (8 hex digits): fixed, else random per build
EFI_LABEL = "DEBLIVE_EFI"
# FAT overhead beyond the files' clusters: boot sector, two FATs, root
# directory and the directory clusters, with room to spare for rounding.
EFI_SLACK_KIB = 512
CLUSTER = 4096
BOOT_ENTRIES = "boot-entries.json"  # beside the ISO: the medium's menu for the boot test
BOOT_ENTRIES_FORMAT = 1
CHRP_GRUB = "boot/grub/" + bootfiles.CHRP_GRUB  # path on the medium: bootinfo.txt names it
BOOTINFO = "ppc/bootinfo.txt"  # where Open Firmware looks on a CHRP medium
BOOTINFO_TEXT = (
    "<chrp-boot>\n"
    "<description>deblive</description>\n"
    "<os-name>deblive</os-name>\n"
    "<boot-script>boot &device;:\\boot\\grub\\powerpc.elf</boot-script>\n"
    "</chrp-boot>\n"
)


class BootloaderError(DebliveError):
    """A boot loader file or the EFI image could not be made."""


def default_splash() -> Path:
    """The splash shipped with deblive (a real file: the package is installed unzipped)."""
    return Path(str(resources.files("deblive").joinpath("data/splash.png")))


def check_splash(path: Path) -> None:
    """Both loaders show the same PNG: 640x480 (vesamenu's MENU RESOLUTION), 8 or 16
    bits per channel and not interlaced (grub's PNG reader refuses anything else)."""
    try:
        head = path.read_bytes()[:33]
    except OSError as exc:
        raise BootloaderError(f"cannot read the splash {path}: {exc.strerror}") from None
    if len(head) < 33 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise BootloaderError(f"splash {path} is not a PNG file")
    width, height, depth, _colour, _comp, _filt, interlace = struct.unpack(">IIBBBBB", head[16:29])
    if (width, height) != (640, 480):
        raise BootloaderError(f"splash {path} is {width}x{height}; it must be 640x480")
    if depth not in (8, 16) or interlace != 0:
        raise BootloaderError(
            f"splash {path} must have 8 or 16 bits per channel and no interlacing "
            "(grub cannot show it otherwise)"
        )


def efi_early_config(build_id: str) -> str:
    """/EFI/debian/grub.cfg in efi.img: find this build's ISO 9660 tree, use its menu."""
    return (
        "# deblive: the signed grub sources this from its prefix /EFI/debian.\n"
        "# Find this very build's medium by its marker, then read the real menu.\n"
        f"if search --no-floppy --file --set=root /.disk/id/{build_id} ; then\n"
        "\tset prefix=($root)/boot/grub\n"
        "\tsource $prefix/grub.cfg\n"
        "else\n"
        f'\techo "deblive: no medium with /.disk/id/{build_id} found"\n'
        "\tsleep 30\n"
        "fi\n"
    )


def chrp_early_config(build_id: str) -> str:
    """The config embedded in Open Firmware's grub: find this build's ISO 9660 tree.

    grub runs it with its rescue parser (one command a line, no if/else: an
    `if` is an unknown command there); normal mode then reads $prefix/grub.cfg.
    Without the medium, search's error shows and normal mode finds no menu.
    """
    return (
        f"search --no-floppy --file --set=root /.disk/id/{build_id}\n"
        "set prefix=($root)/boot/grub\n"
    )


def install_isolinux(medium: Path, bios: BiosFiles, menu: bootmenu.Menu, splash: Path) -> None:
    """isolinux.bin, its modules (one syslinux build), splash and configs into /isolinux."""
    target = medium / ISOLINUX_DIR
    target.mkdir(parents=True, exist_ok=True)
    copy_file(bios.isolinux_bin, target / "isolinux.bin")
    for name, path in bios.modules.items():
        copy_file(path, target / name)
    if menu.splash:
        copy_file(splash, target / bootmenu.SPLASH_NAME)
    for name, text in menus.render_isolinux(menu).items():
        (target / name).write_text(text, encoding="utf-8")


def install_grub_configs(medium: Path, menu: bootmenu.Menu, splash: Path) -> None:
    """/boot/grub/grub.cfg, loopback.cfg and the splash on the ISO 9660 tree."""
    target = medium / GRUB_DIR
    target.mkdir(parents=True, exist_ok=True)
    (target / "grub.cfg").write_text(menus.render_grub(menu), encoding="utf-8")
    (target / "loopback.cfg").write_text(menus.render_loopback(menu), encoding="utf-8")
    if menu.splash:
        copy_file(splash, target / bootmenu.SPLASH_NAME)


def stage_efi_tree(dest: Path, efi: EfiFiles, build_id: str) -> list[Path]:
    """Write /EFI/boot/* and /EFI/debian/grub.cfg under dest; return the files, sorted."""
    boot_dir = dest / "EFI" / "boot"
    debian_dir = dest / "EFI" / "debian"
    boot_dir.mkdir(parents=True, exist_ok=True)
    debian_dir.mkdir(parents=True, exist_ok=True)
    for name, src in efi.efi_boot_names().items():
        copy_file(src, boot_dir / name)
    (debian_dir / "grub.cfg").write_text(efi_early_config(build_id), encoding="utf-8")
    return sorted(p for p in dest.rglob("*") if p.is_file())


def install_chrp(medium: Path, chrp: bootfiles.ChrpFiles) -> None:
    """Open Firmware's files: the grub ELF and the bootinfo.txt that names it."""
    grub = medium / CHRP_GRUB
    grub.parent.mkdir(parents=True, exist_ok=True)
    copy_file(chrp.grub, grub)
    bootinfo = medium / BOOTINFO
    bootinfo.parent.mkdir(parents=True, exist_ok=True)
    bootinfo.write_text(BOOTINFO_TEXT, encoding="utf-8")
    os.chmod(bootinfo, 0o644)


def efi_image_kib(sizes: list[int], directories: int) -> int:
    """Size of a FAT image holding files of these sizes: clusters plus overhead, in KiB."""
    clusters = sum(max(1, math.ceil(size / CLUSTER)) for size in sizes) + directories
    kib = clusters * CLUSTER // 1024 + EFI_SLACK_KIB
    return math.ceil(kib / 64) * 64


def make_efi_image(runner: Runner, tree: Path, image: Path, epoch: int) -> None:
    """A FAT image of tree (EFI/...), made with mkfs.vfat -C and mtools, no root needed."""
    files = sorted(p for p in tree.rglob("*") if p.is_file())
    dirs = sorted(p for p in tree.rglob("*") if p.is_dir())
    for path in [*files, *dirs]:
        os.utime(path, (epoch, epoch))
    image.parent.mkdir(parents=True, exist_ok=True)
    image.unlink(missing_ok=True)
    kib = efi_image_kib([p.stat().st_size for p in files], len(dirs))
    env = {"SOURCE_DATE_EPOCH": str(epoch), "MTOOLS_SKIP_CHECK": "1"}
    runner.run(
        [
            "mkfs.vfat", "-C", "--invariant", "-i", EFI_VOLUME_ID, "-n", EFI_LABEL,
            image, str(kib),
        ],
        env=env,
        what="making efi.img",
    )
    for directory in dirs:
        runner.run(
            ["mmd", "-i", image, "::/" + directory.relative_to(tree).as_posix()],
            env=env,
            what="making a directory in efi.img",
        )
    for path in files:
        runner.run(
            ["mcopy", "-m", "-i", image, path, "::/" + path.relative_to(tree).as_posix()],
            env=env,
            what="copying into efi.img",
        )


def install_efi(ctx: BuildContext, efi: EfiFiles) -> Path:
    """efi.img at /boot/grub/efi.img and the same /EFI tree on the ISO 9660 filesystem."""
    medium = ctx.work.medium
    staging = ctx.work.root / "efi-tree"
    deletion.remove_tree(staging)
    stage_efi_tree(staging, efi, ctx.build_id)
    image = medium / EFI_IMAGE
    make_efi_image(ctx.runner, staging, image, ctx.source_date_epoch)
    # The same files on the ISO 9660 tree, for firmware that reads it directly.
    shutil.copytree(staging / "EFI", medium / "EFI", dirs_exist_ok=True)
    return image


def boot_entries(ctx: BuildContext, menu: bootmenu.Menu, files: BootFiles) -> dict[str, object]:
    """boot-entries.json: what the boot test must know of the medium, from the build.

    The architecture and the menu the loaders show, the live user's name and
    sudo policy (never the password), whether root is locked; so `deblive
    test` and the installer test never parse the ISO's configs to learn them.
    """
    config = ctx.config
    return {
        "format": BOOT_ENTRIES_FORMAT,
        "image": ctx.image_basename,
        "architecture": str(config.architecture),
        "bios": files.bios is not None,
        "live_user": {"name": config.user.name, "sudo": config.user.sudo},
        "root_locked": config.lock_root,
        "menu": menu.to_json(),
    }


def install_bootloaders(ctx: BuildContext) -> BootFiles:
    """Unpack the boot packages and install every boot loader the architecture has."""
    arch = ctx.config.architecture
    layout = bootfiles.arch_boot(arch)
    early = None if layout.firmware.efi else chrp_early_config(ctx.build_id)
    files = bootfiles.unpack_boot_files(ctx.runner, ctx.work.bootdebs, ctx.work.bootfiles, arch,
                                        netboot="netboot" in ctx.config.formats,
                                        early_config=early)
    splash = ctx.config.splash_path or default_splash()
    check_splash(splash)
    menu = bootmenu.build_menu(ctx.config, splash=True)
    medium = ctx.work.medium
    if files.bios is not None:
        install_isolinux(medium, files.bios, menu, splash)
    install_grub_configs(medium, menu, splash)
    if files.efi is not None:
        image = install_efi(ctx, files.efi)
        ctx.facts.efi_image_bytes = image.stat().st_size
        where = f"efi.img {image.stat().st_size // 1024} KiB"
    else:
        assert files.chrp is not None
        install_chrp(medium, files.chrp)
        where = f"/{CHRP_GRUB} named by /{BOOTINFO}"
    entries = ctx.work.output / BOOT_ENTRIES
    write_atomic(entries, json.dumps(boot_entries(ctx, menu, files), indent=2) + "\n")
    ctx.outputs.append(entries)
    ctx.log.info(
        f"boot loaders installed: {'ISOLINUX, ' if files.bios else ''}"
        f"{'shim + ' if files.efi and files.efi.shim else ''}grub ({files.grub_platform}), "
        f"{where}"
    )
    return files


class Bootloaders(Stage):
    name = "bootloaders"

    def wanted(self, ctx: BuildContext) -> bool:
        return ctx.make_iso

    def run(self, ctx: BuildContext) -> None:
        ctx.boot_files = install_bootloaders(ctx)


def copy_file(src: Path, dest: Path) -> None:
    """A boot file into a tree deblive writes: a plain copy, mode 0644."""
    shutil.copyfile(src, dest)
    os.chmod(dest, 0o644)
