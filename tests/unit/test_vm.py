"""The qemu layer without a real VM: command lines, firmware, the accelerator choice and
its one fallback, screens and keys, and the running machine against a fake qemu."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.model.arch import Arch, QemuSystem
from deblive.vm import console, screen
from deblive.vm.accel import (
    AccelDecision,
    AccelRequest,
    AccelSelector,
    ProbeOutcome,
    ProbeResult,
    decide_accel,
    probe_detail,
    with_kvm_fallback,
)
from deblive.vm.command import (
    Accel,
    DirectKernel,
    Disk,
    Media,
    Share,
    UserNetwork,
    VMSpec,
    build_command,
)
from deblive.vm.errors import ExpectTimeout, KvmFailure, QemuError, VMExited
from deblive.vm.firmware import Firmware, select_firmware
from deblive.vm.machine import Machine
from tests.support import fakeqemu
from tests.support.firmware import descriptor

RUNNER = Runner(BuildLog())
_x86 = Arch.AMD64.qemu
assert _x86 is not None
X86: QemuSystem = _x86
assert X86 is not None
OVMF = Path("/usr/share/OVMF")
PLAIN = Firmware(OVMF / "OVMF_CODE_4M.fd", OVMF / "OVMF_VARS_4M.fd", False, False, "t")
SECURE = Firmware(OVMF / "OVMF_CODE_4M.ms.fd", OVMF / "OVMF_VARS_4M.ms.fd", True, True, "t")


def spec(media: str = "cd", iso: str = "/img/live.iso", **kw: Any) -> VMSpec:
    base: dict[str, Any] = {
        "arch": Arch.AMD64, "accel": Accel.TCG, "qmp_socket": Path("/run/t/qmp.sock"),
        "media": Media(Path(iso), media),  # type: ignore[arg-type]
    }
    base.update(kw)
    return VMSpec(**base)


def option_value(argv: list[str], option: str) -> list[str]:
    """Every value given to a repeated option, in order."""
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == option]


# -- command lines


def test_bios_cd_command() -> None:
    argv = build_command(spec())
    assert argv[0] == "qemu-system-x86_64"
    assert option_value(argv, "-machine") == ["q35"]
    assert option_value(argv, "-accel") == ["tcg"]
    assert "-cpu" not in argv
    drives = option_value(argv, "-drive")
    assert drives == ["if=none,id=media,media=cdrom,readonly=on,format=raw,file=/img/live.iso"]
    assert "ide-cd,drive=media,bootindex=1" in option_value(argv, "-device")
    assert not any("pflash" in d for d in drives)
    assert option_value(argv, "-display") == ["none"]
    assert option_value(argv, "-vga") == ["std"]
    assert option_value(argv, "-qmp") == ["unix:/run/t/qmp.sock,server=on,wait=off"]
    assert "-no-reboot" in argv and "-nodefaults" in argv
    # qemu's seccomp filter, always
    assert option_value(argv, "-sandbox") == [
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]


def test_usb_is_a_snapshot_disk_on_xhci() -> None:
    argv = build_command(spec(media="usb"))
    drives = option_value(argv, "-drive")
    assert drives == ["if=none,id=media,format=raw,snapshot=on,file=/img/live.iso"]
    devices = option_value(argv, "-device")
    assert "qemu-xhci,id=xhci" in devices
    assert "usb-storage,bus=xhci.0,drive=media,removable=on,bootindex=1" in devices


def test_comma_in_iso_path_is_escaped() -> None:
    argv = build_command(spec(iso="/a,b/x.iso"))
    assert option_value(argv, "-drive")[0].endswith("file=/a,,b/x.iso")


def test_uefi_command_uses_code_readonly_and_vars_copy() -> None:
    argv = build_command(spec(firmware=PLAIN, vars_file=Path("/run/t/vars.fd")))
    drives = option_value(argv, "-drive")
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={PLAIN.code}" in drives
    assert "if=pflash,format=raw,unit=1,file=/run/t/vars.fd" in drives
    assert option_value(argv, "-machine") == ["q35"]
    assert "-global" not in argv


def test_secureboot_command_has_smm_and_secure_flash() -> None:
    argv = build_command(spec(firmware=SECURE, vars_file=Path("/run/t/v.fd")))
    assert option_value(argv, "-machine") == ["q35,smm=on"]
    assert option_value(argv, "-global") == ["driver=cfi.pflash01,property=secure,value=on"]


def test_uefi_without_vars_copy_is_refused() -> None:
    with pytest.raises(QemuError):
        build_command(spec(firmware=PLAIN))


def test_kvm_uses_host_cpu() -> None:
    argv = build_command(spec(accel=Accel.KVM, smp=1, memory_mib=1024))
    assert option_value(argv, "-accel") == ["kvm"]
    assert option_value(argv, "-cpu") == ["host"]
    assert option_value(argv, "-smp") == ["1"]
    assert option_value(argv, "-m") == ["1024"]


def test_direct_kernel() -> None:
    argv = build_command(spec(direct_kernel=DirectKernel(Path("/k"), Path("/i"), "boot=live")))
    assert option_value(argv, "-kernel") == ["/k"]
    assert option_value(argv, "-append") == ["boot=live"]


def test_builder_vm_command_shares_disks_and_network() -> None:
    argv = build_command(VMSpec(
        arch=Arch.AMD64, accel=Accel.TCG, display=False,
        disks=(Disk(Path("/c/rootfs.img"), snapshot=True),
               Disk(Path("/w/work.img"), scratch=True)),
        shares=(Share("dlcfg0", Path("/srv/cfg"), False), Share("dlout", Path("/w/out"), True)),
        network=UserNetwork(restrict=True,
                            guestfwd=("tcp:10.0.2.100:3128-cmd:proxy --allow a,b",)),
    ))
    assert option_value(argv, "-drive") == [
        "file=/c/rootfs.img,if=virtio,format=raw,snapshot=on",
        "file=/w/work.img,if=virtio,format=raw,cache=unsafe,discard=unmap",
    ]
    fsdevs = option_value(argv, "-fsdev")
    # Read-only shares need no mapping; what the guest writes keeps its metadata in
    # extended attributes: no setuid file, device node or symlink lands on the host.
    assert fsdevs == ["local,id=fs0,path=/srv/cfg,security_model=none,readonly=on",
                      "local,id=fs1,path=/w/out,security_model=mapped-xattr"]
    assert "passthrough" not in " ".join(argv)
    netdev = option_value(argv, "-netdev")[0]
    assert netdev.startswith("user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:3128-cmd:")
    assert netdev.endswith("--allow a,,b")
    assert option_value(argv, "-display") == ["none"] and "-vga" not in argv
    assert "-qmp" not in argv
    # The guestfwd proxy is a process qemu starts: this VM may spawn, nothing more.
    assert option_value(argv, "-sandbox") == ["on,obsolete=deny,spawn=allow,resourcecontrol=deny"]


# -- firmware descriptors


@pytest.fixture
def firmware_dir(tmp_path: Path) -> Path:
    d = tmp_path / "firmware"
    d.mkdir()
    q35 = ["pc-q35-*"]
    (d / "40-sb.json").write_text(
        descriptor(
            "/fw/sb.fd", "/fw/sb-vars.fd", ["secure-boot", "enrolled-keys", "requires-smm"], q35
        )
    )
    (d / "50-sb-empty.json").write_text(
        descriptor("/fw/sbe.fd", "/fw/vars.fd", ["secure-boot", "requires-smm"], q35)
    )
    (d / "60-plain.json").write_text(
        descriptor("/fw/plain.fd", "/fw/vars.fd", [], ["pc-i440fx-*", *q35])
    )
    (d / "10-broken.json").write_text("{not json")
    return d


def always(_: Path) -> bool:
    return True


def test_select_uefi_skips_secure_builds(firmware_dir: Path) -> None:
    fw = select_firmware("uefi", X86, [firmware_dir], exists=always)
    assert fw is not None
    assert fw.code == Path("/fw/plain.fd") and not fw.secure_boot and not fw.requires_smm


def test_select_secureboot_needs_enrolled_keys(firmware_dir: Path) -> None:
    fw = select_firmware("secureboot", X86, [firmware_dir], exists=always)
    assert fw is not None
    assert fw.code == Path("/fw/sb.fd")
    assert fw.vars_template == Path("/fw/sb-vars.fd")
    assert fw.secure_boot and fw.requires_smm


def test_later_dir_overrides_same_name(firmware_dir: Path, tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "60-plain.json").write_text(descriptor("/etc/fw.fd", "/etc/v.fd", [], ["pc-q35-*"]))
    fw = select_firmware("uefi", X86, [firmware_dir, etc], exists=always)
    assert fw is not None and fw.code == Path("/etc/fw.fd")


def test_descriptor_for_other_machine_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "60.json").write_text(descriptor("/fw/i440.fd", "/fw/v.fd", [], ["pc-i440fx-*"]))
    with pytest.raises(QemuError):
        select_firmware("uefi", X86, [tmp_path], exists=lambda p: str(p).startswith("/fw"))


def test_missing_files_fall_back_to_known_paths(firmware_dir: Path) -> None:
    def only_ovmf(path: Path) -> bool:
        return str(path).startswith("/usr/share/OVMF/")

    fw = select_firmware("secureboot", X86, [firmware_dir], exists=only_ovmf)
    assert fw is not None
    assert fw.code == OVMF / "OVMF_CODE_4M.ms.fd"
    assert fw.vars_template == OVMF / "OVMF_VARS_4M.ms.fd"


def test_no_firmware_at_all_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(QemuError, match="ovmf"):
        select_firmware("uefi", X86, [tmp_path], exists=lambda _: False)


def test_bios_needs_no_firmware_file() -> None:
    assert select_firmware("bios", X86, [], exists=lambda _: False) is None

# -- accelerator choice


class FakeProbe:
    def __init__(self, outcome: ProbeOutcome, detail: str = "") -> None:
        self.result = ProbeResult(outcome, detail)
        self.calls = 0

    def __call__(self) -> ProbeResult:
        self.calls += 1
        return self.result


def selector_for(request: AccelRequest, probe: FakeProbe) -> AccelSelector:
    return AccelSelector(request, RUNNER, Arch.AMD64, kvm_usable=lambda: True, probe=probe)


def test_tcg_requested_never_probes() -> None:
    probe = FakeProbe(ProbeOutcome.OK)
    decision = decide_accel(AccelRequest.TCG, True, probe)
    assert decision.accel is Accel.TCG and not decision.fell_back
    assert probe.calls == 0


def test_auto_without_kvm_device_is_tcg_without_probe() -> None:
    probe = FakeProbe(ProbeOutcome.OK)
    decision = decide_accel(AccelRequest.AUTO, False, probe)
    assert decision.accel is Accel.TCG and decision.fell_back
    assert probe.calls == 0


def test_auto_with_working_kvm() -> None:
    decision = decide_accel(AccelRequest.AUTO, True, FakeProbe(ProbeOutcome.OK))
    assert decision.accel is Accel.KVM and not decision.fell_back


@pytest.mark.parametrize(
    "outcome", [ProbeOutcome.KVM_ERROR, ProbeOutcome.EXITED, ProbeOutcome.NO_OUTPUT]
)
def test_auto_falls_back_when_probe_fails(outcome: ProbeOutcome) -> None:
    decision = decide_accel(AccelRequest.AUTO, True, FakeProbe(outcome, "emulation failure"))
    assert decision.accel is Accel.TCG and decision.fell_back
    assert outcome.value in decision.reason and "emulation failure" in decision.reason


def test_probe_time_is_measured() -> None:
    ticks = iter([10.0, 10.25])
    decision = decide_accel(AccelRequest.AUTO, True, FakeProbe(ProbeOutcome.OK),
                            clock=lambda: next(ticks))
    assert decision.probe_seconds == 0.25


def test_kvm_requested_without_device_is_an_error() -> None:
    with pytest.raises(QemuError):
        decide_accel(AccelRequest.KVM, False, FakeProbe(ProbeOutcome.OK))


def test_kvm_requested_is_obeyed_without_probe() -> None:
    probe = FakeProbe(ProbeOutcome.KVM_ERROR)
    assert decide_accel(AccelRequest.KVM, True, probe).accel is Accel.KVM
    assert probe.calls == 0


def test_selector_probes_once_per_run() -> None:
    probe = FakeProbe(ProbeOutcome.KVM_ERROR)
    selector = selector_for(AccelRequest.AUTO, probe)
    assert [selector.get().accel for _ in range(4)] == [Accel.TCG] * 4
    assert probe.calls == 1


def test_selector_demotes_auto_but_not_explicit_kvm() -> None:
    auto = selector_for(AccelRequest.AUTO, FakeProbe(ProbeOutcome.OK))
    assert auto.get().accel is Accel.KVM
    assert auto.demote("broke in bios-cd").accel is Accel.TCG
    assert auto.get().accel is Accel.TCG and auto.get().fell_back
    forced = selector_for(AccelRequest.KVM, FakeProbe(ProbeOutcome.OK))
    forced.get()
    assert forced.demote("x").accel is Accel.KVM
    assert not forced.can_fall_back


def test_probe_detail_skips_warnings() -> None:
    err = (
        "qemu-system-x86_64: warning: host doesn't support requested feature\n"
        "qemu-system-x86_64: KVM internal error. Suberror: 1\n"
    )
    assert probe_detail(err) == "KVM internal error. Suberror: 1"


def test_foreign_guest_is_tcg_without_probe() -> None:
    probe = FakeProbe(ProbeOutcome.OK)
    decision = decide_accel(AccelRequest.AUTO, True, probe, foreign=Arch.ARM64)
    assert decision.accel is Accel.TCG and probe.calls == 0
    with pytest.raises(QemuError, match="KVM cannot run arm64"):
        decide_accel(AccelRequest.KVM, True, probe, foreign=Arch.ARM64)


def test_the_one_fallback_retries_a_broken_kvm_under_tcg() -> None:
    selector = selector_for(AccelRequest.AUTO, FakeProbe(ProbeOutcome.OK))
    calls: list[tuple[Accel, float | None]] = []
    abandoned: list[str] = []

    def attempt(decision: AccelDecision, silence: float | None) -> str:
        calls.append((decision.accel, silence))
        if decision.accel is Accel.KVM:
            raise KvmFailure("no serial output in the first 20 s")
        return "booted"

    result = with_kvm_fallback(selector, attempt, BuildLog(), "bios-cd",
                               on_abandon=lambda exc: abandoned.append(str(exc)))
    assert result == "booted"
    assert calls == [(Accel.KVM, 20.0), (Accel.TCG, None)]
    assert abandoned == ["no serial output in the first 20 s"]
    assert selector.get().accel is Accel.TCG  # the rest of the run stays on TCG


def test_an_explicit_kvm_is_never_fallen_back_from() -> None:
    selector = AccelSelector(AccelRequest.KVM, RUNNER, Arch.AMD64, kvm_usable=lambda: True)

    def attempt(decision: AccelDecision, silence: float | None) -> str:
        assert silence is None
        raise KvmFailure("qemu reported a KVM internal error")

    with pytest.raises(KvmFailure):
        with_kvm_fallback(selector, attempt, BuildLog(), "x")


# -- screens, keys and the serial console


def decode_png_rgb(data: bytes) -> tuple[int, int, bytes]:
    """Just enough PNG decoding to check encode_png (filter 0 only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * 3 + 1
    rows = [raw[y * stride : (y + 1) * stride] for y in range(height)]
    assert all(row[0] == 0 for row in rows)
    return width, height, b"".join(row[1:] for row in rows)


def test_ppm_to_png_roundtrip_and_colours() -> None:
    pixels = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 9, 9, 9])
    ppm = b"P6\n# qemu\n3 2\n255\n" + pixels
    width, height, parsed = screen.parse_ppm(ppm)
    assert (width, height, parsed) == (3, 2, pixels)
    assert screen.count_colours(parsed) == 6
    assert decode_png_rgb(screen.encode_png(width, height, parsed)) == (3, 2, pixels)


