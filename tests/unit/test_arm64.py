"""arm64 boot tests: qemu command line, firmware, accelerator, modes and consoles.

No qemu is started, no root needed (the style of test_vm.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from deblive.boottest import run as boottest
from deblive.boottest.medium import BootEntries
from deblive.boottest.modes import MEDIUM_MODES, BadInput, BootMode, parse_modes
from deblive.build import menus
from deblive.core.errors import DebliveError
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.host import hostapt
from deblive.model import bootmenu, config
from deblive.model.arch import Arch, QemuSystem
from deblive.vm.accel import AccelRequest, AccelSelector, ProbeOutcome, ProbeResult
from deblive.vm.command import Accel, Media, VMSpec, build_command
from deblive.vm.errors import QemuError
from deblive.vm.firmware import Firmware, select_firmware
from tests.support import firmware
from tests.unit.test_vm import option_value

from . import conftest

AAVMF = Path("/usr/share/AAVMF")
PLAIN = Firmware(AAVMF / "AAVMF_CODE.fd", AAVMF / "AAVMF_VARS.fd", False, False, "t")
_arm64, _x86 = Arch.ARM64.qemu, Arch.AMD64.qemu
assert _arm64 is not None and _x86 is not None
ARM64: QemuSystem = _arm64
X86: QemuSystem = _x86
assert ARM64 is not None and X86 is not None
RUNNER = Runner(BuildLog())


def spec(media: str = "cd", **kw: Any) -> VMSpec:
    base: dict[str, Any] = {
        "arch": Arch.ARM64, "accel": Accel.TCG, "qmp_socket": Path("/run/t/qmp.sock"),
        "media": Media(Path("/img/live-arm64.iso"), media),  # type: ignore[arg-type]
        "firmware": PLAIN, "vars_file": Path("/run/t/vars.fd"),
    }
    base.update(kw)
    return VMSpec(**base)


# -- command line


def test_arm64_uefi_cd_command() -> None:
    argv = build_command(spec())
    assert argv[0] == "qemu-system-aarch64"
    assert option_value(argv, "-machine") == ["virt"]
    assert option_value(argv, "-accel") == ["tcg"]
    assert option_value(argv, "-cpu") == ["max"]
    drives = option_value(argv, "-drive")
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={PLAIN.code}" in drives
    assert "if=pflash,format=raw,unit=1,file=/run/t/vars.fd" in drives
    assert "if=none,id=media,media=cdrom,readonly=on,format=raw,file=/img/live-arm64.iso" in drives
    devices = option_value(argv, "-device")
    # virt has no IDE: the CD sits on virtio-scsi.
    assert devices.index("virtio-scsi-pci,id=scsi") < devices.index(
        "scsi-cd,bus=scsi.0,drive=media,bootindex=1"
    )
    assert not any(d.startswith("ide-") for d in devices)
    # No VGA on virt: virtio-gpu for screendump, a USB keyboard for send-key.
    assert "-vga" not in argv
    assert "virtio-gpu-pci" in devices and "usb-kbd,bus=xhci.0" in devices
    assert option_value(argv, "-serial") == ["chardev:serial0"]  # virt's PL011
    assert "-global" not in argv  # no SMM business on arm


def test_arm64_usb_shares_the_one_xhci() -> None:
    argv = build_command(spec(media="usb"))
    devices = option_value(argv, "-device")
    assert devices.count("qemu-xhci,id=xhci") == 1
    assert devices.index("qemu-xhci,id=xhci") < devices.index(
        "usb-storage,bus=xhci.0,drive=media,removable=on,bootindex=1"
    )
    assert "if=none,id=media,format=raw,snapshot=on,file=/img/live-arm64.iso" in option_value(
        argv, "-drive"
    )
    assert not any("scsi" in d for d in devices)


def test_arm64_under_kvm_uses_host_cpu() -> None:
    argv = build_command(spec(accel=Accel.KVM))
    assert option_value(argv, "-cpu") == ["host"]


def test_amd64_command_is_unchanged_by_the_arch_field() -> None:
    argv = build_command(spec(arch=Arch.AMD64, firmware=None, vars_file=None))
    assert argv[0] == "qemu-system-x86_64"
    assert option_value(argv, "-machine") == ["q35"]
    assert "-cpu" not in argv
    assert option_value(argv, "-vga") == ["std"]
    assert "ide-cd,drive=media,bootindex=1" in option_value(argv, "-device")


def test_unknown_arch_is_an_error() -> None:
    with pytest.raises(QemuError, match="cannot run s390x"):
        build_command(spec(arch=Arch.S390X))


# -- firmware


def descriptor(arch: str, code: str, template: str, features: list[str]) -> str:
    machines = ["virt-*"] if arch == "aarch64" else ["pc-q35-*"]
    return firmware.descriptor(code, template, features, machines, arch=arch)


@pytest.fixture
def firmware_dir(tmp_path: Path) -> Path:
    """Debian's descriptors of ovmf and qemu-efi-aarch64, shortened."""
    d = tmp_path / "firmware"
    d.mkdir()
    enrolled = ["enrolled-keys", "secure-boot"]
    (d / "40-edk2-aarch64-secure-enrolled.json").write_text(
        descriptor("aarch64", "/aa/CODE.ms.fd", "/aa/VARS.ms.fd", enrolled)
    )
    (d / "40-edk2-x86_64-secure-enrolled.json").write_text(
        descriptor("x86_64", "/x/CODE.ms.fd", "/x/VARS.ms.fd", [*enrolled, "requires-smm"])
    )
    (d / "50-edk2-aarch64-secure.json").write_text(
        descriptor("aarch64", "/aa/CODE.secboot.fd", "/aa/VARS.fd", ["secure-boot"])
    )
    (d / "60-edk2-aarch64.json").write_text(
        descriptor("aarch64", "/aa/CODE.fd", "/aa/VARS.fd", [])
    )
    (d / "60-edk2-x86_64.json").write_text(descriptor("x86_64", "/x/CODE.fd", "/x/VARS.fd", []))
    return d


