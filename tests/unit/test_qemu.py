"""Unit tests for the boot-test VM and modes: no qemu is started, no root needed."""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from deblive.boottest import run as boottest
from deblive.boottest.run import (
    BadInput,
    failed_units,
    marked_command,
    parse_marked,
    parse_modes,
    root_locked,
    secure_boot_value,
)
from deblive.core.log import BuildLog
from deblive.vm import qemu
from deblive.vm.qemu import (
    AccelSelector,
    Firmware,
    ProbeOutcome,
    ProbeResult,
    QemuError,
    VMSpec,
    build_command,
    decide_accel,
    select_firmware,
)

OVMF = Path("/usr/share/OVMF")
PLAIN = Firmware(OVMF / "OVMF_CODE_4M.fd", OVMF / "OVMF_VARS_4M.fd", False, False, "t")
SECURE = Firmware(OVMF / "OVMF_CODE_4M.ms.fd", OVMF / "OVMF_VARS_4M.ms.fd", True, True, "t")


def spec(**kw: Any) -> VMSpec:
    base: dict[str, Any] = {
        "iso": Path("/img/live.iso"),
        "firmware_kind": "bios",
        "media": "cd",
        "accel": "tcg",
        "qmp_socket": Path("/run/t/qmp.sock"),
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


def test_usb_is_a_snapshot_disk_on_xhci() -> None:
    argv = build_command(spec(media="usb"))
    drives = option_value(argv, "-drive")
    assert drives == ["if=none,id=media,format=raw,snapshot=on,file=/img/live.iso"]
    assert "media=cdrom" not in drives[0]
    devices = option_value(argv, "-device")
    assert "qemu-xhci,id=xhci" in devices
    assert "usb-storage,bus=xhci.0,drive=media,removable=on,bootindex=1" in devices


def test_comma_in_iso_path_is_escaped() -> None:
    argv = build_command(spec(iso=Path("/a,b/x.iso")))
    assert option_value(argv, "-drive")[0].endswith("file=/a,,b/x.iso")


def test_uefi_command_uses_code_readonly_and_vars_copy() -> None:
    argv = build_command(
        spec(firmware_kind="uefi", firmware=PLAIN, vars_file=Path("/run/t/vars.fd"))
    )
    drives = option_value(argv, "-drive")
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={PLAIN.code}" in drives
    assert "if=pflash,format=raw,unit=1,file=/run/t/vars.fd" in drives
    assert option_value(argv, "-machine") == ["q35"]
    assert "-global" not in argv


def test_secureboot_command_has_smm_and_secure_flash() -> None:
    argv = build_command(
        spec(firmware_kind="secureboot", firmware=SECURE, vars_file=Path("/run/t/v.fd"))
    )
    assert option_value(argv, "-machine") == ["q35,smm=on"]
    assert option_value(argv, "-global") == ["driver=cfi.pflash01,property=secure,value=on"]
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={SECURE.code}" in option_value(
        argv, "-drive"
    )


def test_uefi_without_vars_copy_is_refused() -> None:
    with pytest.raises(QemuError):
        build_command(spec(firmware_kind="uefi", firmware=PLAIN))


def test_kvm_uses_host_cpu() -> None:
    argv = build_command(spec(accel="kvm", smp=1, memory_mib=1024))
    assert option_value(argv, "-accel") == ["kvm"]
    assert option_value(argv, "-cpu") == ["host"]
    assert option_value(argv, "-smp") == ["1"]
    assert option_value(argv, "-m") == ["1024"]


def test_direct_kernel() -> None:
    dk = qemu.DirectKernel(Path("/k"), Path("/i"), "boot=live console=ttyS0")
    argv = build_command(spec(direct_kernel=dk))
    assert option_value(argv, "-kernel") == ["/k"]
    assert option_value(argv, "-append") == ["boot=live console=ttyS0"]


# -- firmware descriptors


