"""ppc64el media (IBM POWER, from bookworm): the machine boots through Open Firmware, so
the medium is a CHRP ISO (one MBR partition of type 0x96) whose /ppc/bootinfo.txt
names a grub ELF the host's grub-mkimage links from the release's grub-ieee1275-bin
modules (copied out of the package like every boot file), with an early config
inside that finds this build's medium. Booted in qemu-system-ppc64's pseries through
qemu's own SLOF: the CD on the virtual SCSI, the same file as a USB disk. No EFI, no
BIOS, no Secure Boot, no netboot tree, no disk image. No root, no qemu started.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deblive.boottest import checks
from deblive.boottest import run as boottest
from deblive.boottest.medium import BOOT_ENTRIES, BootEntries
from deblive.boottest.modes import (
    MEDIUM_MODES,
    OFW_MODES,
    PXE_MODES,
    BootMode,
    default_modes,
    parse_modes,
)
from deblive.boottest.shell import LOGIN_PROMPT, SerialShell, login
from deblive.build import bootfiles, chroot, menus
from deblive.build.bootfiles import BootFilesError
from deblive.build.stages import bootloaders, iso, medium
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.host import preflight
from deblive.host.imagetree import ImageTree
from deblive.model import bootmenu, config
from deblive.model.arch import Arch, BootFirmware, QemuSystem
from deblive.release import matrix
from deblive.vm.command import Accel, Media, VMSpec, build_command
from deblive.vm.errors import QemuError
from deblive.vm.firmware import Firmware, select_firmware
from deblive.vm.machine import Machine
from tests.support import fakeqemu
from tests.unit.conftest import RecordingRunner
from tests.unit.test_i386 import RELEASES
from tests.unit.test_vm import option_value

from . import conftest

MODULES = "/usr/lib/grub/powerpc-ieee1275"
BUILD_ID = "0c4b1b0e6f6a4c1c9d1e2f3a4b5c6d7e"


def pseries() -> QemuSystem:
    qemu = Arch.PPC64EL.qemu
    assert qemu is not None
    return qemu


def slof() -> Firmware:
    firmware = select_firmware("ofw", pseries(), [], exists=lambda _: True)
    assert firmware is not None
    return firmware


# -- the layout


def test_the_ppc64el_layout_is_open_firmwares_unsigned_grub_from_bookworm() -> None:
    layout = Arch.PPC64EL.boot
    assert layout is not None and not layout.signed and not layout.bios
    assert layout.firmware is BootFirmware.IEEE1275 and not layout.firmware.efi
    assert layout.packages == ("grub-ieee1275-bin",)
    assert (layout.grub_efi_dir, layout.grub_platform) == ("powerpc-ieee1275", "powerpc-ieee1275")
    assert layout.firmware.grub_prefix == "/boot/grub"
    assert not layout.devicetree  # grub's ieee1275 platform has no devicetree command
    assert Arch.PPC64EL.kernel_package == "linux-image-powerpc64le"
    assert Arch.PPC64EL.serial_tty == "hvc0"
    assert Arch.from_machine("ppc64le") is Arch.PPC64EL
    assert Arch.PPC64EL.boot_refusal("bookworm", RELEASES) is None
    assert Arch.PPC64EL.boot_refusal("trixie", RELEASES) is None
    refusal = Arch.PPC64EL.boot_refusal("bullseye", RELEASES)
    assert refusal is not None and "only bookworm and later" in refusal
    assert Arch.PPC64EL in Arch.bootable()


@pytest.mark.parametrize("arch", [Arch.AMD64, Arch.ARM64, Arch.I386, Arch.ARMHF, Arch.RISCV64])
def test_the_other_layouts_stay_uefi(arch: Arch) -> None:
    layout = arch.boot
    assert layout is not None and layout.firmware is BootFirmware.UEFI
    assert layout.firmware.grub_prefix == "/EFI/debian"
    assert layout.disk_refusal() is None
    assert arch.qemu is not None and not arch.qemu.open_firmware


# -- boot files: modules copied out, grub linked with its early config


def unpacked_grub(root: Path, outside: Path) -> None:
    """grub-ieee1275-bin unpacked: its own bootinfo.txt and grub.chrp are not taken."""
    conftest.unpacked_grub(root, outside, MODULES,
                           ("kernel.img", "normal.mod", "iso9660.mod", "moddep.lst", "command.lst"),
                           {"bootinfo.txt": "<chrp-boot>grub's own</chrp-boot>\n",
                            "grub.chrp": "not needed\n"})


@pytest.fixture
def located(tmp_path: Path) -> Iterator[bootfiles.BootFiles]:
    outside = tmp_path / "host"
    outside.mkdir()
    unpacked_grub(tmp_path / "unpacked", outside)
    yield bootfiles.locate(tmp_path / "unpacked", tmp_path / "files", Arch.PPC64EL)
    assert (outside / "secret").read_text() == "host file\n"


def test_the_modules_are_copied_out_and_grub_is_a_chrp_elf(
    located: bootfiles.BootFiles, tmp_path: Path
) -> None:
    assert located.efi is None and located.bios is None and located.net is None
    assert located.chrp is not None
    assert located.chrp.grub == tmp_path / "files" / "powerpc.elf" == located.grub
    assert located.grub_platform == "powerpc-ieee1275"
    copied = tmp_path / "files" / "grub-modules"
    # Only the package's own regular files: a link out of it is neither followed nor kept.
    assert sorted(p.name for p in copied.iterdir()) == [
        "command.lst", "iso9660.mod", "kernel.img", "moddep.lst", "normal.mod"]
    assert not any(p.is_symlink() for p in copied.iterdir())


def test_a_package_without_grubs_modules_is_refused(tmp_path: Path) -> None:
    (tmp_path / "unpacked" / "usr/lib/grub").mkdir(parents=True)
    with pytest.raises(BootFilesError, match=r"grub's modules missing.*powerpc-ieee1275"):
        bootfiles.locate(tmp_path / "unpacked", tmp_path / "files", Arch.PPC64EL)


def test_grub_mkimage_links_an_ieee1275_grub_with_its_early_config_inside() -> None:
    layout = Arch.PPC64EL.boot
    assert layout is not None
    argv = bootfiles.grub_mkimage_argv(layout, Path("/f/grub-modules"), Path("/f/powerpc.elf"),
                                       Path("/f/early.cfg"))
    assert argv[:11] == ["grub-mkimage", "--format", "powerpc-ieee1275",
                         "--directory", "/f/grub-modules", "--prefix", "/boot/grub",
                         "--config", "/f/early.cfg", "--output", "/f/powerpc.elf"]
    modules = set(argv[11:])
    assert {"normal", "search", "search_fs_file", "iso9660", "linux", "echo", "test",
            "terminal", "loopback"} <= modules
    # Not in grub-ieee1275-bin: grub-mkimage would stop at them.
    assert not modules & {"fdt", "efi_gop"}
    assert not modules & {"net", "ofnet", "http", "tftp"}  # a medium reads no network
    # The EFI layouts' argv is the same as before: no --config, their prefix.
    armhf = Arch.ARMHF.boot
    assert armhf is not None
    efi = bootfiles.grub_mkimage_argv(armhf, Path("/m"), Path("/o"))
    assert "--config" not in efi and efi[efi.index("--prefix") + 1] == "/EFI/debian"
    assert "fdt" in efi


def test_the_early_config_finds_this_builds_medium_in_the_rescue_parsers_language() -> None:
    text = bootloaders.chrp_early_config(BUILD_ID)
    assert text.splitlines() == [
        f"search --no-floppy --file --set=root /.disk/id/{BUILD_ID}",
        "set prefix=($root)/boot/grub",
    ]
    # grub runs an embedded config with its rescue parser: `if` is an unknown command.
    assert not any(word in text.split() for word in ("if", "then", "fi", "source"))


def test_make_unsigned_grub_embeds_the_early_config(
    located: bootfiles.BootFiles, tmp_path: Path
) -> None:
    runner = RecordingRunner()
    files_dir = tmp_path / "files"
    bootfiles.make_unsigned_grub(runner, located, files_dir,
                                 bootloaders.chrp_early_config(BUILD_ID))
    [argv] = runner.argvs
    assert argv[:3] == ["grub-mkimage", "--format", "powerpc-ieee1275"]
    config_file = Path(argv[argv.index("--config") + 1])
    assert config_file == files_dir / bootfiles.EARLY_CONFIG
    assert f"/.disk/id/{BUILD_ID}" in config_file.read_text()
    assert argv[argv.index("--output") + 1] == str(files_dir / "powerpc.elf")
    assert str(files_dir / "grub-modules") in argv
    with pytest.raises(BootFilesError, match="needs an early config"):
        bootfiles.make_unsigned_grub(RecordingRunner(), located, files_dir)


def test_the_medium_gets_the_grub_elf_and_a_fixed_bootinfo(
    located: bootfiles.BootFiles, tmp_path: Path
) -> None:
    assert located.chrp is not None
    located.chrp.grub.write_bytes(b"\x7fELF grub\n")
    tree = tmp_path / "medium"
    bootloaders.install_chrp(tree, located.chrp)
    assert (tree / "boot/grub/powerpc.elf").read_bytes() == b"\x7fELF grub\n"
    assert (tree / "ppc/bootinfo.txt").read_text() == (
        "<chrp-boot>\n"
        "<description>deblive</description>\n"
        "<os-name>deblive</os-name>\n"
        "<boot-script>boot &device;:\\boot\\grub\\powerpc.elf</boot-script>\n"
        "</chrp-boot>\n"
    )
    assert sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()) == [
        "boot/grub/powerpc.elf", "ppc/bootinfo.txt"]  # no /EFI, no efi.img


def test_the_kernel_is_found_by_powers_name(tmp_path: Path) -> None:
    """Debian's ppc64el kernel is an ELF, /boot/vmlinux-<version> (build.kernels)."""
    boot = tmp_path / "boot"
    boot.mkdir()
    version = "6.1.0-50-powerpc64le"
    (boot / f"vmlinux-{version}").write_bytes(b"\x7fELF")
    (boot / f"initrd.img-{version}").write_bytes(b"i")
    (tmp_path / "lib/modules" / version).mkdir(parents=True)
    with ImageTree(tmp_path) as tree:
        [kernel] = medium.find_kernels(tree)
        assert (kernel.version, kernel.vmlinuz) == (version, f"/boot/vmlinux-{version}")
        assert chroot.InitramfsDeferral(tree, RecordingRunner()).kernels() == [version]


