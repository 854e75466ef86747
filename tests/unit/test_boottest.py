"""The boot test without a real VM: markers, checks, modes, boot entries, the command
line, and login and sudo through the serial shell of a fake qemu."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from deblive.boottest import checks
from deblive.boottest import run as boottest
from deblive.boottest.checks import check_expect, failed_units, root_locked, secure_boot_value
from deblive.boottest.medium import BOOT_ENTRIES, BootEntries, read_entries
from deblive.boottest.modes import MEDIUM_MODES, BadInput, BootMode, parse_modes
from deblive.boottest.shell import (
    LOGIN_PROMPT,
    LoginFailed,
    Marked,
    SerialShell,
    login,
    marked_command,
    parse_marked,
)
from deblive.cli import commands, main
from deblive.cli.parser import make_parser
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.model.arch import Arch
from deblive.vm.accel import AccelDecision, AccelRequest, AccelSelector, ProbeOutcome, ProbeResult
from deblive.vm.command import Accel, Media, VMSpec
from deblive.vm.errors import KvmFailure
from deblive.vm.machine import Machine
from tests.support import fakeqemu

RUNNER = Runner(BuildLog())
ENTRIES = BootEntries(Arch.AMD64, "user", "nopasswd", True, True, None)


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
    assert result == Marked(124, "line one\nline two")


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

# -- modes, entries, options


def test_parse_modes() -> None:
    assert parse_modes(None) == list(MEDIUM_MODES) == [
        BootMode.BIOS_CD, BootMode.BIOS_USB, BootMode.UEFI_CD, BootMode.UEFI_USB,
        BootMode.SECUREBOOT_CD, BootMode.SECUREBOOT_USB]
    assert parse_modes(None, arch=Arch.ARM64) == list(MEDIUM_MODES)
    assert parse_modes(None, network=True) == [
        BootMode.PXE_BIOS, BootMode.PXE_UEFI, BootMode.PXE_SECUREBOOT]
    assert parse_modes(["uefi-usb,bios-cd", "bios-cd"]) == [BootMode.BIOS_CD, BootMode.UEFI_USB]
    assert parse_modes(["pxe-uefi,pxe-bios"], network=True) == [
        BootMode.PXE_BIOS, BootMode.PXE_UEFI]
    with pytest.raises(BadInput) as err:
        parse_modes(["bios-floppy"])
    assert err.value.exit_code == 2
    with pytest.raises(BadInput, match="PXE modes boot a netboot directory"):
        parse_modes(["bios-cd,pxe-bios"])
    with pytest.raises(BadInput, match="PXE modes only"):
        parse_modes(["uefi-cd"], network=True)


def test_pxe_mode_properties() -> None:
    assert (BootMode.PXE_BIOS.firmware, BootMode.PXE_BIOS.network) == ("bios", True)
    assert (BootMode.PXE_SECUREBOOT.firmware, BootMode.PXE_SECUREBOOT.uefi) == (
        "secureboot", True)
    assert BootMode.BIOS_USB.network is False
    with pytest.raises(ValueError):
        _ = BootMode.PXE_UEFI.media
    assert "UEFI only" in (BootMode.PXE_BIOS.not_applicable(Arch.ARM64) or "")


def test_mode_properties() -> None:
    mode = BootMode("secureboot-usb")
    assert (mode.firmware, mode.media, mode.uefi) == ("secureboot", "usb", True)
    assert BootMode.BIOS_CD.not_applicable(Arch.AMD64) is None
    assert "UEFI only" in (BootMode.BIOS_CD.not_applicable(Arch.ARM64) or "")


def test_login_timeout_defaults_follow_accel() -> None:
    options = boottest.TestOptions()
    assert options.login_timeout("tcg", Arch.AMD64) > options.login_timeout("kvm", Arch.AMD64)
    assert boottest.TestOptions(timeout=42).login_timeout("tcg", Arch.AMD64) == 42


def write_entries(iso: Path, image: str | None = None, **changes: Any) -> None:
    data = {"format": 1, "image": image or iso.stem, "architecture": "amd64", "bios": True,
            "live_user": {"name": "alice", "sudo": "password"}, "root_locked": True,
            "menu": {"title": "T", "timeout": 5, "default": "live", "serial": True,
                     "splash": True, "architecture": "amd64",
                     "items": [{"entry": {"id": "live", "label": "Live", "kernel": "/k",
                                          "initrd": "/i", "cmdline": ["boot=live"],
                                          "extra_initrds": []}}]}}
    data.update(changes)
    (iso.parent / BOOT_ENTRIES).write_text(json.dumps(data))


def test_boot_entries_come_from_the_build(tmp_path: Path) -> None:
    iso = tmp_path / "demo-bookworm-amd64.iso"
    iso.write_bytes(b"")
    assert read_entries(iso) is None
    write_entries(iso)
    entries = read_entries(iso)
    assert entries is not None
    assert (entries.architecture, entries.user, entries.sudo) == (Arch.AMD64, "alice", "password")
    assert entries.menu is not None and entries.menu.entry("live").cmdline == ("boot=live",)


@pytest.mark.parametrize(("image", "changes", "words"), [
    ("other-bookworm-amd64", {}, "describes other"),
    (None, {"architecture": "vax"}, "not deblive's boot entries"),
    (None, {"live_user": {"name": "x", "sudo": "sometimes"}}, "sudo policy"),
    (None, {"menu": {"title": "T"}}, "not a boot menu"),
])
def test_boot_entries_that_are_not_the_builds_are_bad_input(
    tmp_path: Path, image: str | None, changes: dict[str, Any], words: str
) -> None:
    iso = tmp_path / "demo-bookworm-amd64.iso"
    iso.write_bytes(b"")
    write_entries(iso, image, **changes)
    with pytest.raises(BadInput, match=words):
        boottest.target_for(iso, boottest.TestOptions())


def test_without_entries_the_architecture_must_be_given(tmp_path: Path) -> None:
    iso = tmp_path / "foreign.iso"
    iso.write_bytes(b"")
    with pytest.raises(BadInput, match="give --arch"):
        boottest.target_for(iso, boottest.TestOptions())
    target = boottest.target_for(iso, boottest.TestOptions(arch=Arch.ARM64))
    assert target.entries.architecture is Arch.ARM64 and target.entries.user == "user"


def cli(argv: list[str]) -> Any:
    return make_parser().parse_args(argv)


def test_cli_options_and_no_password_on_the_command_line(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    args = cli(["test", "x.iso", "--mode", "bios-cd", "--mode", "uefi-cd,uefi-usb",
                "--accel", "tcg", "--jobs", "2", "--screenshot", "--timeout", "90",
                "--user", "u"])
    assert parse_modes(args.mode) == [BootMode.BIOS_CD, BootMode.UEFI_CD, BootMode.UEFI_USB]
    assert (args.accel, args.jobs, args.screenshot, args.timeout) == ("tcg", 2, True, 90)
    with pytest.raises(SystemExit):
        cli(["test", "x.iso", "--password", "visible-in-ps"])
    monkeypatch.delenv(commands.PASSWORD_ENV, raising=False)
    assert commands.test_password(args) == "live"
    monkeypatch.setenv(commands.PASSWORD_ENV, "from-env")
    assert commands.test_password(args) == "from-env"
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    assert commands.test_password(cli(["test", "x.iso", "--password-file", str(secret)])) == \
        "from-file"


@pytest.mark.parametrize(
    "argv",
    [
        ["test", "/nonexistent/x.iso"],
        ["test", "__ISO__", "--mode", "bios-floppy"],
        ["test", "__ISO__", "--jobs", "0"],
        ["test", "__ISO__"],  # no boot-entries.json and no --arch
    ],
)
def test_cli_bad_input_exits_2(argv: list[str], tmp_path: Path) -> None:
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"")
    assert main([str(iso) if a == "__ISO__" else a for a in argv]) == 2


# -- login, the serial shell and sudo, against a fake qemu


@pytest.fixture
def fake_vm(tmp_path: Path) -> Callable[[], Machine]:
    script = fakeqemu.install(tmp_path)

    def make() -> Machine:
        spec = VMSpec(Arch.AMD64, Accel.TCG, media=Media(tmp_path / "x.iso", "cd"),
                      qmp_socket=tmp_path / "qmp.sock")
        return Machine(spec, RUNNER, tmp_path / "serial.log", tmp_path, binary=str(script))

    return make


def test_login_and_marked_commands(fake_vm: Callable[[], Machine]) -> None:
    with fake_vm() as vm:
        vm.expect(LOGIN_PROMPT, 10)
        login(vm, "user", "live", 10)
        shell = SerialShell(vm)
        shell.prepare()
        assert shell.run("echo hello; echo world; (exit 3)", 10) == Marked(3, "hello\nworld")
        assert shell.run("printf 'no newline'", 10) == Marked(0, "no newline")
        vm.send("sudo -n poweroff\r")
        assert vm.wait_exit(10)
    assert b"debian login:" in vm.serial_log.read_bytes()


def test_wrong_password_is_reported(fake_vm: Callable[[], Machine]) -> None:
    with fake_vm() as vm:
        vm.expect(LOGIN_PROMPT, 10)
        with pytest.raises(LoginFailed):
            login(vm, "user", "nope", 10)
        assert any("Login incorrect" in line for line in vm.tail())
    assert not vm.running


@pytest.mark.parametrize(("policy", "sudo_n", "ok"), [
    ("nopasswd", "0", True), ("nopasswd", "1", False),
    ("password", "1", True), ("password", "0", False),
    ("none", "1", False),  # the fake's sudo -v accepts "live": sudo works, policy says none
])
def test_sudo_is_what_the_policy_says(fake_vm: Callable[[], Machine],
                                      monkeypatch: pytest.MonkeyPatch, policy: str,
                                      sudo_n: str, ok: bool) -> None:
    monkeypatch.setenv("FAKE_SUDO_N", sudo_n)
    entries = BootEntries(Arch.AMD64, "user", policy, True, True, None)  # type: ignore[arg-type]
    with fake_vm() as vm:
        vm.expect(LOGIN_PROMPT, 10)
        login(vm, "user", "live", 10)
        shell = SerialShell(vm)
        shell.prepare()
        check = checks.check_sudo(shell, entries, "live")
        assert check.ok is ok, check.detail
    # The password is typed at sudo's prompt only, with echo off: never in the log.
    log = vm.serial_log.read_text(errors="replace")
    assert "DL-SUDO-PASSWORD" in log or policy == "nopasswd" or sudo_n == "0"
    assert "live" not in log.split("Password:", 1)[1]


# -- a mode whose KVM run breaks is retried under TCG, and the run stays on TCG


class FakeProbe:
    def __call__(self) -> ProbeResult:
        return ProbeResult(ProbeOutcome.OK)


def test_run_mode_falls_back_to_tcg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[Accel, float | None]] = []

    def fake_boot(target: Any, mode: BootMode, decision: AccelDecision, silence: float | None,
                  *rest: Any) -> boottest.ModeResult:
        calls.append((decision.accel, silence))
        if decision.accel is Accel.KVM:
            raise KvmFailure("no serial output in the first 20 s")
        return boottest.ModeResult(str(mode), accel=str(decision.accel), result="pass")

    monkeypatch.setattr(boottest, "_boot_once", fake_boot)
    selector = AccelSelector(AccelRequest.AUTO, RUNNER, Arch.AMD64, kvm_usable=lambda: True,
                             probe=FakeProbe())
    target = boottest.Target(tmp_path / "x.iso", ENTRIES, tmp_path)
    options = boottest.TestOptions()
    result = boottest.run_mode(target, BootMode.UEFI_CD, selector, options, RUNNER, 2)
    assert calls == [(Accel.KVM, 20.0), (Accel.TCG, None)]
    assert result.accel == "tcg" and result.result == "pass"
    assert "KVM attempt abandoned" in result.notes[0]
    assert selector.get().accel is Accel.TCG
    boottest.run_mode(target, BootMode.UEFI_CD, selector, options, RUNNER, 2)
    assert calls[-1] == (Accel.TCG, None)


def test_run_tests_in_parallel_keeps_order_and_writes_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    iso = tmp_path / "live.iso"
    iso.write_bytes(b"")
    seen_smp: list[int] = []

    def fake_run_mode(target: Any, mode: BootMode, selector: AccelSelector, options: Any,
                      runner: Runner, smp: int) -> boottest.ModeResult:
        seen_smp.append(smp)
        verdict: Literal["pass", "fail"] = "fail" if mode is BootMode.UEFI_USB else "pass"
        return boottest.ModeResult(str(mode), result=verdict, accel=str(selector.get().accel))

    monkeypatch.setattr(boottest, "run_mode", fake_run_mode)
    monkeypatch.setattr(shutil, "which", lambda _: "/usr/bin/qemu-system-x86_64")
    options = boottest.TestOptions(accel=AccelRequest.TCG, jobs=3, arch=Arch.AMD64)
    results = boottest.run_tests(iso, parse_modes(None), options, BuildLog())
    assert [r.mode for r in results] == [str(m) for m in MEDIUM_MODES]
    assert set(seen_smp) == {1}
    data = json.loads((tmp_path / "test-live" / "results.json").read_text())
    assert data["passed"] is False
    assert data["accel"]["final"] == "tcg" and data["accel"]["requested"] == "tcg"
    assert [m["result"] for m in data["modes"]].count("fail") == 1


def test_run_tests_rejects_missing_iso(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        boottest.run_tests(tmp_path / "nope.iso", [BootMode.BIOS_CD], boottest.TestOptions(),
                           BuildLog())


def test_results_table_prints_guest_text_plainly() -> None:
    from rich.console import Console

    table = boottest.results_table([boottest.ModeResult("bios-cd", failures=["[/x] [bold]"])])
    out = Console(file=__import__("io").StringIO(), width=200)
    out.print(table)
    assert "[/x] [bold]" in out.file.getvalue()  # type: ignore[attr-defined]


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


def test_expect_commands_become_checks(fake_vm: Callable[[], Machine]) -> None:
    with fake_vm() as vm:
        vm.expect(LOGIN_PROMPT, 10)
        login(vm, "user", "live", 10)
        shell = SerialShell(vm)
        shell.prepare()
        good = check_expect(shell, "test 1 = 1")
        bad = check_expect(shell, "echo missing /etc/x; (exit 1)")
        vm.send("sudo -n poweroff\r")
        assert vm.wait_exit(10)
    assert (good.name, good.ok, good.detail) == ("expect: test 1 = 1", True, "exit 0")
    assert not bad.ok and bad.detail == "exit 1: missing /etc/x"


def test_the_machine_check_compares_uname_with_the_images_architecture(
        fake_vm: Callable[[], Machine]) -> None:
    """The fake guest is a shell on this (amd64) host: uname -m says x86_64."""
    with fake_vm() as vm:
        vm.expect(LOGIN_PROMPT, 10)
        login(vm, "user", "live", 10)
        shell = SerialShell(vm)
        shell.prepare()
        right = checks.check_machine(shell, BootEntries.defaults(Arch.AMD64, "user"))
        wrong = checks.check_machine(shell, BootEntries.defaults(Arch.I386, "user"))
        vm.send("sudo -n poweroff\r")
        assert vm.wait_exit(10)
    assert (right.name, right.ok) == ("machine", True)
    assert not wrong.ok and wrong.detail.startswith("kernel for x86_64, expected i386 (i686")
