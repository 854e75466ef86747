"""riscv64 media (from trixie, its first release): Debian signs no boot loader for it, so
the medium carries a grub the host's grub-mkimage links from the release's
grub-efi-riscv64-bin modules, started as /EFI/boot/bootriscv64.efi. It boots in
qemu-system-riscv64's virt through qemu's OpenSBI and U-Boot's UEFI (u-boot-qemu,
loaded as -kernel, no flash): U-Boot boots virtio disks only, so the stick is a virtio
disk and the CD modes are skipped with the reason. No root, no qemu started.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deblive.boottest import modes
from deblive.boottest.modes import BootMode
from deblive.build import bootfiles
from deblive.host import preflight
from deblive.model import config
from deblive.model.arch import Arch, QemuSystem
from deblive.vm.command import Accel, DirectKernel, Media, VMSpec, build_command
from deblive.vm.errors import QemuError
from deblive.vm.firmware import Firmware, FirmwareKind, select_firmware
from tests.unit.test_i386 import RELEASES
from tests.unit.test_vm import option_value

from . import conftest


def u_boot() -> Firmware:
    qemu = Arch.RISCV64.qemu
    assert qemu is not None
    firmware = select_firmware("uefi", qemu, [], exists=lambda _: True)
    assert firmware is not None
    return firmware


def test_the_riscv64_layout_is_unsigned_grub_from_trixie() -> None:
    layout = Arch.RISCV64.boot
    assert layout is not None and not layout.signed and not layout.bios
    assert layout.packages == ("grub-efi-riscv64-bin",)
    assert (layout.efi_suffix, layout.grub_efi_dir, layout.grub_platform) == (
        "riscv64", "riscv64-efi", "riscv64-efi")
    assert layout.devicetree
    assert Arch.RISCV64.kernel_package == "linux-image-riscv64"
    assert Arch.RISCV64.serial_tty == "ttyS0"
    assert Arch.from_machine("riscv64") is Arch.RISCV64
    assert Arch.RISCV64.boot_refusal("trixie", RELEASES) is None
    refusal = Arch.RISCV64.boot_refusal("bookworm", RELEASES)
    assert refusal is not None and "riscv64 from bookworm" in refusal
    assert "only trixie and later" in refusal


def test_a_bookworm_riscv64_medium_is_refused_but_a_trixie_one_is_not() -> None:
    with pytest.raises(preflight.PreflightError,
                       match=r"architecture: no bootable medium for riscv64 from bookworm"):
        preflight.check_bootable(conftest.parse(
            {"name": "x", "suite": "bookworm", "architecture": "riscv64"}), RELEASES)
    cfg = conftest.parse({"name": "x", "suite": "trixie", "architecture": "riscv64"})
    preflight.check_bootable(cfg, RELEASES)
    assert cfg.architecture is Arch.RISCV64
    with pytest.raises(config.ConfigError, match=r"netboot.*riscv64 has no network boot loader"):
        conftest.parse({"name": "x", "suite": "trixie", "architecture": "riscv64",
                        "formats": ["iso", "netboot"], "netboot": {"url": "http://192.0.2.1/"}})


def test_grub_mkimage_links_the_riscv64_efi_grub() -> None:
    layout = Arch.RISCV64.boot
    assert layout is not None
    argv = bootfiles.grub_mkimage_argv(layout, Path("/f/m"), Path("/f/grubriscv64.efi"))
    assert argv[:3] == ["grub-mkimage", "--format", "riscv64-efi"]
    assert "fdt" in argv and "linux" in argv


def test_u_boot_is_the_known_riscv64_firmware_without_a_varstore() -> None:
    firmware = u_boot()
    assert firmware.code == Path("/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin")
    assert firmware.vars_template is None and firmware.u_boot
    assert not firmware.boots_cd and not firmware.boots_usb
    # No Secure Boot firmware exists for it.
    qemu = Arch.RISCV64.qemu
    assert qemu is not None
    with pytest.raises(QemuError, match="none is packaged in u-boot-qemu"):
        select_firmware("secureboot", qemu, [], exists=lambda _: True)
    with pytest.raises(QemuError, match="install the u-boot-qemu package"):
        select_firmware("uefi", qemu, [], exists=lambda _: False)


def test_riscv64_boots_u_boot_as_qemus_kernel_and_the_stick_as_a_virtio_disk() -> None:
    spec = VMSpec(arch=Arch.RISCV64, accel=Accel.TCG, firmware=u_boot(),
                  media=Media(Path("/i/a.iso"), "usb"))
    argv = build_command(spec)
    assert argv[0] == "qemu-system-riscv64"
    assert option_value(argv, "-machine") == ["virt"]
    assert "-cpu" not in argv  # qemu's rv64 default
    assert option_value(argv, "-kernel") == ["/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin"]
    assert "-bios" not in argv  # qemu's own OpenSBI starts U-Boot
    assert not any("pflash" in value for value in option_value(argv, "-drive"))
    devices = option_value(argv, "-device")
    assert "virtio-blk-pci,drive=media,bootindex=1" in devices
    assert not any(d.startswith("usb-storage") for d in devices)
    assert "qemu-xhci,id=xhci" in devices  # for the screen's USB keyboard only
    headless = build_command(VMSpec(arch=Arch.RISCV64, accel=Accel.TCG, firmware=u_boot(),
                                    media=Media(Path("/i/a.iso"), "usb"), display=False))
    assert "qemu-xhci,id=xhci" not in option_value(headless, "-device")


def test_u_boot_and_a_direct_kernel_boot_exclude_each_other() -> None:
    spec = VMSpec(arch=Arch.RISCV64, accel=Accel.TCG, firmware=u_boot(),
                  direct_kernel=DirectKernel(Path("/k"), Path("/i"), "console=ttyS0"))
    with pytest.raises(QemuError, match="no direct kernel boot"):
        build_command(spec)


def test_riscv64_modes_are_uefi_usb_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def known(kind: FirmwareKind, qemu: QemuSystem) -> Firmware | None:
        return select_firmware(kind, qemu, [], exists=lambda _: True)

    monkeypatch.setattr(modes, "select_firmware", known)
    assert BootMode.UEFI_USB.not_applicable(Arch.RISCV64) is None
    cd = BootMode.UEFI_CD.not_applicable(Arch.RISCV64)
    assert cd is not None and "U-Boot's UEFI (u-boot-qemu): it boots no CD-ROM" in cd
    secure = BootMode.SECUREBOOT_USB.not_applicable(Arch.RISCV64)
    assert secure is not None and "signs no shim or grub" in secure
    bios = BootMode.BIOS_CD.not_applicable(Arch.RISCV64)
    assert bios is not None and "UEFI only" in bios
    # The flash firmware of other architectures still boots CDs.
    assert BootMode.UEFI_CD.not_applicable(Arch.ARM64) is None