# -- the menu: grub's console is the serial console


def test_grubs_menu_uses_open_firmwares_console_and_the_kernel_hvc0() -> None:
    cfg = conftest.parse({"name": "x", "architecture": "ppc64el"})
    menu = bootmenu.build_menu(cfg, splash=True)
    text = menus.render_grub(menu)
    assert "terminal_output console\nterminal_input console\n" in text
    assert "serial" not in text.replace("console=hvc0", "")  # no serial terminal, no efi0
    assert "loadfont" not in text and "gfxterm" not in text
    live = menu.entry(menu.default)
    assert live.kernel == "/live/vmlinuz"
    assert live.cmdline[-1] == "console=hvc0,115200n8"
    # The other architectures' menus keep their serial terminals.
    amd64 = menus.render_grub(bootmenu.build_menu(conftest.parse({"name": "x"}), splash=True))
    assert "serial --unit=0 --speed=115200" in amd64


# -- the ISO: CHRP, read back


def test_xorriso_makes_a_chrp_iso_without_el_torito() -> None:
    argv = iso.xorriso_command(Path("medium"), Path("out.iso"), volume_id="DEBLIVE",
                               epoch=1700000000, efi_image=None, isohdpfx=None)
    assert argv[0] == "xorriso"
    spec = [argv[i + 2] for i, a in enumerate(argv[:-2]) if a == "-boot_image"]
    assert spec == ["chrp_boot_part=on"]
    assert not any(a.startswith(("efi_path", "cat_path", "bin_path", "gpt_disk_guid"))
                   for a in argv)
    assert "-append_partition" not in argv
    assert argv[-1] == "-commit" and option_value(argv, "-volid") == ["DEBLIVE"]
    with pytest.raises(iso.IsoError, match="nothing appended"):
        iso.xorriso_command(Path("medium"), Path("out.img"), volume_id="D", epoch=0,
                            efi_image=None, isohdpfx=None,
                            appended=[(3, "0x83", Path("p.ext4"))])


