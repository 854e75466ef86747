"""armhf media: Debian signs no shim or grub for armhf, so its medium carries a grub
the host's grub-mkimage links from the target release's grub-efi-arm-bin modules
(copied out of the package like every boot file), started by the firmware as
/EFI/boot/bootarm.efi; booted in qemu-system-arm's virt with AAVMF32 (qemu-efi-arm).
No Secure Boot and no network grub for it. No root, no qemu started.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deblive.boottest.modes import BootMode
from deblive.build import bootfiles
from deblive.build.bootfiles import BootFilesError
from deblive.host import preflight
from deblive.model import config
from deblive.model.arch import Arch
from deblive.vm.command import Accel, Media, VMSpec, build_command
from deblive.vm.firmware import select_firmware
from tests.unit.test_vm import option_value

from . import conftest
from .conftest import RecordingRunner

MODULES = "/usr/lib/grub/arm-efi"


def test_the_armhf_layout_is_unsigned_grub_efi_arm() -> None:
    layout = Arch.ARMHF.boot
    assert layout is not None and not layout.signed and not layout.bios
    assert layout.packages == ("grub-efi-arm-bin",)
    assert (layout.efi_suffix, layout.grub_efi_dir, layout.grub_platform) == (
        "arm", "arm-efi", "arm-efi")
    assert layout.devicetree  # grub's devicetree on EFI ARM
    assert Arch.ARMHF.kernel_package == "linux-image-armmp"
    assert Arch.ARMHF.serial_tty == "ttyAMA0"
    assert Arch.from_machine("armv7l") is Arch.ARMHF
    assert Arch.ARMHF.is_foreign(Arch.AMD64)


def unpacked_grub(root: Path, outside: Path) -> None:
    """grub-efi-arm-bin unpacked, with a header of its own and hostile links."""
    conftest.unpacked_grub(root, outside, MODULES,
                           ("kernel.img", "normal.mod", "fdt.mod", "moddep.lst", "command.lst"),
                           {"config.h": "/* not needed */\n"})


def test_the_modules_are_copied_out_and_grub_is_named_for_the_firmware(tmp_path: Path) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    unpacked_grub(tmp_path / "unpacked", outside)
    files = bootfiles.locate(tmp_path / "unpacked", tmp_path / "files", Arch.ARMHF)
    assert files.bios is None and files.net is None and files.efi is not None
    assert files.efi.shim is None and files.efi.mokmanager is None
    assert files.efi.grub == tmp_path / "files" / "grubarm.efi"
    # No shim: the firmware starts grub itself, by the removable-media name.
    assert files.efi.efi_boot_names() == {"bootarm.efi": files.efi.grub}
    copied = tmp_path / "files" / "grub-modules"
    # Only the package's own regular files: a link out of it is neither followed nor kept.
    assert sorted(p.name for p in copied.iterdir()) == [
        "command.lst", "fdt.mod", "kernel.img", "moddep.lst", "normal.mod"]
    assert not any(p.is_symlink() for p in copied.iterdir())
    assert (outside / "secret").read_text() == "host file\n"


def test_a_package_without_grubs_modules_is_refused(tmp_path: Path) -> None:
    (tmp_path / "unpacked" / "usr/lib/grub").mkdir(parents=True)
    with pytest.raises(BootFilesError, match=r"grub's modules missing.*arm-efi"):
        bootfiles.locate(tmp_path / "unpacked", tmp_path / "files", Arch.ARMHF)


def test_grub_mkimage_links_an_image_that_finds_the_medium_offline(tmp_path: Path) -> None:
    layout = Arch.ARMHF.boot
    assert layout is not None
    argv = bootfiles.grub_mkimage_argv(layout, Path("/f/grub-modules"), Path("/f/grubarm.efi"))
    assert argv[:9] == ["grub-mkimage", "--format", "arm-efi", "--directory", "/f/grub-modules",
                        "--prefix", "/EFI/debian", "--output", "/f/grubarm.efi"]
    modules = set(argv[9:])
    # efi.img's early config (search, source) and the menus (linux, initrd, devicetree,
    # the serial and screen terminals, loopback.cfg's ISO loop mount).
    assert {"normal", "search", "search_fs_file", "iso9660", "fat", "linux", "fdt",
            "serial", "terminal", "gfxterm", "loopback", "test", "echo"} <= modules
    assert not modules & {"net", "efinet", "http", "tftp"}  # a medium reads no network


def test_make_unsigned_grub_runs_grub_mkimage_for_the_unsigned_layout(tmp_path: Path) -> None:
    outside = tmp_path / "host"
    outside.mkdir()
    unpacked_grub(tmp_path / "unpacked", outside)
    files = bootfiles.locate(tmp_path / "unpacked", tmp_path / "files", Arch.ARMHF)
    runner = RecordingRunner()
    bootfiles.make_unsigned_grub(runner, files, tmp_path / "files")
    [argv] = runner.argvs
    assert argv[:3] == ["grub-mkimage", "--format", "arm-efi"]
    assert str(tmp_path / "files" / "grub-modules") in argv


def test_netboot_is_refused_for_armhf_in_the_config_and_by_the_boot_files(
    tmp_path: Path
) -> None:
    with pytest.raises(config.ConfigError, match=r"netboot.*armhf has no network boot loader"):
        conftest.parse({"name": "x", "architecture": "armhf", "formats": ["iso", "netboot"],
                        "netboot": {"url": "http://192.0.2.1/"}})
    outside = tmp_path / "host"
    outside.mkdir()
    unpacked_grub(tmp_path / "unpacked", outside)
    with pytest.raises(BootFilesError, match="no network boot loader for armhf"):
        bootfiles.locate(tmp_path / "unpacked", tmp_path / "files", Arch.ARMHF, netboot=True)
    cfg = conftest.parse({"name": "x", "architecture": "armhf", "formats": ["iso", "disk"],
                         "persistence": {"size": "64MiB"}})
    assert cfg.architecture is Arch.ARMHF


def test_preflight_wants_grub_mkimage_for_an_armhf_medium(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which",
                        lambda tool: None if tool == "grub-mkimage" else f"/usr/bin/{tool}")
    cfg = conftest.parse({"name": "x", "architecture": "armhf"})
    assert preflight.missing_tools(cfg, with_iso=True) == ["grub-mkimage (package grub-common)"]
    assert preflight.missing_tools(cfg, with_iso=False) == []
    amd64 = conftest.parse({"name": "x", "architecture": "amd64"})
    assert preflight.missing_tools(amd64, with_iso=True) == []


def test_armhf_boots_in_qemu_system_arm_virt_with_aavmf32() -> None:
    qemu = Arch.ARMHF.qemu
    assert qemu is not None
    firmware = select_firmware("uefi", qemu, [], exists=lambda _: True)
    assert firmware is not None and firmware.code == Path("/usr/share/AAVMF/AAVMF32_CODE.fd")
    spec = VMSpec(arch=Arch.ARMHF, accel=Accel.TCG, firmware=firmware,
                  vars_file=Path("/w/vars.fd"), media=Media(Path("/i/a.iso"), "cd"))
    argv = build_command(spec)
    assert argv[0] == "qemu-system-arm"
    assert option_value(argv, "-machine") == ["virt"]
    assert option_value(argv, "-cpu") == ["cortex-a15"]
    assert "scsi-cd,bus=scsi.0,drive=media,bootindex=1" in option_value(argv, "-device")
    assert any("AAVMF32_CODE.fd" in value for value in option_value(argv, "-drive"))


def test_armhf_boots_uefi_without_secure_boot_or_bios() -> None:
    assert BootMode.UEFI_CD.not_applicable(Arch.ARMHF) is None
    assert BootMode.UEFI_USB.not_applicable(Arch.ARMHF) is None
    secure = BootMode.SECUREBOOT_CD.not_applicable(Arch.ARMHF)
    assert secure is not None and "signs no shim or grub" in secure
    bios = BootMode.BIOS_USB.not_applicable(Arch.ARMHF)
    assert bios is not None and "UEFI only" in bios
