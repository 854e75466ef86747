"""Boot loader files of the TARGET release, per architecture.

ISOLINUX (isolinux.bin, the c32 modules and the isohdpfx.bin MBR) must come
from one syslinux build, and only Debian's signed shim and grub boot under
Secure Boot, so the files are taken from the target release's own packages:
the packages stage downloads them (boot_packages tells it which) into
WorkTree.bootdebs, and unpack_boot_files() extracts them with dpkg-deb (no
installation, no maintainer scripts) into WorkTree.bootfiles.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from deblive.core.runner import DebliveError, Runner

# ISOLINUX modules the menus need: ldlinux is ISOLINUX's core, vesamenu (with a
# splash) and menu (text only) are the UIs, libcom32/libutil their libraries.
ISOLINUX_MODULES: Final = ("ldlinux.c32", "libcom32.c32", "libutil.c32", "vesamenu.c32", "menu.c32")


class BootFilesError(DebliveError):
    """Boot packages are missing or do not hold the expected files."""


@dataclass(frozen=True)
class ArchBoot:
    """What one architecture boots with.

    efi_suffix is the UEFI architecture name in file names (x64, aa64):
    bootx64.efi, shimx64.efi.signed, gcdx64.efi.signed...
    """

    packages: tuple[str, ...]
    efi_suffix: str
    grub_efi_dir: str  # /usr/lib/grub/<dir> holding the signed images
    grub_platform: str  # grub's name of the EFI platform (x86_64-efi...)
    bios: bool


ARCHES: Final[dict[str, ArchBoot]] = {
    "amd64": ArchBoot(
        packages=(
            "isolinux", "syslinux-common", "grub-efi-amd64-signed", "shim-signed",
            "shim-helpers-amd64-signed",
        ),
        efi_suffix="x64",
        grub_efi_dir="x86_64-efi-signed",
        grub_platform="x86_64-efi",
        bios=True,
    ),
    "arm64": ArchBoot(
        packages=("grub-efi-arm64-signed", "shim-signed", "shim-helpers-arm64-signed"),
        efi_suffix="aa64",
        grub_efi_dir="arm64-efi-signed",
        grub_platform="arm64-efi",
        bios=False,
    ),
}


def arch_boot(arch: str) -> ArchBoot:
    """The boot table entry of arch; BootFilesError for one deblive cannot boot yet."""
    try:
        return ARCHES[arch]
    except KeyError:
        raise BootFilesError(
            f"no bootable ISO layout known for architecture {arch!r}; "
            f"supported: {', '.join(ARCHES)}"
        ) from None


def boot_packages(arch: str) -> list[str]:
    """Packages of the target release whose files make the medium bootable."""
    return list(arch_boot(arch).packages)


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
    """Signed UEFI binaries and the names they take in /EFI/boot."""

    suffix: str  # x64, aa64
    grub_platform: str
    shim: Path  # shim<suffix>.efi.signed -> boot<suffix>.efi
    mokmanager: Path  # mm<suffix>.efi.signed -> mm<suffix>.efi
    grub: Path  # gcd<suffix>.efi.signed (grub for CDs) -> grub<suffix>.efi

    def efi_boot_names(self) -> dict[str, Path]:
        """/EFI/boot file name -> source: what the firmware and shim look for."""
        return {
            f"boot{self.suffix}.efi": self.shim,
            f"grub{self.suffix}.efi": self.grub,
            f"mm{self.suffix}.efi": self.mokmanager,
        }


@dataclass(frozen=True)
class BootFiles:
    """Every boot file found in the unpacked packages; bios is None without BIOS boot."""

    arch: str
    bios: BiosFiles | None
    efi: EfiFiles


def package_of_deb(deb: Path) -> str:
    """Package name from a Debian archive file name (name_version_arch.deb)."""
    return deb.name.split("_", 1)[0]


def select_debs(debs: Iterable[Path], arch: str) -> list[Path]:
    """The .deb files of arch's boot packages; BootFilesError naming any missing."""
    wanted = boot_packages(arch)
    by_name: dict[str, Path] = {}
    for deb in sorted(debs):
        if package_of_deb(deb) in wanted:
            by_name[package_of_deb(deb)] = deb
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise BootFilesError(
            f"boot packages not downloaded for {arch}: {', '.join(missing)}"
        )
    return [by_name[name] for name in wanted]


def unpack_debs(runner: Runner, debs: Sequence[Path], dest: Path) -> None:
    """Extract the debs' data into a fresh dest (no maintainer scripts run)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for deb in debs:
        runner.run(["dpkg-deb", "-x", deb, dest], what=f"unpacking {deb.name}")


def _need(path: Path) -> Path:
    if not path.is_file():
        raise BootFilesError(f"boot file missing from the unpacked boot packages: {path}")
    return path


def locate(root: Path, arch: str) -> BootFiles:
    """Find the boot files in an unpacked tree (root = WorkTree.bootfiles)."""
    table = arch_boot(arch)
    bios = None
    if table.bios:
        modules_dir = root / "usr/lib/syslinux/modules/bios"
        bios = BiosFiles(
            isolinux_bin=_need(root / "usr/lib/ISOLINUX/isolinux.bin"),
            isohdpfx_bin=_need(root / "usr/lib/ISOLINUX/isohdpfx.bin"),
            modules={name: _need(modules_dir / name) for name in ISOLINUX_MODULES},
        )
    sfx = table.efi_suffix
    efi = EfiFiles(
        suffix=sfx,
        grub_platform=table.grub_platform,
        shim=_need(root / f"usr/lib/shim/shim{sfx}.efi.signed"),
        mokmanager=_need(root / f"usr/lib/shim/mm{sfx}.efi.signed"),
        grub=_need(root / f"usr/lib/grub/{table.grub_efi_dir}/gcd{sfx}.efi.signed"),
    )
    return BootFiles(arch=arch, bios=bios, efi=efi)


def unpack_boot_files(
    runner: Runner, debs_dir: Path, dest: Path, arch: str
) -> BootFiles:
    """Unpack arch's boot packages from debs_dir into dest and locate their files."""
    debs = select_debs(debs_dir.glob("*.deb"), arch)
    unpack_debs(runner, debs, dest)
    return locate(dest, arch)