def descriptor(code: str, template: str, features: list[str], machines: list[str]) -> str:
    return json.dumps(
        {
            "interface-types": ["uefi"],
            "mapping": {
                "device": "flash",
                "executable": {"filename": code, "format": "raw"},
                "nvram-template": {"filename": template, "format": "raw"},
            },
            "targets": [{"architecture": "x86_64", "machines": machines}],
            "features": features,
        }
    )


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
    fw = select_firmware("uefi", [firmware_dir], exists=always)
    assert fw is not None
    assert fw.code == Path("/fw/plain.fd") and not fw.secure_boot and not fw.requires_smm


def test_select_secureboot_needs_enrolled_keys(firmware_dir: Path) -> None:
    fw = select_firmware("secureboot", [firmware_dir], exists=always)
    assert fw is not None
    assert fw.code == Path("/fw/sb.fd")
    assert fw.vars_template == Path("/fw/sb-vars.fd")
    assert fw.secure_boot and fw.requires_smm


def test_later_dir_overrides_same_name(firmware_dir: Path, tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "60-plain.json").write_text(descriptor("/etc/fw.fd", "/etc/v.fd", [], ["pc-q35-*"]))
    fw = select_firmware("uefi", [firmware_dir, etc], exists=always)
    assert fw is not None and fw.code == Path("/etc/fw.fd")


def test_descriptor_for_other_machine_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "60.json").write_text(descriptor("/fw/i440.fd", "/fw/v.fd", [], ["pc-i440fx-*"]))
    with pytest.raises(QemuError):
        select_firmware("uefi", [tmp_path], exists=lambda p: str(p).startswith("/fw"))


def test_missing_files_fall_back_to_known_paths(firmware_dir: Path) -> None:
    def only_ovmf(path: Path) -> bool:
        return str(path).startswith("/usr/share/OVMF/")

    fw = select_firmware("secureboot", [firmware_dir], exists=only_ovmf)
    assert fw is not None
    assert fw.code == OVMF / "OVMF_CODE_4M.ms.fd"
    assert fw.vars_template == OVMF / "OVMF_VARS_4M.ms.fd"


def test_no_firmware_at_all_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(QemuError, match="ovmf"):
        select_firmware("uefi", [tmp_path], exists=lambda _: False)


def test_bios_needs_no_firmware_file() -> None:
    assert select_firmware("bios", [], exists=lambda _: False) is None


# -- accelerator choice


class FakeProbe:
    def __init__(self, outcome: ProbeOutcome, detail: str = "") -> None:
        self.result = ProbeResult(outcome, detail)
        self.calls = 0

    def __call__(self) -> ProbeResult:
        self.calls += 1
        return self.result


def test_tcg_requested_never_probes() -> None:
    probe = FakeProbe(ProbeOutcome.OK)
    decision = decide_accel("tcg", True, probe)
    assert decision.accel == "tcg" and not decision.fell_back
    assert probe.calls == 0


def test_auto_without_kvm_device_is_tcg_without_probe() -> None:
    probe = FakeProbe(ProbeOutcome.OK)
    decision = decide_accel("auto", False, probe)
    assert decision.accel == "tcg" and decision.fell_back
    assert probe.calls == 0


def test_auto_with_working_kvm() -> None:
    decision = decide_accel("auto", True, FakeProbe(ProbeOutcome.OK))
    assert decision.accel == "kvm" and not decision.fell_back


@pytest.mark.parametrize(
    "outcome", [ProbeOutcome.KVM_ERROR, ProbeOutcome.EXITED, ProbeOutcome.NO_OUTPUT]
)
def test_auto_falls_back_when_probe_fails(outcome: ProbeOutcome) -> None:
    decision = decide_accel("auto", True, FakeProbe(outcome, "emulation failure"))
    assert decision.accel == "tcg" and decision.fell_back
    assert outcome.value in decision.reason and "emulation failure" in decision.reason


def test_probe_time_is_measured() -> None:
    ticks = iter([10.0, 10.25])
    decision = decide_accel("auto", True, FakeProbe(ProbeOutcome.OK), clock=lambda: next(ticks))
    assert decision.probe_seconds == 0.25


