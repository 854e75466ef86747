"""Boot loader files of the TARGET release, per architecture.

ISOLINUX (isolinux.bin, the c32 modules and the isohdpfx.bin MBR) must come
from one syslinux build, and only Debian's signed shim and grub boot under
Secure Boot, so the files are taken from the target release's own packages:
the packages stage downloads them (the architecture's BootLayout names them)
into WorkTree.bootdebs, and unpack_boot_files() extracts them with dpkg-deb
(no installation, no maintainer scripts). A package's files are content
deblive did not write: each boot file is copied out of the unpacked tree
through an ImageTree (regular files only, symlinks resolved inside that tree)
into a directory of deblive's own, and only those copies are used.

Where Debian signs no grub (armhf), the package holds grub's modules: they are
copied out the same way and the host's grub-mkimage links the EFI image from
those copies (GRUB_MODULES, prefix /EFI/debian: the same early config as the
signed grub's then finds the medium).

IBM POWER (ppc64el) boots through Open Firmware: grub-ieee1275-bin's modules
are copied out the same way and grub-mkimage links a CHRP ELF (powerpc.elf)
with prefix /boot/grub and an early config inside it (--config): Open
Firmware's boot path names partition 0, which grub cannot open ("unrecognized
number"), and there is no efi.img to hold the config, so the image itself must
find this build's medium.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from deblive.core.errors import DebliveError
from deblive.core.runner import Runner
from deblive.host import deletion
from deblive.host.imagetree import ImageTree
from deblive.model.arch import Arch, BootFirmware, BootLayout

# ISOLINUX modules the menus need: ldlinux is ISOLINUX's core, vesamenu (with a
# splash) and menu (text only) are the UIs, libcom32/libutil their libraries.
ISOLINUX_MODULES: Final = ("ldlinux.c32", "libcom32.c32", "libutil.c32", "vesamenu.c32", "menu.c32")
SYSLINUX_MODULES: Final = "/usr/lib/syslinux/modules/bios"
PXELINUX: Final = "/usr/lib/PXELINUX/pxelinux.0"  # same syslinux build as the modules
# Built into an unsigned grub: what efi.img's early config and the menus use
# (find the medium, ISO 9660 and FAT, the kernel, initrd and devicetree, the
# serial and screen terminals, loopback.cfg) and nothing that reads the network.
GRUB_MODULES: Final = (
    "normal", "configfile", "search", "search_fs_file", "search_label", "iso9660", "fat",
    "part_gpt", "part_msdos", "linux", "fdt", "echo", "test", "sleep", "loopback", "gzio",
    "efi_gop", "all_video", "font", "gfxterm", "png", "serial", "terminal", "ls", "cat",
    "halt", "reboot", "true", "regexp",
)
# grub's powerpc-ieee1275 platform has no devicetree command and no EFI video.
GRUB_MODULES_IEEE1275: Final = tuple(m for m in GRUB_MODULES if m not in ("fdt", "efi_gop"))
CHRP_GRUB: Final = "powerpc.elf"  # grub-install's name; /ppc/bootinfo.txt names its path
EARLY_CONFIG: Final = "early.cfg"  # beside the modules: what grub-mkimage --config embeds


class BootFilesError(DebliveError):
    """Boot packages are missing or do not hold the expected files."""


def arch_boot(arch: Arch) -> BootLayout:
    """The boot layout of arch; BootFilesError for one deblive cannot boot."""
    if arch.boot is None:
        raise BootFilesError(
            f"no bootable ISO layout known for architecture {arch}; "
            f"supported: {', '.join(map(str, Arch.bootable()))}"
        )
    return arch.boot


@dataclass(frozen=True)
class BiosFiles:
    """ISOLINUX: El Torito BIOS image, its modules and the isohybrid MBR."""

    isolinux_bin: Path
    isohdpfx_bin: Path
    modules: dict[str, Path]  # file name (ldlinux.c32...) -> path

    @property
    def ldlinux(self) -> Path:
        return self.modules["ldlinux.c32"]


@dataclass(frozen=True)
class EfiFiles:
    """The UEFI binaries and the names they take in /EFI/boot: Debian's signed shim,
    MokManager and grub, or (shim None) a grub made by grub-mkimage alone."""

    suffix: str  # x64, aa64
    grub_platform: str
    shim: Path | None  # shim<suffix>.efi.signed -> boot<suffix>.efi
    mokmanager: Path | None  # mm<suffix>.efi.signed -> mm<suffix>.efi
    grub: Path  # gcd<suffix>.efi.signed (grub for CDs) -> grub<suffix>.efi

    def efi_boot_names(self) -> dict[str, Path]:
        """/EFI/boot file name -> source: what the firmware and shim look for."""
        if self.shim is None or self.mokmanager is None:
            return {f"boot{self.suffix}.efi": self.grub}  # the firmware starts grub itself
        return {
            f"boot{self.suffix}.efi": self.shim,
            f"grub{self.suffix}.efi": self.grub,
            f"mm{self.suffix}.efi": self.mokmanager,
        }


@dataclass(frozen=True)
class ChrpFiles:
    """Open Firmware's boot file: grub linked by grub-mkimage as a CHRP ELF (32-bit
    big-endian PowerPC), which the firmware loads by the path /ppc/bootinfo.txt names."""

    grub_platform: str  # powerpc-ieee1275
    grub: Path  # powerpc.elf


@dataclass(frozen=True)
class NetFiles:
    """Network boot loaders: PXELINUX for BIOS, Debian's signed network grub for UEFI.

    shim started from TFTP loads grub<suffix>.efi from the same TFTP directory,
    so the network grub takes that name; its built-in prefix is /grub.
    """

    pxelinux: Path | None  # pxelinux.0; None without BIOS boot
    grub: Path  # grubnet<suffix>.efi.signed


@dataclass(frozen=True)
class BootFiles:
    """Every boot file, copied out of the packages; bios is None without BIOS boot,
    efi None without UEFI (chrp then: Open Firmware's), net None unless the netboot
    format was asked for."""

    arch: Arch
    bios: BiosFiles | None
    efi: EfiFiles | None
    net: NetFiles | None = None
    chrp: ChrpFiles | None = None

    @property
    def loader(self) -> EfiFiles | ChrpFiles:
        """The firmware's grub files: UEFI's, else Open Firmware's (a layout has one)."""
        found = self.efi or self.chrp
        assert found is not None, "boot files without a grub"
        return found

    @property
    def grub(self) -> Path:
        """The grub image the firmware starts (EFI) or loads (Open Firmware)."""
        return self.loader.grub

    @property
    def grub_platform(self) -> str:
        return self.loader.grub_platform


def package_of_deb(deb: Path) -> str:
    """Package name from a Debian archive file name (name_version_arch.deb)."""
    return deb.name.split("_", 1)[0]


def select_debs(debs: Iterable[Path], arch: Arch, netboot: bool = False) -> list[Path]:
    """The .deb files of arch's boot packages (and its netboot ones); BootFilesError
    naming any missing."""
    layout = arch_boot(arch)
    wanted = (*layout.packages, *(layout.netboot_packages if netboot else ()))
    by_name: dict[str, Path] = {}
    for deb in sorted(debs):
        if package_of_deb(deb) in wanted:
            by_name[package_of_deb(deb)] = deb
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise BootFilesError(f"boot packages not downloaded for {arch}: {', '.join(missing)}")
    return [by_name[name] for name in wanted]


def unpack_debs(runner: Runner, debs: Sequence[Path], dest: Path) -> None:
    """Extract the debs' data into a fresh dest (no maintainer scripts run)."""
    deletion.remove_tree(dest)
    dest.mkdir(parents=True)
    for deb in debs:
        runner.run(["dpkg-deb", "-x", deb, dest], what=f"unpacking {deb.name}")


def _copy_grub_modules(tree: ImageTree, layout: BootLayout, dest: Path) -> None:
    """grub's kernel.img, module lists and modules of an unsigned layout, copied out."""
    inside = f"/usr/lib/grub/{layout.grub_efi_dir}"
    if not tree.is_dir(inside) or not tree.is_file(f"{inside}/kernel.img"):
        raise BootFilesError(f"grub's modules missing from the boot packages: {inside}")
    dest.mkdir(parents=True)
    for name in tree.listdir(inside):
        wanted = name == "kernel.img" or name.endswith((".mod", ".lst"))
        if wanted and tree.is_file(f"{inside}/{name}"):
            tree.copy_out(f"{inside}/{name}", dest / name)


def grub_modules(layout: BootLayout) -> tuple[str, ...]:
    """The modules built into an unsigned grub of layout's firmware."""
    return GRUB_MODULES if layout.firmware.efi else GRUB_MODULES_IEEE1275


def grub_mkimage_argv(layout: BootLayout, modules: Path, output: Path,
                      config: Path | None = None) -> list[str]:
    """The host's grub-mkimage linking the unsigned grub from copied-out modules;
    config: an early config to embed (run by grub's rescue parser before normal mode)."""
    return ["grub-mkimage", "--format", layout.grub_platform, "--directory", str(modules),
            "--prefix", layout.firmware.grub_prefix,
            *(["--config", str(config)] if config is not None else []),
            "--output", str(output), *grub_modules(layout)]


def locate(unpacked: Path, files: Path, arch: Arch, netboot: bool = False) -> BootFiles:
    """Copy the boot files out of an unpacked tree into files (fresh), and name them.

    For an unsigned layout, efi.grub (chrp.grub for Open Firmware) names the image
    make_unsigned_grub() writes from the modules copied to files/grub-modules."""
    layout = arch_boot(arch)
    deletion.remove_tree(files)
    files.mkdir(parents=True)
    with ImageTree(unpacked) as tree:

        def take(inside: str, name: str | None = None) -> Path:
            if not tree.is_file(inside):
                raise BootFilesError(f"boot file missing from the boot packages: {inside}")
            dest = files / (name or inside.rsplit("/", 1)[1])
            tree.copy_out(inside, dest)
            return dest

        bios = None
        if layout.bios:
            bios = BiosFiles(
                isolinux_bin=take("/usr/lib/ISOLINUX/isolinux.bin"),
                isohdpfx_bin=take("/usr/lib/ISOLINUX/isohdpfx.bin"),
                modules={name: take(f"{SYSLINUX_MODULES}/{name}") for name in ISOLINUX_MODULES},
            )
        sfx = layout.efi_suffix
        efi: EfiFiles | None = None
        chrp: ChrpFiles | None = None
        if layout.firmware is BootFirmware.IEEE1275:
            _copy_grub_modules(tree, layout, files / "grub-modules")
            chrp = ChrpFiles(grub_platform=layout.grub_platform, grub=files / CHRP_GRUB)
        elif layout.signed:
            efi = EfiFiles(
                suffix=sfx,
                grub_platform=layout.grub_platform,
                shim=take(f"/usr/lib/shim/shim{sfx}.efi.signed"),
                mokmanager=take(f"/usr/lib/shim/mm{sfx}.efi.signed"),
                grub=take(f"/usr/lib/grub/{layout.grub_efi_dir}/gcd{sfx}.efi.signed"),
            )
        else:
            _copy_grub_modules(tree, layout, files / "grub-modules")
            efi = EfiFiles(suffix=sfx, grub_platform=layout.grub_platform, shim=None,
                           mokmanager=None, grub=files / f"grub{sfx}.efi")
        net = None
        if netboot:
            why = layout.netboot_refusal()
            if why is not None:
                raise BootFilesError(f"no network boot loader for {arch}: {why}")
            net = NetFiles(
                pxelinux=take(PXELINUX) if layout.bios else None,
                grub=take(f"/usr/lib/grub/{layout.grub_efi_dir}/grubnet{sfx}.efi.signed"),
            )
    return BootFiles(arch=arch, bios=bios, efi=efi, net=net, chrp=chrp)


def make_unsigned_grub(runner: Runner, files: BootFiles, dest: Path,
                       early_config: str | None = None) -> None:
    """Link an unsigned layout's grub (files.grub) from the modules below dest.

    early_config: the text Open Firmware's grub embeds (required there, since
    nothing beside the image holds it); an EFI grub reads efi.img's instead."""
    layout = arch_boot(files.arch)
    if layout.signed:
        return
    config = None
    if not layout.firmware.efi:
        if early_config is None:
            raise BootFilesError(f"grub for {layout.firmware.text} needs an early config "
                                 "to find the medium")
        config = dest / EARLY_CONFIG
        config.write_text(early_config, encoding="utf-8")
    runner.run(grub_mkimage_argv(layout, dest / "grub-modules", files.grub, config),
               what=f"making grub ({layout.grub_platform}) with grub-mkimage")


def unpack_boot_files(runner: Runner, debs_dir: Path, dest: Path, arch: Arch,
                      netboot: bool = False, early_config: str | None = None) -> BootFiles:
    """Unpack arch's boot packages from debs_dir below dest and take out their files;
    early_config: what an Open Firmware grub embeds (make_unsigned_grub)."""
    debs = select_debs(debs_dir.glob("*.deb"), arch, netboot)
    unpack_debs(runner, debs, dest / "unpacked")
    files = locate(dest / "unpacked", dest / "files", arch, netboot)
    make_unsigned_grub(runner, files, dest / "files", early_config)
    return files
