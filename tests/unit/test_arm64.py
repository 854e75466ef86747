"""arm64 boot tests: qemu command line, firmware, accelerator, modes and consoles.

No qemu is started, no root needed (the style of test_qemu.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from deblive.boottest import run as boottest
from deblive.boottest.run import BadInput
from deblive.core.log import BuildLog
from deblive.model import bootmenu, config
from deblive.vm import qemu
from deblive.vm.qemu import ARM64, AccelSelector, Firmware, QemuError, VMSpec, build_command
from tests.unit.test_qemu import option_value

AAVMF = Path("/usr/share/AAVMF")
PLAIN = Firmware(AAVMF / "AAVMF_CODE.fd", AAVMF / "AAVMF_VARS.fd", False, False, "t")


def spec(**kw: Any) -> VMSpec:
    base: dict[str, Any] = {
        "iso": Path("/img/live-arm64.iso"),
        "firmware_kind": "uefi",
        "media": "cd",
        "accel": "tcg",
        "qmp_socket": Path("/run/t/qmp.sock"),
        "firmware": PLAIN,
        "vars_file": Path("/run/t/vars.fd"),
        "arch": "arm64",
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
    argv = build_command(spec(accel="kvm"))
    assert option_value(argv, "-cpu") == ["host"]


def test_amd64_command_is_unchanged_by_the_arch_field() -> None:
    argv = build_command(spec(arch="amd64", firmware=None, vars_file=None, firmware_kind="bios"))
    assert argv[0] == "qemu-system-x86_64"
    assert option_value(argv, "-machine") == ["q35"]
    assert "-cpu" not in argv
    assert option_value(argv, "-vga") == ["std"]
    assert "ide-cd,drive=media,bootindex=1" in option_value(argv, "-device")


def test_unknown_arch_is_an_error() -> None:
    with pytest.raises(QemuError, match="cannot boot-test armhf"):
        build_command(spec(arch="armhf"))


# -- firmware


def descriptor(arch: str, code: str, template: str, features: list[str]) -> str:
    machines = ["virt-*"] if arch == "aarch64" else ["pc-q35-*"]
    return json.dumps(
        {
            "interface-types": ["uefi"],
            "mapping": {
                "device": "flash",
                "executable": {"filename": code, "format": "raw"},
                "nvram-template": {"filename": template, "format": "raw"},
            },
            "targets": [{"architecture": arch, "machines": machines}],
            "features": features,
        }
    )


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
    fw = qemu.select_firmware("uefi", [firmware_dir], exists=always, profile=ARM64)
    assert fw is not None and fw.code == Path("/aa/CODE.fd") and not fw.secure_boot
    sb = qemu.select_firmware("secureboot", [firmware_dir], exists=always, profile=ARM64)
    assert sb is not None
    assert (sb.code, sb.vars_template) == (Path("/aa/CODE.ms.fd"), Path("/aa/VARS.ms.fd"))
    assert sb.secure_boot and not sb.requires_smm
    # The x86 ones are untouched by the arm64 descriptors.
    x86 = qemu.select_firmware("uefi", [firmware_dir], exists=always)
    assert x86 is not None and x86.code == Path("/x/CODE.fd")


def test_arm64_firmware_known_paths_and_missing(tmp_path: Path) -> None:
    fw = qemu.select_firmware(
        "secureboot", [tmp_path], exists=lambda p: str(p).startswith("/usr/share/AAVMF/"),
        profile=ARM64,
    )
    assert fw is not None and fw.code == AAVMF / "AAVMF_CODE.ms.fd" and not fw.requires_smm
    with pytest.raises(QemuError, match="qemu-efi-aarch64"):
        qemu.select_firmware("uefi", [tmp_path], exists=lambda _: False, profile=ARM64)
    with pytest.raises(QemuError, match="enrolled keys"):
        qemu.select_firmware("secureboot", [tmp_path], exists=lambda _: False, profile=ARM64)


def test_arm64_has_no_bios() -> None:
    with pytest.raises(QemuError, match="UEFI only"):
        qemu.select_firmware("bios", [], exists=always, profile=ARM64)


# -- accelerator: a foreign architecture is TCG without a probe


def test_foreign_arch_is_tcg_without_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "host_arch", lambda machine=None: "amd64")
    looked: list[str] = []

    def kvm_usable() -> bool:
        looked.append("kvm")
        return True

    def probe() -> qemu.ProbeResult:
        looked.append("probe")
        return qemu.ProbeResult(qemu.ProbeOutcome.OK)

    selector = AccelSelector("auto", kvm_usable=kvm_usable, probe=probe, foreign="arm64")
    decision = selector.get()
    assert decision.accel == "tcg" and not decision.fell_back
    assert "arm64 guest on an amd64 host is always TCG" in decision.reason
    assert "no KVM probe" in decision.reason
    assert looked == [] and not selector.can_fall_back
    with pytest.raises(QemuError, match="KVM cannot run arm64"):
        AccelSelector("kvm", kvm_usable=kvm_usable, probe=probe, foreign="arm64").get()
    assert AccelSelector("tcg", foreign="arm64").get().accel == "tcg"


def test_is_foreign() -> None:
    assert qemu.host_arch("x86_64") == "amd64" and qemu.host_arch("aarch64") == "arm64"
    assert qemu.is_foreign("arm64", host="amd64")
    assert not qemu.is_foreign("arm64", host="arm64")
    assert not qemu.is_foreign("amd64", host="amd64")


# -- which architecture an ISO is for


def test_arch_from_efi_names() -> None:
    names = ["/EFI/boot/bootaa64.efi", "/EFI/boot/grubaa64.efi", "/EFI/boot/mmaa64.efi"]
    assert qemu.arch_from_efi_names(names) == "arm64"
    assert qemu.arch_from_efi_names(["/EFI/BOOT/BOOTX64.EFI"]) == "amd64"
    assert qemu.arch_from_efi_names(["/EFI/boot/bootaa64.efi", "/EFI/boot/bootx64.efi"]) == (
        "amd64"
    )
    assert qemu.arch_from_efi_names(["/EFI/boot/grubx64.efi"]) is None
    assert qemu.arch_from_efi_names([]) is None


def test_arch_from_text() -> None:
    info = 'Debian GNU/Linux 12.15 "Bookworm" - Unofficial arm64 deblive deblive 20261126-07:59'
    assert qemu.arch_from_text(info) == "arm64"
    assert qemu.arch_from_text("deblive-bookworm-arm64.iso") == "arm64"
    assert qemu.arch_from_text("debian-live-12.8.0-amd64-standard.iso") == "amd64"
    assert qemu.arch_from_text("xarm64y.iso") is None
    assert qemu.arch_from_text("") is None


def test_iso_architecture_order(monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"efi": ["/EFI/boot/bootaa64.efi"], "info": "Debian amd64"}
    monkeypatch.setattr(qemu, "_iso_efi_names", lambda iso: files["efi"])
    monkeypatch.setattr(qemu, "_iso_text_file", lambda iso, path: files["info"])
    iso = Path("/x/live-i386.iso")
    assert qemu.iso_architecture(iso) == "arm64"  # the EFI boot file first
    files["efi"] = []
    assert qemu.iso_architecture(iso) == "amd64"  # then .disk/info
    files["info"] = ""
    assert qemu.iso_architecture(iso) == "i386"  # then the file name
    assert qemu.iso_architecture(Path("/x/live.iso")) == "amd64"  # then the default


def test_iso_architecture_of_a_non_iso(tmp_path: Path) -> None:
    if shutil.which("xorriso") is None:
        pytest.skip("xorriso not installed")
    iso = tmp_path / "empty-arm64.iso"
    iso.write_bytes(b"")
    assert qemu.iso_architecture(iso) == "arm64"  # from the name; xorriso's failure is quiet


# -- modes and timeouts


def test_not_applicable_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    def mode(name: str) -> boottest.Mode:
        return boottest.mode_from_name(name)

    reason = boottest.not_applicable(mode("bios-cd"), ARM64)
    assert reason is not None and "not applicable to arm64" in reason and "UEFI only" in reason
    assert boottest.not_applicable(mode("uefi-usb"), ARM64) is None
    assert boottest.not_applicable(mode("bios-usb"), qemu.AMD64) is None

    def no_firmware(*args: Any, **kwargs: Any) -> Firmware:
        raise QemuError("no aarch64 secureboot firmware with enrolled keys found")

    monkeypatch.setattr(qemu, "select_firmware", no_firmware)
    reason = boottest.not_applicable(mode("secureboot-cd"), ARM64)
    assert reason is not None and reason.startswith("secureboot-cd: not applicable: no aarch64")
    # amd64 keeps failing loudly on a missing OVMF instead of skipping.
    assert boottest.not_applicable(mode("secureboot-cd"), qemu.AMD64) is None


def test_foreign_timeouts_are_scaled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "host_arch", lambda machine=None: "amd64")
    native = boottest.TestOptions(arch="amd64")
    arm = boottest.TestOptions(arch="arm64")
    assert native.slowdown == 1.0 and boottest.TestOptions().slowdown == 1.0
    assert arm.slowdown == ARM64.foreign_slowdown > 1
    assert arm.login_timeout("tcg") == boottest.LOGIN_TIMEOUT["tcg"] * ARM64.foreign_slowdown
    assert boottest.TestOptions(arch="arm64", timeout=50).login_timeout("tcg") == 50
    monkeypatch.setattr(qemu, "host_arch", lambda machine=None: "arm64")
    assert arm.slowdown == 1.0


@pytest.fixture
def fake_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None, float]]:
    """run_tests with an arm64 ISO, a fake run_mode and a fake qemu on PATH."""
    runs: list[tuple[str, str | None, float]] = []

    def fake_run_mode(
        iso: Path,
        mode: boottest.Mode,
        selector: AccelSelector,
        options: boottest.TestOptions,
        out: Path,
        log: BuildLog,
        smp: int,
    ) -> boottest.ModeResult:
        runs.append((mode.name, options.arch, options.login_timeout("tcg")))
        decision = selector.get()
        return boottest.ModeResult(
            mode.name, result="pass", accel=decision.accel, accel_reason=decision.reason
        )

    monkeypatch.setattr(boottest, "run_mode", fake_run_mode)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(qemu, "iso_architecture", lambda iso: "arm64")
    monkeypatch.setattr(qemu, "host_arch", lambda machine=None: "amd64")
    return runs


def test_default_modes_of_an_arm64_iso_skip_bios(
    fake_runs: list[tuple[str, str | None, float]], tmp_path: Path
) -> None:
    iso = tmp_path / "live.iso"
    iso.write_bytes(b"")
    results = boottest.run_tests(iso, list(boottest.MODES), boottest.TestOptions(), BuildLog())
    assert [r.mode for r in results] == list(boottest.MODES)
    by_mode = {r.mode: r for r in results}
    for name in ("bios-cd", "bios-usb"):
        assert by_mode[name].result == "skipped"
        assert "not applicable to arm64" in by_mode[name].notes[0]
    ran = [name for name, _arch, _timeout in fake_runs]
    assert "bios-cd" not in ran and "uefi-cd" in ran and "uefi-usb" in ran
    assert all(arch == "arm64" for _name, arch, _t in fake_runs)
    assert all(t == 300.0 * ARM64.foreign_slowdown for _n, _a, t in fake_runs)
    assert by_mode["uefi-cd"].accel == "tcg" and "no KVM probe" in by_mode["uefi-cd"].accel_reason
    data = json.loads((tmp_path / "test-live" / "results.json").read_text())
    assert data["passed"] is True
    assert [m["result"] for m in data["modes"]].count("skipped") >= 2


def test_only_bios_modes_for_arm64_is_bad_input(
    fake_runs: list[tuple[str, str | None, float]], tmp_path: Path
) -> None:
    iso = tmp_path / "live.iso"
    iso.write_bytes(b"")
    with pytest.raises(BadInput, match="no mode to test for this arm64 ISO"):
        boottest.run_tests(iso, ["bios-cd", "bios-usb"], boottest.TestOptions(), BuildLog())
    assert fake_runs == []


def test_missing_qemu_names_the_arm_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    iso = tmp_path / "live.iso"
    iso.write_bytes(b"")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    options = boottest.TestOptions(arch="arm64")
    with pytest.raises(boottest.DebliveError, match="install qemu-system-arm"):
        boottest.run_tests(iso, ["uefi-cd"], options, BuildLog())


# -- the serial console on the kernel command line and in grub


def make_config(arch: str, **boot: Any) -> config.ImageConfig:
    return config.parse(
        {"name": "demo", "architecture": arch, "boot": boot}, Path("/cfg/demo.yaml")
    )


@pytest.mark.parametrize(
    ("arch", "tty"),
    [("amd64", "ttyS0"), ("i386", "ttyS0"), ("arm64", "ttyAMA0"), ("armhf", "ttyAMA0")],
)
def test_serial_console_per_arch(arch: str, tty: str) -> None:
    assert bootmenu.serial_tty(arch) == tty
    assert bootmenu.serial_args(arch) == ("console=tty0", f"console={tty},115200n8")


def test_arm64_menu_uses_ttyama0_last() -> None:
    menu = bootmenu.build_menu(make_config("arm64", serial_console=True))
    for entry in menu.entries():
        assert entry.cmdline[-2:] == ("console=tty0", "console=ttyAMA0,115200n8")
        assert "console=ttyS0,115200n8" not in entry.cmdline


def test_arm64_grub_uses_the_efi_serial_port() -> None:
    grub = bootmenu.render_grub(bootmenu.build_menu(make_config("arm64", serial_console=True)))
    assert "serial --unit" not in grub  # grub arm64-efi has no com0
    assert "if serial --speed=115200 efi0 ; then" in grub
    assert "terminal_output gfxterm $deblive_serial\n" in grub
    # The firmware's console already reaches the serial port: no second copy.
    assert "\tterminal_output console\n" in grub
    assert "terminal_input console\n" in grub
    assert "console=ttyAMA0,115200n8" in grub


def test_arm64_grub_without_serial() -> None:
    grub = bootmenu.render_grub(bootmenu.build_menu(make_config("arm64", serial_console=False)))
    assert "serial" not in grub and "ttyAMA0" not in grub


def test_amd64_grub_keeps_the_uart() -> None:
    grub = bootmenu.render_grub(bootmenu.build_menu(make_config("amd64", serial_console=True)))
    assert "serial --unit=0 --speed=115200\n" in grub
    assert "terminal_output gfxterm serial\n" in grub
    assert "efi0" not in grub
    assert "console=ttyS0,115200n8" in grub