def test_kvm_requested_without_device_is_an_error() -> None:
    with pytest.raises(QemuError):
        decide_accel("kvm", False, FakeProbe(ProbeOutcome.OK))


def test_kvm_requested_is_obeyed_without_probe() -> None:
    probe = FakeProbe(ProbeOutcome.KVM_ERROR)
    assert decide_accel("kvm", True, probe).accel == "kvm"
    assert probe.calls == 0


def test_selector_probes_once_per_run() -> None:
    probe = FakeProbe(ProbeOutcome.KVM_ERROR)
    selector = AccelSelector("auto", kvm_usable=lambda: True, probe=probe)
    assert [selector.get().accel for _ in range(4)] == ["tcg"] * 4
    assert probe.calls == 1


def test_selector_demotes_auto_but_not_explicit_kvm() -> None:
    auto = AccelSelector("auto", kvm_usable=lambda: True, probe=FakeProbe(ProbeOutcome.OK))
    assert auto.get().accel == "kvm"
    assert auto.demote("broke in bios-cd").accel == "tcg"
    assert auto.get().accel == "tcg" and auto.get().fell_back
    forced = AccelSelector("kvm", kvm_usable=lambda: True, probe=FakeProbe(ProbeOutcome.OK))
    forced.get()
    assert forced.demote("x").accel == "kvm"
    assert not forced.can_fall_back


def test_probe_detail_skips_warnings() -> None:
    err = (
        "qemu-system-x86_64: warning: host doesn't support requested feature\n"
        "KVM internal error. Suberror: 1\n"
    )
    assert qemu._probe_detail(err) == "KVM internal error. Suberror: 1"


# -- serial markers


def test_marked_command_does_not_contain_its_markers() -> None:
    line = marked_command(7, "true")
    assert "DL-B-7" not in line and "DL-RC-7" not in line
    assert line.endswith("\r")


def test_parse_marked_with_echo_and_noise() -> None:
    typed = marked_command(3, "passwd -S root")
    text = (
        f"{typed}\r\nDL-B-3\r\n\x1b[0;1;31mroot L 2025-01-01 0 99999 7 -1\x1b[0m\r\nDL-RC-3=0\r\n"
    )
    result = parse_marked(text, 3)
    assert result is not None
    assert result.rc == 0
    assert result.output == "root L 2025-01-01 0 99999 7 -1"


def test_parse_marked_incomplete_and_other_tokens() -> None:
    assert parse_marked("DL-B-4\r\nsome output\r\n", 4) is None
    assert parse_marked("DL-B-1\r\nx\r\nDL-RC-1=0\r\n", 2) is None
    assert parse_marked("DL-B-12\r\nx\r\nDL-RC-12=0\r\n", 1) is None


def test_parse_marked_exit_status_and_multiline() -> None:
    result = parse_marked("DL-B-9\r\nline one\r\nline two\r\n\r\nDL-RC-9=124\r\n", 9)
    assert result == boottest.Marked(124, "line one\nline two")


def test_root_locked() -> None:
    assert root_locked("sudo: unable to resolve host debian\nroot L 2025-11-26 0 99999 7 -1")
    assert root_locked("root LK 2025-11-26 0 99999 7 -1")
    assert root_locked("root P 2025-11-26 0 99999 7 -1") is False
    assert root_locked("root NP 2025-11-26 0 99999 7 -1") is False
    assert root_locked("passwd: unknown user") is None


def test_secure_boot_value() -> None:
    assert secure_boot_value("   6   0   0   0   1\n") == 1
    assert secure_boot_value("   6   0   0   0   0\n") == 0
    assert secure_boot_value("od: cannot open") is None


def test_failed_units() -> None:
    listing = (
        "sudo: unable to resolve host debian: Temporary failure in name resolution\n"
        "\u25cf systemd-networkd-wait-online.service loaded failed failed Wait for Network\n"
        "run-live-medium\\x2d1.mount loaded failed failed /run/live\n"
    )
    assert failed_units(listing) == [
        "systemd-networkd-wait-online.service",
        "run-live-medium\\x2d1.mount",
    ]
    assert failed_units("") == []