class ReportRunner(RecordingRunner):
    """Records the commands whose output is read, instead of running them."""

    def output(self, argv: Any, **kwargs: Any) -> str:
        self.argvs.append([str(a) for a in argv])
        return ""


CHRP_REPORT = """\
xorriso : NOTE : No El Torito information was loaded
System area options: 0x00000600
System area summary: MBR CHRP cyl-align-off
MBR partition table:   N Status  Type        Start       Blocks
MBR partition      :   1   0x80  0x96            0         1480
'/boot/grub/powerpc.elf'
'/ppc/bootinfo.txt'
"""


def test_the_chrp_boot_records_are_read_back() -> None:
    assert iso.CHRP_FILES == ("/ppc/bootinfo.txt", "/boot/grub/powerpc.elf")
    iso.check_boot_report(CHRP_REPORT, bios=False, chrp=True)
    with pytest.raises(iso.IsoError, match=r"no '/ppc/bootinfo\.txt' listed"):
        iso.check_boot_report(CHRP_REPORT.replace("'/ppc/bootinfo.txt'\n", ""), bios=False,
                              chrp=True)
    with pytest.raises(iso.IsoError, match="0x96"):
        iso.check_boot_report(CHRP_REPORT.replace("0x96", "0x00"), bios=False, chrp=True)
    with pytest.raises(iso.IsoError, match="UEFI"):  # an EFI medium's check wants El Torito
        iso.check_boot_report(CHRP_REPORT, bios=False)
    runner = ReportRunner()
    iso.boot_report(runner, Path("x.iso"), iso.CHRP_FILES)
    [argv] = runner.argvs
    assert argv[-3:] == ["-lsd", "/ppc/bootinfo.txt", "/boot/grub/powerpc.elf"]


