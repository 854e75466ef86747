"""Firmware for the test and builder VMs: UEFI chosen the way qemu's own tools choose it.

/usr/share/qemu/firmware/*.json (and /etc/qemu/firmware, which overrides)
describe each firmware build: its architecture and machines, its code and
variable-store files, and whether it enforces Secure Boot with enrolled
keys. Debian's package paths are the fallback for hosts without them; for
RISC-V that is U-Boot's UEFI (u-boot-qemu), which qemu loads after its own
OpenSBI, since a bookworm host packages no EDK2 for it. IBM POWER's pseries
machine has Open Firmware instead, SLOF, which qemu loads itself from its
data (slof.bin): nothing to choose, nothing to pass, no variable store.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from deblive.model.arch import QemuSystem
from deblive.vm.errors import QemuError

FIRMWARE_DESCRIPTOR_DIRS = (Path("/usr/share/qemu/firmware"), Path("/etc/qemu/firmware"))
FirmwareKind = Literal["bios", "uefi", "secureboot", "ofw"]  # ofw: Open Firmware (SLOF)


@dataclass(frozen=True)
class Firmware:
    """A UEFI code image with the template of its variable store (in flash), or
    U-Boot (u_boot: qemu's -kernel, no variable store), or Open Firmware built into
    qemu (open_firmware: SLOF, code is the file qemu loads by itself)."""

    code: Path
    vars_template: Path | None
    secure_boot: bool
    requires_smm: bool
    source: str  # descriptor file or "known path", for the log
    u_boot: bool = False
    open_firmware: bool = False

    @property
    def boots_cd(self) -> bool:
        """It boots a CD-ROM (El Torito): U-Boot's qemu build finds none."""
        return not self.u_boot

    @property
    def boots_usb(self) -> bool:
        """It boots a USB stick; U-Boot's qemu build boots virtio disks only, so a
        stick is attached as one (the same hybrid image, its EFI partition)."""
        return not self.u_boot


def _descriptor_files(dirs: Sequence[Path]) -> list[Path]:
    """Descriptor files in priority order; a later dir overrides a same-named file.

    That is the rule of qemu's firmware.json spec: /etc overrides /usr/share,
    and the file names (NN-name.json) give the order.
    """
    by_name: dict[str, Path] = {}
    for directory in dirs:
        if directory.is_dir():
            for path in directory.glob("*.json"):
                by_name[path.name] = path
    return [by_name[name] for name in sorted(by_name)]


def firmware_from_descriptor(
    data: Mapping[str, Any], source: str, qemu: QemuSystem
) -> Firmware | None:
    """The flash firmware for qemu's machine (x86_64 q35, aarch64 virt) a
    descriptor describes, or None if it is not one."""
    if "uefi" not in data.get("interface-types", []):
        return None
    mapping = data.get("mapping", {})
    if mapping.get("device") != "flash":
        return None
    targets = data.get("targets", [])
    if not any(
        t.get("architecture") == qemu.qemu_arch
        and any(fnmatch.fnmatch(qemu.descriptor_machine, m) for m in t.get("machines", []))
        for t in targets
    ):
        return None
    try:
        code = Path(mapping["executable"]["filename"])
        template = Path(mapping["nvram-template"]["filename"])
    except (KeyError, TypeError):
        return None
    features = set(data.get("features", []))
    return Firmware(
        code=code,
        vars_template=template,
        # Secure Boot is only enforced when the keys are enrolled: the
        # "secure" build with an empty varstore boots anything.
        secure_boot="secure-boot" in features and "enrolled-keys" in features,
        requires_smm="requires-smm" in features,
        source=source,
    )


def _known_firmware(kind: FirmwareKind, qemu: QemuSystem) -> Firmware | None:
    """Debian's ovmf (qemu-efi-aarch64) package paths, for hosts without descriptors.

    Only OVMF's Secure Boot build needs SMM; AAVMF keeps its varstore safe
    without it (the flash is not reachable from the guest's EL1).
    """
    directory = qemu.firmware_dir
    if kind == "ofw":
        code, _ = qemu.known_plain
        return Firmware(directory / code, None, False, False, "qemu's own", open_firmware=True)
    if kind == "secureboot":
        if qemu.known_secure is None:
            return None
        secure_code, secure_vars = qemu.known_secure
        smm = qemu.secure_boot_needs_smm
        return Firmware(directory / secure_code, directory / secure_vars, True, smm, "known path")
    code, template = qemu.known_plain
    return Firmware(directory / code, directory / template if template else None, False,
                    qemu.plain_needs_smm, "known path", u_boot=qemu.known_is_u_boot)


def select_firmware(
    kind: FirmwareKind,
    qemu: QemuSystem,
    descriptor_dirs: Sequence[Path] = FIRMWARE_DESCRIPTOR_DIRS,
    exists: Callable[[Path], bool] = Path.is_file,
) -> Firmware | None:
    """The firmware for a mode: None for BIOS (qemu's built-in SeaBIOS).

    uefi wants a build without Secure Boot (so an unsigned boot loader works and
    SMM is not needed); secureboot wants one with Secure Boot and enrolled
    (Microsoft) keys, because only that proves the shim chain is accepted. ofw
    is the machine's Open Firmware, which qemu's data holds (no descriptor
    describes it); a machine that has it has nothing else.
    """
    if kind == "bios":
        if not qemu.bios:
            raise QemuError(f"{qemu.machine} has no BIOS: its images boot with "
                            f"{'Open Firmware' if qemu.open_firmware else 'UEFI'} only")
        return None
    if (kind == "ofw") != qemu.open_firmware:
        raise QemuError(f"{qemu.machine} has Open Firmware only: no {kind} firmware"
                        if qemu.open_firmware else f"{qemu.machine} has no Open Firmware")
    if kind == "ofw":
        slof = _known_firmware(kind, qemu)
        assert slof is not None
        if not exists(slof.code):
            raise QemuError(f"no Open Firmware for {qemu.machine} found (no {slof.code}): "
                            f"install the {qemu.firmware_package} package")
        return slof
    want_secure = kind == "secureboot"
    for path in _descriptor_files(descriptor_dirs):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        firmware = firmware_from_descriptor(data, str(path), qemu)
        if firmware is None or firmware.secure_boot != want_secure:
            continue
        # Plain UEFI: no Secure Boot capable build at all, enrolled or not
        # (OVMF's needs SMM; AAVMF's "secboot" build would enforce it).
        if not want_secure and (firmware.requires_smm or "secure-boot" in data.get("features", [])):
            continue
        if exists(firmware.code) and firmware.vars_template is not None and exists(
                firmware.vars_template):
            return firmware
    fallback = _known_firmware(kind, qemu)
    if fallback is not None and exists(fallback.code) and (
            fallback.vars_template is None or exists(fallback.vars_template)):
        return fallback
    what = f"{qemu.qemu_arch} {kind} firmware"
    if kind == "secureboot":
        what += " with enrolled keys"
    if fallback is None:
        raise QemuError(f"no {what} found (no matching descriptor in "
                        f"{', '.join(map(str, descriptor_dirs))}) and none is packaged "
                        f"in {qemu.firmware_package}")
    raise QemuError(
        f"no {what} found (no matching descriptor in "
        f"{', '.join(map(str, descriptor_dirs))}, no {fallback.code}): "
        f"install the {qemu.firmware_package} package"
    )