def test_blank_screen_has_one_colour() -> None:
    assert screen.count_colours(bytes(640 * 480 * 3)) == 1


def test_a_cleared_screen_with_a_cursor_counts_as_blank_and_a_text_line_does_not() -> None:
    width, height = 720, 400
    cleared = bytearray(width * height * 3)
    for y in range(12, 14):  # the text cursor: 8 x 2 pixels of grey
        for x in range(8):
            cleared[(y * width + x) * 3 : (y * width + x) * 3 + 3] = b"\xaa\xaa\xaa"
    assert screen.count_colours(bytes(cleared)) == 2
    assert screen.drawn_share(bytes(cleared)) < screen.BLANK_SHARE
    menu = bytearray(cleared)
    for y in range(100, 116):  # one line of menu text, 40 cells half lit
        for x in range(0, 320, 2):
            menu[(y * width + x) * 3 : (y * width + x) * 3 + 3] = b"\xff\xff\xff"
    assert screen.drawn_share(bytes(menu)) > screen.BLANK_SHARE


def test_truncated_ppm_is_rejected() -> None:
    with pytest.raises(ValueError):
        screen.parse_ppm(b"P6\n3 2\n255\n" + bytes(5))


def test_keys_for_a_us_keyboard() -> None:
    assert screen.char_qcodes("a") == ["a"]
    assert screen.char_qcodes("A") == ["shift", "a"]
    assert screen.char_qcodes("|") == ["shift", "backslash"]
    with pytest.raises(ValueError):
        screen.char_qcodes("\u00e9")


