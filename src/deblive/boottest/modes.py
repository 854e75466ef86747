"""Boot modes: firmware (BIOS, UEFI, UEFI with Secure Boot enforced) times medium (CD, USB),
and network boot (PXE) of a netboot tree in each firmware; and Open Firmware's
(IBM POWER, SLOF on qemu's pseries) CD and USB boots of a CHRP medium.

The EFI CD and USB paths break independently (grml #105), and BIOS and UEFI
take different boot loaders, so each of the six is booted on its own; an
ISO or disk image is tested in those six by default, a netboot directory in
the three PXE modes, a ppc64el ISO in the two Open Firmware modes. A mode
the image's architecture does not have is skipped with the reason, never
counted as a failure: arm64 has no BIOS, Secure Boot off amd64 needs the
firmware with enrolled keys installed, ppc64el has neither BIOS nor UEFI and
the others no Open Firmware.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import cast

from deblive.core.errors import BadInputError
from deblive.model.arch import Arch
from deblive.vm.command import MediaKind
from deblive.vm.errors import QemuError
from deblive.vm.firmware import FirmwareKind, select_firmware


class BootMode(enum.StrEnum):
    BIOS_CD = "bios-cd"
    BIOS_USB = "bios-usb"
    UEFI_CD = "uefi-cd"
    UEFI_USB = "uefi-usb"
    SECUREBOOT_CD = "secureboot-cd"
    SECUREBOOT_USB = "secureboot-usb"
    PXE_BIOS = "pxe-bios"
    PXE_UEFI = "pxe-uefi"
    PXE_SECUREBOOT = "pxe-secureboot"
    OFW_CD = "ofw-cd"
    OFW_USB = "ofw-usb"  # SLOF boots the same file as a USB disk (xHCI)

    @property
    def network(self) -> bool:
        """A PXE boot of a netboot tree (qemu's TFTP server, HTTP for the squashfs)."""
        return self.value.startswith("pxe-")

    @property
    def firmware(self) -> FirmwareKind:
        return cast(FirmwareKind, self.value.removeprefix("pxe-").split("-", 1)[0])

    @property
    def media(self) -> MediaKind:
        """The medium's kind; a network mode has none (ValueError)."""
        if self.network:
            raise ValueError(f"{self} boots from the network, not from a medium")
        return cast(MediaKind, self.value.rsplit("-", 1)[1])

    @property
    def uefi(self) -> bool:
        return self.firmware in ("uefi", "secureboot")

    @property
    def open_firmware(self) -> bool:
        return self.firmware == "ofw"

    @property
    def interface(self) -> str:
        """What the booted kernel shows of the firmware (checks.check_firmware)."""
        return "uefi" if self.uefi else self.firmware

    def not_applicable(self, arch: Arch) -> str | None:
        """Why this mode cannot be tested for arch's images, or None if it can.

        BIOS needs a BIOS (arm64 is UEFI only). Secure Boot on an architecture
        other than amd64 needs its firmware with enrolled keys installed
        (AAVMF's from qemu-efi-aarch64); on amd64 a missing OVMF stays a failure.
        U-Boot's UEFI (riscv64) boots disks, not CDs. Open Firmware (ppc64el)
        and the other firmware exclude each other, machine and medium alike.
        """
        qemu = arch.qemu
        if qemu is None:
            return f"{self}: deblive cannot boot {arch} guests"
        if qemu.open_firmware and not self.open_firmware:
            return (f"{self}: not applicable to {arch} (Open Firmware only: qemu's "
                    f"{qemu.machine} machine boots through SLOF, and the medium is CHRP, "
                    f"with no BIOS or EFI boot record; its modes: {', '.join(OFW_MODES)})")
        if self.open_firmware and not qemu.open_firmware:
            return (f"{self}: not applicable to {arch} (no Open Firmware: qemu's "
                    f"{qemu.machine} machine has {'BIOS and ' if qemu.bios else ''}UEFI, "
                    "the medium no CHRP boot)")
        if self.firmware == "bios" and not qemu.bios:
            return (f"{self}: not applicable to {arch} (UEFI only: qemu's {qemu.machine} "
                    "machine has no BIOS, the ISO no BIOS boot record)")
        if self.firmware == "secureboot" and arch.boot is not None and not arch.boot.signed:
            return (f"{self}: not applicable to {arch} (Debian signs no shim or grub for it: "
                    "its medium has no Secure Boot chain)")
        if self.firmware == "secureboot" and arch is not Arch.AMD64:
            try:
                select_firmware("secureboot", qemu)
            except QemuError as exc:
                return f"{self}: not applicable: {exc}"
        if not self.network and self.media == "cd" and self.uefi:
            try:
                firmware = select_firmware(self.firmware, qemu)
            except QemuError:
                return None  # the boot reports the missing firmware
            if firmware is not None and not firmware.boots_cd:
                return (f"{self}: not applicable to {arch} with U-Boot's UEFI "
                        f"({qemu.firmware_package}): it boots no CD-ROM on qemu's "
                        f"{qemu.machine} (uefi-usb boots the same image as a disk)")
        return None


MEDIUM_MODES: tuple[BootMode, ...] = tuple(
    m for m in BootMode if not m.network and not m.open_firmware)
PXE_MODES: tuple[BootMode, ...] = tuple(m for m in BootMode if m.network)
OFW_MODES: tuple[BootMode, ...] = tuple(m for m in BootMode if m.open_firmware)


def default_modes(arch: Arch | None = None, network: bool = False) -> tuple[BootMode, ...]:
    """The modes a test without --mode boots: a netboot directory's PXE modes; an image
    of an architecture booted by Open Firmware in its modes; any other image (or one
    of an architecture not known yet) in the six medium modes."""
    if network:
        return PXE_MODES
    if arch is not None and arch.qemu is not None and arch.qemu.open_firmware:
        return OFW_MODES
    return MEDIUM_MODES


class BadInput(BadInputError):
    """A missing ISO or an unknown mode: exit status 2."""


def mode_from_name(name: str) -> BootMode:
    try:
        return BootMode(name)
    except ValueError:
        raise BadInput(
            f"unknown mode {name!r} (known: {', '.join(BootMode)})"
        ) from None


def parse_modes(values: Sequence[str] | None, network: bool = False,
                arch: Arch | None = None) -> list[BootMode]:
    """--mode values (repeated and/or comma lists) to modes in canonical order; none:
    default_modes() for the image's architecture (arch, when known)."""
    if not values:
        return list(default_modes(arch, network))
    wanted: set[BootMode] = set()
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name:
                wanted.add(mode_from_name(name))
    if not wanted:
        raise BadInput("--mode names no mode")
    return check_target(sorted(wanted, key=list(BootMode).index), network)


def check_target(modes: Sequence[BootMode], network: bool) -> list[BootMode]:
    """modes unchanged if they fit the target: PXE modes for a netboot directory
    (network), medium modes for an image file; BadInput naming the others."""
    wrong = [m for m in modes if m.network != network]
    if wrong:
        raise BadInput(
            f"{', '.join(wrong)}: " + ("a netboot directory boots in the PXE modes only: "
                                     + ", ".join(PXE_MODES)
                                     if network else "PXE modes boot a netboot directory "
                                     "(OUTDIR/netboot), not an image file"))
    return list(modes)