# -- refusals: no netboot tree, no disk image, no devicetree


def test_netboot_disk_and_devicetree_are_refused_naming_the_key(tmp_path: Path) -> None:
    for data, words in (
        ({"formats": ["iso", "netboot"], "netboot": {"url": "http://192.0.2.1/"}},
         r"netboot: ppc64el has no network boot loader .*Open Firmware.*formats iso only"),
        ({"formats": ["netboot"]}, r"netboot: ppc64el has no network boot loader"),
        ({"formats": ["iso", "disk"], "persistence": {"size": "64MiB"}},
         r"formats: 'disk': ppc64el has no disk image \(.*CHRP partition"),
        ({"devicetree": "board.dtb"}, r"devicetree: ppc64el's medium loads no devicetree"),
    ):
        with pytest.raises(config.ConfigError, match=words) as caught:
            conftest.parse({"name": "x", "architecture": "ppc64el", **data})
        assert caught.value.exit_code == 2
    outside = tmp_path / "host"
    outside.mkdir()
    unpacked_grub(tmp_path / "unpacked", outside)
    with pytest.raises(BootFilesError, match="no network boot loader for ppc64el"):
        bootfiles.locate(tmp_path / "unpacked", tmp_path / "files", Arch.PPC64EL, netboot=True)
    # The others keep their formats.
    cfg = conftest.parse({"name": "x", "architecture": "armhf", "formats": ["iso", "disk"],
                          "persistence": {"size": "64MiB"}})
    assert cfg.formats == ("iso", "disk")


def test_preflight_wants_grub_mkimage_for_a_ppc64el_medium(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which",
                        lambda tool: None if tool == "grub-mkimage" else f"/usr/bin/{tool}")
    cfg = conftest.parse({"name": "x", "architecture": "ppc64el"})
    assert preflight.missing_tools(cfg, with_iso=True) == ["grub-mkimage (package grub-common)"]


# -- qemu: pseries with SLOF