def test_clean_serial() -> None:
    assert qemu.clean_serial("\x1b[2J\x1b[01;01Hdebian login: \r\n\x00") == "\ndebian login: \n"
    menu = "\x1be\x1b%@\x1b)0\x1b[9;9H\x0elqqk\x0f\x1b[10;9H\x1b[0;1;37;40mx Live x\x1b[0m"
    assert qemu.clean_serial(menu) == "\nlqqk\nx Live x"


# -- modes and options


def test_parse_modes() -> None:
    assert parse_modes(None) == list(boottest.MODES)
    assert parse_modes(["uefi-usb,bios-cd", "bios-cd"]) == ["bios-cd", "uefi-usb"]
    with pytest.raises(BadInput) as err:
        parse_modes(["bios-floppy"])
    assert err.value.exit_code == 2


def test_mode_from_name() -> None:
    mode = boottest.mode_from_name("secureboot-usb")
    assert (mode.firmware, mode.media) == ("secureboot", "usb")


def test_login_timeout_defaults_follow_accel() -> None:
    options = boottest.TestOptions()
    assert options.login_timeout("tcg") > options.login_timeout("kvm")
    assert boottest.TestOptions(timeout=42).login_timeout("tcg") == 42


def parse_cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    boottest.register(sub)
    return parser.parse_args(argv)


def test_cli_options() -> None:
    args = parse_cli(
        [
            "test",
            "x.iso",
            "--mode",
            "bios-cd",
            "--mode",
            "uefi-cd,uefi-usb",
            "--accel",
            "tcg",
            "--jobs",
            "2",
            "--screenshot",
            "--timeout",
            "90",
            "--user",
            "u",
            "--password",
            "p",
        ]
    )
    options = boottest.options_from_args(args)
    assert parse_modes(args.mode) == ["bios-cd", "uefi-cd", "uefi-usb"]
    assert (options.accel, options.jobs, options.screenshot) == ("tcg", 2, True)
    assert (options.timeout, options.user, options.password) == (90, "u", "p")
    assert callable(args.func)


@pytest.mark.parametrize(
    "argv",
    [
        ["test", "/nonexistent/x.iso"],
        ["test", "__ISO__", "--mode", "bios-floppy"],
        ["test", "__ISO__", "--jobs", "0"],
    ],
)
def test_cli_bad_input_exits_2(argv: list[str], tmp_path: Path) -> None:
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"")
    argv = [str(iso) if a == "__ISO__" else a for a in argv]
    args = parse_cli(argv)
    assert args.func(args) == 2


# -- screenshots


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
    width, height, parsed = qemu.parse_ppm(ppm)
    assert (width, height, parsed) == (3, 2, pixels)
    assert qemu.count_colours(parsed) == 6
    assert decode_png_rgb(qemu.encode_png(width, height, parsed)) == (3, 2, pixels)


def test_blank_screen_has_one_colour() -> None:
    assert qemu.count_colours(bytes(640 * 480 * 3)) == 1


def test_truncated_ppm_is_rejected() -> None:
    with pytest.raises(ValueError):
        qemu.parse_ppm(b"P6\n3 2\n255\n" + bytes(5))


# A test double must be usable where the real one is: keep the signature honest.
_probe_type: Callable[[], ProbeResult] = FakeProbe(ProbeOutcome.OK)


# -- the serial plumbing, against a fake qemu (a script that plays getty and a shell)