def test_clean_serial() -> None:
    assert console.clean_serial("\x1b[2J\x1b[01;01Hdebian login: \r\n\x00") == \
        "\ndebian login: \n"
    menu = "\x1be\x1b%@\x1b)0\x1b[9;9H\x0elqqk\x0f\x1b[10;9H\x1b[0;1;37;40mx Live x\x1b[0m"
    assert console.clean_serial(menu) == "\nlqqk\nx Live x"


# -- the running machine, against a fake qemu (a script that plays getty and a shell)


@pytest.fixture
def fake_vm(tmp_path: Path) -> Callable[[], Machine]:
    script = fakeqemu.install(tmp_path)

    def make() -> Machine:
        return Machine(spec(qmp_socket=tmp_path / "qmp.sock"), RUNNER, tmp_path / "serial.log",
                       tmp_path, binary=str(script))

    return make


@pytest.mark.parametrize(
    ("scenario", "error", "silence"),
    [
        ("kvm-error", KvmFailure, None),
        ("silent", KvmFailure, 1.0),
        ("exit", VMExited, None),
        ("silent", ExpectTimeout, None),
    ],
)
def test_boot_failures_are_detected_fast(
    fake_vm: Callable[[], Machine], monkeypatch: pytest.MonkeyPatch, scenario: str,
    error: type[Exception], silence: float | None,
) -> None:
    monkeypatch.setenv("FAKE_QEMU", scenario)
    with fake_vm() as vm, pytest.raises(error):
        vm.expect("login: ", 3, silence_limit=silence)
    assert vm.elapsed < 6
    assert RUNNER.running() == []  # the runner's child, ended with the context