def always(_: Path) -> bool:
    return True


def test_arm64_firmware_from_aarch64_descriptors(firmware_dir: Path) -> None:
    fw = select_firmware("uefi", ARM64, [firmware_dir], exists=always)
    assert fw is not None and fw.code == Path("/aa/CODE.fd") and not fw.secure_boot
    sb = select_firmware("secureboot", ARM64, [firmware_dir], exists=always)
    assert sb is not None
    assert (sb.code, sb.vars_template) == (Path("/aa/CODE.ms.fd"), Path("/aa/VARS.ms.fd"))
    assert sb.secure_boot and not sb.requires_smm
    # The x86 ones are untouched by the arm64 descriptors.
    x86 = select_firmware("uefi", X86, [firmware_dir], exists=always)
    assert x86 is not None and x86.code == Path("/x/CODE.fd")


def test_arm64_firmware_known_paths_and_missing(tmp_path: Path) -> None:
    fw = select_firmware(
        "secureboot", ARM64, [tmp_path], exists=lambda p: str(p).startswith("/usr/share/AAVMF/"),
    )
    assert fw is not None and fw.code == AAVMF / "AAVMF_CODE.ms.fd" and not fw.requires_smm
    with pytest.raises(QemuError, match="qemu-efi-aarch64"):
        select_firmware("uefi", ARM64, [tmp_path], exists=lambda _: False)
    with pytest.raises(QemuError, match="enrolled keys"):
        select_firmware("secureboot", ARM64, [tmp_path], exists=lambda _: False)


def test_arm64_has_no_bios() -> None:
    with pytest.raises(QemuError, match="UEFI only"):
        select_firmware("bios", ARM64, [], exists=always)


# -- accelerator: a foreign architecture is TCG without a probe