FAKE_QEMU = r"""
import os, subprocess, sys, time
scenario = os.environ.get("FAKE_QEMU", "login")
out = sys.stdout.buffer


def say(data):
    out.write(data)
    out.flush()


def readline():
    buf = b""
    while True:
        c = os.read(0, 1)
        if not c:
            sys.exit(0)
        if c == b"\r":
            return buf.decode()
        buf += c


if scenario == "kvm-error":
    say(b"SeaBIOS\r\n")
    sys.stderr.write("KVM internal error. Suberror: 1\n")
    sys.stderr.flush()
    time.sleep(30)
if scenario == "silent":
    time.sleep(30)
if scenario == "exit":
    say(b"boot\r\n")
    sys.exit(3)
say(b"[  OK  ] Started getty\r\n\r\nDebian GNU/Linux 12 debian ttyS0\r\n\r\ndebian login: ")
user = readline()
say(user.encode() + b"\r\nPassword: ")
if readline() != "live":
    say(b"\r\n\r\nLogin incorrect\r\ndebian login: ")
    time.sleep(30)
say(b"\r\nLinux debian 6.1.0-50-amd64\r\nuser@debian:~$ ")
while True:
    line = readline()
    if line.startswith("sudo -n poweroff"):
        sys.exit(0)
    result = subprocess.run(["sh", "-c", line], capture_output=True)
    say((result.stdout + result.stderr).replace(b"\n", b"\r\n"))
"""


@pytest.fixture
def fake_vm(tmp_path: Path) -> Callable[[], qemu.VM]:
    script = tmp_path / "fake-qemu"
    script.write_text(f"#!{sys.executable}\n{FAKE_QEMU}")
    script.chmod(0o755)

    def make() -> qemu.VM:
        return qemu.VM(
            spec(qmp_socket=tmp_path / "qmp.sock"),
            tmp_path / "serial.log",
            tmp_path,
            binary=str(script),
        )

    return make


def test_login_and_marked_commands(fake_vm: Callable[[], qemu.VM]) -> None:
    with fake_vm() as vm:
        vm.expect(boottest.LOGIN_PROMPT, 10)
        boottest.login(vm, "user", "live", 10)
        shell = boottest.SerialShell(vm)
        shell.prepare()
        assert shell.run("echo hello; echo world; (exit 3)", 10) == boottest.Marked(
            3, "hello\nworld"
        )
        assert shell.run("printf 'no newline'", 10) == boottest.Marked(0, "no newline")
        vm.send("sudo -n poweroff\r")
        assert vm.wait_exit(10)
    assert b"debian login:" in (vm.serial_log).read_bytes()


def test_wrong_password_is_reported(fake_vm: Callable[[], qemu.VM]) -> None:
    with fake_vm() as vm:
        vm.expect(boottest.LOGIN_PROMPT, 10)
        with pytest.raises(boottest.LoginFailed):
            boottest.login(vm, "user", "nope", 10)
        assert any("Login incorrect" in line for line in vm.tail())
    assert not vm.running


@pytest.mark.parametrize(
    ("scenario", "error", "silence"),
    [
        ("kvm-error", qemu.KvmFailure, None),
        ("silent", qemu.KvmFailure, 1.0),
        ("exit", qemu.VMExited, None),
        ("silent", qemu.ExpectTimeout, None),
    ],
)
def test_boot_failures_are_detected_fast(
    fake_vm: Callable[[], qemu.VM],
    monkeypatch: pytest.MonkeyPatch,
    scenario: str,
    error: type[Exception],
    silence: float | None,
) -> None:
    monkeypatch.setenv("FAKE_QEMU", scenario)
    with fake_vm() as vm, pytest.raises(error):
        vm.expect(boottest.LOGIN_PROMPT, 3, silence_limit=silence)
    assert vm.elapsed < 6


# -- a mode whose KVM run breaks is retried under TCG, and the run stays on TCG


