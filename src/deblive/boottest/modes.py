"""Boot modes: firmware (BIOS, UEFI, UEFI with Secure Boot enforced) times medium (CD, USB).

The EFI CD and USB paths break independently (grml #105), and BIOS and UEFI
take different boot loaders, so each of the six is booted on its own. A mode
the image's architecture does not have is skipped with the reason, never
counted as a failure: arm64 has no BIOS, and Secure Boot off amd64 needs the
firmware with enrolled keys installed.
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

    @property
    def firmware(self) -> FirmwareKind:
        return cast(FirmwareKind, self.value.rsplit("-", 1)[0])

    @property
    def media(self) -> MediaKind:
        return cast(MediaKind, self.value.rsplit("-", 1)[1])

    @property
    def uefi(self) -> bool:
        return self.firmware != "bios"

    def not_applicable(self, arch: Arch) -> str | None:
        """Why this mode cannot be tested for arch's images, or None if it can.

        BIOS needs a BIOS (arm64 is UEFI only). Secure Boot on an architecture
        other than amd64 needs its firmware with enrolled keys installed
        (AAVMF's from qemu-efi-aarch64); on amd64 a missing OVMF stays a failure.
        """
        qemu = arch.qemu
        if qemu is None:
            return f"{self}: deblive cannot boot {arch} guests"
        if self.firmware == "bios" and not qemu.bios:
            return (f"{self}: not applicable to {arch} (UEFI only: qemu's {qemu.machine} "
                    "machine has no BIOS, the ISO no BIOS boot record)")
        if self.firmware == "secureboot" and arch is not Arch.AMD64:
            try:
                select_firmware("secureboot", qemu)
            except QemuError as exc:
                return f"{self}: not applicable: {exc}"
        return None


class BadInput(BadInputError):
    """A missing ISO or an unknown mode: exit status 2."""


def mode_from_name(name: str) -> BootMode:
    try:
        return BootMode(name)
    except ValueError:
        raise BadInput(
            f"unknown mode {name!r} (known: {', '.join(BootMode)})"
        ) from None


def parse_modes(values: Sequence[str] | None) -> list[BootMode]:
    """--mode values (repeated and/or comma lists) to modes in canonical order."""
    if not values:
        return list(BootMode)
    wanted: set[BootMode] = set()
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name:
                wanted.add(mode_from_name(name))
    if not wanted:
        raise BadInput("--mode names no mode")
    return [m for m in BootMode if m in wanted]