def test_foreign_arch_is_tcg_without_probe() -> None:
    looked: list[str] = []

    def kvm_usable() -> bool:
        looked.append("kvm")
        return True

    def probe() -> ProbeResult:
        looked.append("probe")
        return ProbeResult(ProbeOutcome.OK)

    selector = AccelSelector(AccelRequest.AUTO, RUNNER, Arch.AMD64, foreign=Arch.ARM64,
                             kvm_usable=kvm_usable, probe=probe)
    decision = selector.get()
    assert decision.accel is Accel.TCG and not decision.fell_back
    assert "arm64 guest on another host architecture is always TCG" in decision.reason
    assert "no KVM probe" in decision.reason
    assert looked == [] and not selector.can_fall_back
    with pytest.raises(QemuError, match="KVM cannot run arm64"):
        AccelSelector(AccelRequest.KVM, RUNNER, Arch.AMD64, foreign=Arch.ARM64,
                      kvm_usable=kvm_usable, probe=probe).get()


def test_is_foreign() -> None:
    assert Arch.ARM64.is_foreign(Arch.AMD64)
    assert not Arch.ARM64.is_foreign(Arch.ARM64)
    assert not Arch.AMD64.is_foreign(Arch.AMD64)


# -- modes and timeouts


def test_not_applicable_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = BootMode.BIOS_CD.not_applicable(Arch.ARM64)
    assert reason is not None and "not applicable to arm64" in reason and "UEFI only" in reason
    assert BootMode.UEFI_USB.not_applicable(Arch.ARM64) is None
    assert BootMode.BIOS_USB.not_applicable(Arch.AMD64) is None

    def no_firmware(*args: Any, **kwargs: Any) -> Firmware:
        raise QemuError("no aarch64 secureboot firmware with enrolled keys found")

    monkeypatch.setattr("deblive.boottest.modes.select_firmware", no_firmware)
    reason = BootMode.SECUREBOOT_CD.not_applicable(Arch.ARM64)
    assert reason is not None and reason.startswith("secureboot-cd: not applicable: no aarch64")
    # amd64 keeps failing loudly on a missing OVMF instead of skipping.
    assert BootMode.SECUREBOOT_CD.not_applicable(Arch.AMD64) is None


def test_foreign_timeouts_are_scaled(monkeypatch: pytest.MonkeyPatch) -> None:
    options = boottest.TestOptions()
    assert options.slowdown(Arch.AMD64) == 1.0
    assert options.slowdown(Arch.ARM64) == ARM64.foreign_slowdown > 1
    assert options.login_timeout("tcg", Arch.ARM64) == \
        boottest.LOGIN_TIMEOUT["tcg"] * ARM64.foreign_slowdown
    assert boottest.TestOptions(timeout=50).login_timeout("tcg", Arch.ARM64) == 50
    monkeypatch.setattr(hostapt, "host_architecture", lambda machine=None: Arch.ARM64)
    monkeypatch.setattr(boottest, "host_architecture", lambda machine=None: Arch.ARM64)
    assert options.slowdown(Arch.ARM64) == 1.0


@pytest.fixture
def fake_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Arch, float]]:
    """run_tests with an arm64 ISO (its boot entries), a fake run_mode and qemu on PATH."""
    runs: list[tuple[str, Arch, float]] = []

    def fake_run_mode(target: boottest.Target, mode: BootMode, selector: AccelSelector,
                      options: boottest.TestOptions, runner: Runner,
                      smp: int) -> boottest.ModeResult:
        arch = target.entries.architecture
        runs.append((str(mode), arch, options.login_timeout("tcg", arch)))
        decision = selector.get()
        return boottest.ModeResult(str(mode), result="pass", accel=str(decision.accel),
                                   accel_reason=decision.reason)

    monkeypatch.setattr(boottest, "run_mode", fake_run_mode)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(boottest, "read_entries",
                        lambda iso: BootEntries(Arch.ARM64, "user", "nopasswd", True, False, None))
    return runs