def test_run_mode_falls_back_to_tcg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, bool]] = []

    def fake_boot(iso: Path, mode: boottest.Mode, decision: qemu.AccelDecision, *rest: Any) -> Any:
        can_fall_back = rest[-1]
        calls.append((decision.accel, can_fall_back))
        result = boottest.ModeResult(mode.name, accel=decision.accel, result="pass")
        if decision.accel == "kvm":
            return boottest._Attempt(result, kvm_broke="no serial output in the first 15 s")
        return boottest._Attempt(result)

    monkeypatch.setattr(boottest, "_boot_once", fake_boot)
    selector = AccelSelector("auto", kvm_usable=lambda: True, probe=FakeProbe(ProbeOutcome.OK))
    log = BuildLog()
    mode = boottest.mode_from_name("uefi-cd")
    options = boottest.TestOptions()
    result = boottest.run_mode(tmp_path / "x.iso", mode, selector, options, tmp_path, log, 2)
    assert calls == [("kvm", True), ("tcg", False)]
    assert result.accel == "tcg" and result.result == "pass"
    assert "KVM attempt abandoned" in result.notes[0]
    assert selector.get().accel == "tcg"
    boottest.run_mode(tmp_path / "x.iso", mode, selector, options, tmp_path, log, 2)
    assert calls[-1] == ("tcg", True)


def test_run_tests_in_parallel_keeps_order_and_writes_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    iso = tmp_path / "live.iso"
    iso.write_bytes(b"")
    seen_smp: list[int] = []

    def fake_run_mode(
        iso: Path,
        mode: boottest.Mode,
        selector: AccelSelector,
        options: Any,
        out: Path,
        log: BuildLog,
        smp: int,
    ) -> boottest.ModeResult:
        seen_smp.append(smp)
        verdict: Literal["pass", "fail"] = "fail" if mode.name == "uefi-usb" else "pass"
        return boottest.ModeResult(mode.name, result=verdict, accel=selector.get().accel)

    monkeypatch.setattr(boottest, "run_mode", fake_run_mode)
    monkeypatch.setattr(shutil, "which", lambda _: "/usr/bin/qemu-system-x86_64")
    options = boottest.TestOptions(accel="tcg", jobs=3)
    results = boottest.run_tests(iso, list(boottest.MODES), options, BuildLog())
    assert [r.mode for r in results] == list(boottest.MODES)
    assert set(seen_smp) == {1}
    data = json.loads((tmp_path / "test-live" / "results.json").read_text())
    assert data["passed"] is False
    assert data["accel"]["final"] == "tcg" and data["accel"]["requested"] == "tcg"
    assert [m["result"] for m in data["modes"]].count("fail") == 1


def test_run_tests_rejects_missing_iso(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        boottest.run_tests(tmp_path / "nope.iso", ["bios-cd"], boottest.TestOptions(), BuildLog())


def test_milestone_patterns_match_real_console_lines() -> None:
    from deblive.boottest.run import MILESTONES

    samples = {
        "firmware": "BdsDxe: loading Boot0001 \"UEFI QEMU DVD-ROM\"",
        "boot-loader": "ISOLINUX 6.04 20190226 ETCD Copyright (C) 1994-2015 H. Peter Anvin",
        "kernel": "[    0.000000] Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org)",
        "initramfs": "[    1.2] Run /init as init process",
        "userspace": "[  OK  ] Welcome to Debian GNU/Linux 12 (bookworm)!",
        "login": "debian login: ",
    }
    for name, line in samples.items():
        assert MILESTONES[name].search(line), name
    assert not MILESTONES["login"].search("Last login: Thu Nov 26")


class _ShuttingDownVM:
    """Stands in for a VM at shutdown: prints live-tools' prompt, ends once answered."""

    def __init__(self) -> None:
        self.text = "login: ok\nPlease remove the live-medium, close the tray (if any) and " \
            "press ENTER to continue:"
        self.cursor = 10
        self.sent: list[str] = []

    def wait_exit(self, timeout: float) -> bool:
        return bool(self.sent)

    def send(self, text: str) -> None:
        self.sent.append(text)


def test_power_off_answers_the_eject_prompt_once() -> None:
    vm = _ShuttingDownVM()
    notes: list[str] = []
    assert boottest.power_off(vm, 10.0, notes)  # type: ignore[arg-type]
    assert vm.sent == ["\r"] and "remove the live-medium" in notes[0]