def test_slof_is_qemus_own_and_the_only_pseries_firmware() -> None:
    firmware = slof()
    assert firmware.code == Path("/usr/share/qemu/slof.bin") and firmware.open_firmware
    assert firmware.vars_template is None and not firmware.secure_boot
    assert firmware.boots_cd and firmware.boots_usb
    for kind in ("uefi", "secureboot"):
        with pytest.raises(QemuError, match="pseries has Open Firmware only"):
            select_firmware(kind, pseries(), [], exists=lambda _: True)
    with pytest.raises(QemuError, match="pseries has no BIOS"):
        select_firmware("bios", pseries())
    with pytest.raises(QemuError, match="install the qemu-system-data package"):
        select_firmware("ofw", pseries(), [], exists=lambda _: False)
    for arch in (Arch.AMD64, Arch.ARM64):
        assert arch.qemu is not None
        with pytest.raises(QemuError, match="has no Open Firmware"):
            select_firmware("ofw", arch.qemu, [], exists=lambda _: True)


def test_ppc64el_boots_from_cd_on_pseries_virtual_scsi() -> None:
    argv = build_command(VMSpec(arch=Arch.PPC64EL, accel=Accel.TCG, firmware=slof(),
                                media=Media(Path("/i/a.iso"), "cd")))
    assert argv[0] == "qemu-system-ppc64"
    assert option_value(argv, "-machine") == ["pseries"]
    assert "-cpu" not in argv  # qemu's default POWER model under TCG
    # SLOF is loaded by qemu itself: no flash, no -bios, no -kernel.
    assert not {"-bios", "-kernel", "-pflash"} & set(argv)
    assert not any("pflash" in d for d in option_value(argv, "-drive"))
    devices = option_value(argv, "-device")
    assert devices[:2] == ["spapr-vscsi,id=scsi", "scsi-cd,bus=scsi.0,drive=media,bootindex=1"]
    assert option_value(argv, "-drive") == [
        "if=none,id=media,media=cdrom,readonly=on,format=raw,file=/i/a.iso"]
    assert "virtio-rng-pci" in devices and not any("ide-cd" in d for d in devices)
    # The serial console is pseries's virtual terminal (spapr-vty): the guest's hvc0.
    assert option_value(argv, "-serial") == ["chardev:serial0"]
    assert option_value(argv, "-vga") == ["std"] and "-nodefaults" in argv
    kvm = build_command(VMSpec(arch=Arch.PPC64EL, accel=Accel.KVM, firmware=slof()))
    assert option_value(kvm, "-cpu") == ["host"]


def test_ppc64el_boots_the_same_file_as_a_usb_disk() -> None:
    argv = build_command(VMSpec(arch=Arch.PPC64EL, accel=Accel.TCG, firmware=slof(),
                                media=Media(Path("/i/a.iso"), "usb")))
    devices = option_value(argv, "-device")
    assert devices[:2] == ["qemu-xhci,id=xhci",
                           "usb-storage,bus=xhci.0,drive=media,removable=on,bootindex=1"]
    assert option_value(argv, "-drive") == ["if=none,id=media,format=raw,snapshot=on,"
                                            "file=/i/a.iso"]


# -- boot modes


def test_the_open_firmware_modes() -> None:
    assert OFW_MODES == (BootMode.OFW_CD, BootMode.OFW_USB)
    cd = BootMode("ofw-cd")
    assert (cd.firmware, cd.media, cd.uefi, cd.network, cd.interface) == (
        "ofw", "cd", False, False, "ofw")
    assert BootMode.OFW_USB.media == "usb"
    assert (BootMode.UEFI_CD.interface, BootMode.SECUREBOOT_USB.interface,
            BootMode.BIOS_CD.interface) == ("uefi", "uefi", "bios")
    assert len(MEDIUM_MODES) == 6 and not set(OFW_MODES) & set(MEDIUM_MODES)


def test_ppc64el_boots_in_its_modes_only_and_the_others_not_in_them() -> None:
    for mode in OFW_MODES:
        assert mode.not_applicable(Arch.PPC64EL) is None
    for mode in (*MEDIUM_MODES, *PXE_MODES):
        why = mode.not_applicable(Arch.PPC64EL)
        assert why is not None and why.startswith(f"{mode}: not applicable to ppc64el")
        assert "Open Firmware only" in why and "ofw-cd, ofw-usb" in why
    for arch in (Arch.AMD64, Arch.ARM64, Arch.ARMHF, Arch.RISCV64, Arch.I386):
        for mode in OFW_MODES:
            why = mode.not_applicable(arch)
            assert why is not None and f"not applicable to {arch} (no Open Firmware" in why
    # The other architectures' modes are unchanged.
    assert BootMode.BIOS_CD.not_applicable(Arch.AMD64) is None
    assert "UEFI only" in (BootMode.BIOS_CD.not_applicable(Arch.ARM64) or "")