def test_default_modes_of_an_arm64_iso_skip_bios(
    fake_runs: list[tuple[str, Arch, float]], tmp_path: Path
) -> None:
    iso = tmp_path / "live.iso"
    iso.write_bytes(b"")
    results = boottest.run_tests(iso, parse_modes(None), boottest.TestOptions(), BuildLog())
    assert [r.mode for r in results] == [str(m) for m in MEDIUM_MODES]
    by_mode = {r.mode: r for r in results}
    for name in ("bios-cd", "bios-usb"):
        assert by_mode[name].result == "skipped"
        assert "not applicable to arm64" in by_mode[name].notes[0]
    ran = [name for name, _arch, _timeout in fake_runs]
    assert "bios-cd" not in ran and "uefi-cd" in ran and "uefi-usb" in ran
    assert all(arch is Arch.ARM64 for _name, arch, _t in fake_runs)
    assert all(t == 300.0 * ARM64.foreign_slowdown for _n, _a, t in fake_runs)
    assert by_mode["uefi-cd"].accel == "tcg" and "no KVM probe" in by_mode["uefi-cd"].accel_reason
    data = json.loads((tmp_path / "test-live" / "results.json").read_text())
    assert data["passed"] is True
    assert [m["result"] for m in data["modes"]].count("skipped") >= 2


def test_only_bios_modes_for_arm64_is_bad_input(
    fake_runs: list[tuple[str, Arch, float]], tmp_path: Path
) -> None:
    iso = tmp_path / "live.iso"
    iso.write_bytes(b"")
    with pytest.raises(BadInput, match="no mode to test for this arm64 ISO"):
        boottest.run_tests(iso, [BootMode.BIOS_CD, BootMode.BIOS_USB], boottest.TestOptions(),
                           BuildLog())
    assert fake_runs == []


def test_missing_qemu_names_the_arm_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    iso = tmp_path / "live.iso"
    iso.write_bytes(b"")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    options = boottest.TestOptions(arch=Arch.ARM64)
    with pytest.raises(DebliveError, match="install qemu-system-arm"):
        boottest.run_tests(iso, [BootMode.UEFI_CD], options, BuildLog())


# -- the serial console on the kernel command line and in grub


def make_config(arch: str, **boot: Any) -> config.ImageConfig:
    return conftest.parse(
        {"name": "demo", "architecture": arch, "boot": boot}, Path("/cfg/demo.yaml")
    )


@pytest.mark.parametrize(
    ("arch", "tty"),
    [(Arch.AMD64, "ttyS0"), (Arch.I386, "ttyS0"), (Arch.ARM64, "ttyAMA0"),
     (Arch.ARMHF, "ttyAMA0")],
)
def test_serial_console_per_arch(arch: Arch, tty: str) -> None:
    assert arch.serial_tty == tty
    assert bootmenu.serial_args(arch) == ("console=tty0", f"console={tty},115200n8")


def test_arm64_menu_uses_ttyama0_last() -> None:
    menu = bootmenu.build_menu(make_config("arm64", serial_console=True))
    for entry in menu.entries():
        assert entry.cmdline[-2:] == ("console=tty0", "console=ttyAMA0,115200n8")
        assert "console=ttyS0,115200n8" not in entry.cmdline


def test_arm64_grub_uses_the_efi_serial_port() -> None:
    grub = menus.render_grub(bootmenu.build_menu(make_config("arm64", serial_console=True)))
    assert "serial --unit" not in grub  # grub arm64-efi has no com0
    assert "if serial --speed=115200 efi0 ; then" in grub
    assert "terminal_output gfxterm $deblive_serial\n" in grub
    # The firmware's console already reaches the serial port: no second copy.
    assert "\tterminal_output console\n" in grub
    assert "terminal_input console\n" in grub
    assert "console=ttyAMA0,115200n8" in grub


def test_arm64_grub_without_serial() -> None:
    grub = menus.render_grub(bootmenu.build_menu(make_config("arm64", serial_console=False)))
    assert "serial" not in grub and "ttyAMA0" not in grub


def test_amd64_grub_keeps_the_uart() -> None:
    grub = menus.render_grub(bootmenu.build_menu(make_config("amd64", serial_console=True)))
    assert "serial --unit=0 --speed=115200\n" in grub
    assert "terminal_output gfxterm serial\n" in grub
    assert "efi0" not in grub
    assert "console=ttyS0,115200n8" in grub