def test_the_default_modes_follow_the_images_architecture(tmp_path: Path) -> None:
    assert parse_modes(None) == list(MEDIUM_MODES)
    assert parse_modes(None, arch=Arch.AMD64) == list(MEDIUM_MODES)
    assert parse_modes(None, arch=Arch.PPC64EL) == [BootMode.OFW_CD, BootMode.OFW_USB]
    assert parse_modes(None, network=True, arch=Arch.PPC64EL) == list(PXE_MODES)
    assert default_modes(Arch.RISCV64) == MEDIUM_MODES
    assert parse_modes(["ofw-usb,ofw-cd"]) == [BootMode.OFW_CD, BootMode.OFW_USB]
    image = tmp_path / "deblive-bookworm-ppc64el.iso"
    image.write_bytes(b"")
    assert boottest.image_arch(image, boottest.TestOptions()) is None  # no entries yet
    assert boottest.image_arch(image, boottest.TestOptions(arch=Arch.PPC64EL)) is Arch.PPC64EL
    (tmp_path / BOOT_ENTRIES).write_text(json.dumps({
        "format": 1, "image": image.stem, "architecture": "ppc64el", "bios": False,
        "live_user": {"name": "user", "sudo": "nopasswd"}, "root_locked": True,
        "menu": {"title": "T", "timeout": 5, "default": "live", "serial": True,
                 "splash": True, "architecture": "ppc64el",
                 "items": [{"entry": {"id": "live", "label": "Live", "kernel": "/k",
                                      "initrd": "/i", "cmdline": [], "extra_initrds": []}}]}}))
    assert boottest.image_arch(image, boottest.TestOptions()) is Arch.PPC64EL


def test_a_matrix_boots_a_ppc64el_iso_in_the_open_firmware_modes_of_its_media() -> None:
    image = matrix.MatrixImage("c.yaml", "deblive", "bookworm", Arch.PPC64EL, ("iso",))
    target, modes = matrix.test_target(image, ["bios-cd", "uefi-usb", "uefi-cd"])
    assert target.endswith("/deblive-bookworm-ppc64el.iso")
    assert modes == ("ofw-cd", "ofw-usb")
    amd64 = matrix.MatrixImage("c.yaml", "deblive", "bookworm", Arch.AMD64, ("iso",))
    assert matrix.test_target(amd64, ["bios-cd", "uefi-usb"])[1] == ("bios-cd", "uefi-usb")


def test_the_firmware_check_wants_open_firmwares_device_tree(tmp_path: Path) -> None:
    """ofw-cd expects /proc/device-tree/openprom and no /sys/firmware/efi; the fake guest
    is a shell on this x86 host, which has no Open Firmware: the check must fail there."""
    assert "/proc/device-tree/openprom" in checks.FIRMWARE_COMMAND
    script = fakeqemu.install(tmp_path)
    spec = VMSpec(Arch.AMD64, Accel.TCG, media=Media(tmp_path / "x.iso", "cd"),
                  qmp_socket=tmp_path / "qmp.sock")
    with Machine(spec, Runner(BuildLog()), tmp_path / "serial.log", tmp_path,
                 binary=str(script)) as vm:
        vm.expect(LOGIN_PROMPT, 10)
        login(vm, "user", "live", 10)
        shell = SerialShell(vm)
        shell.prepare()
        ofw = checks.check_firmware(shell, BootMode.OFW_CD)
        vm.send("sudo -n poweroff\r")
        assert vm.wait_exit(10)
    assert not ofw.ok
    assert ofw.detail in ("booted via bios, expected ofw", "booted via uefi, expected ofw")


def test_boot_entries_default_for_a_ppc64el_iso_without_them() -> None:
    entries = BootEntries.defaults(Arch.PPC64EL, "user")
    assert entries.architecture is Arch.PPC64EL and not entries.bios
