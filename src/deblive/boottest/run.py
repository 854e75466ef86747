"""`deblive test IMAGE.iso`: boot an ISO in qemu in several firmware modes and check it.

Each mode boots headless, waits for the login prompt on the serial console,
logs in as the live user and runs its checks through the serial shell: sudo
works, root is locked, the firmware interface and Secure Boot state are what
the mode booted with, systemd reached "running". Then it powers off and waits
for qemu to end, so a hang at shutdown is caught too.

Commands go through the serial shell framed by markers the typed text cannot
contain (printf assembles them), so echo, wrapped lines and kernel messages
between commands cannot fake a result.

The ISO's architecture (qemu.iso_architecture) picks the VM (qemu.ArchProfile).
Modes the architecture does not have are skipped with a note: arm64 has no
BIOS, and Secure Boot only where AAVMF with enrolled keys is installed. A
foreign architecture runs under TCG with its timeouts scaled.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import re
import shlex
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from rich.console import Console
from rich.table import Table

from deblive.core.log import BuildLog, format_seconds
from deblive.core.runner import DebliveError
from deblive.vm import qemu
from deblive.vm.qemu import (
    VM,
    AccelDecision,
    AccelSelector,
    DirectKernel,
    ExpectTimeout,
    FirmwareKind,
    KvmFailure,
    MediaKind,
    QemuError,
    VMExited,
)

MODES: tuple[str, ...] = (
    "bios-cd",
    "bios-usb",
    "uefi-cd",
    "uefi-usb",
    "secureboot-cd",
    "secureboot-usb",
)
SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
LOGIN_TIMEOUT = {"kvm": 120.0, "tcg": 300.0}
# A guest under KVM that printed nothing on serial by now is stalled: TCG gets
# OVMF's first line out after ~3 s, ISOLINUX's banner sooner.
KVM_SILENCE_LIMIT = 15.0
FAILURE_TAIL = 30
# First words of each boot phase on the serial console. The kernel, initramfs
# and systemd lines show only without `quiet` (e.g. boot.cmdline
# "loglevel=6 systemd.show_status=1"); the boot loader and login always show.
MILESTONES = {
    "firmware": re.compile(r"BdsDxe|SeaBIOS|iPXE|Booting from"),
    "boot-loader": re.compile(r"ISOLINUX|GNU GRUB|Welcome to GRUB"),
    "kernel": re.compile(r"Linux version \d|EFI stub:"),
    "initramfs": re.compile(r"Run /init as init process|Loading, please wait"),
    "live-boot": re.compile(r"live-boot|Begin: Running /scripts/live"),
    "userspace": re.compile(r"Welcome to .*Debian|systemd\[1\]: |run-init"),
    "login": re.compile(r"login: *$", re.MULTILINE),
}

LOGIN_PROMPT = re.compile(r"login: *$", re.MULTILINE)
PASSWORD_PROMPT = re.compile(r"[Pp]assword: *$", re.MULTILINE)
AFTER_PASSWORD = re.compile(r"(?P<bad>Login incorrect)|(?P<prompt>[$#] *$)", re.MULTILINE)
# The boot loaders' menus on serial (grub; ISOLINUX with SERIAL), or the
# kernel already starting (then the menu was missed).
MENU_OR_KERNEL = re.compile(
    r"(?P<menu>GNU GRUB|automatically in|Automatic boot in|Press \[Tab\])"
    r"|(?P<kernel>Linux version \d|Run /init|Loading, please wait)"
)


class BadInput(DebliveError):
    """A missing ISO or an unknown mode: exit status 2."""

    exit_code = 2


@dataclass(frozen=True)
class Mode:
    name: str
    firmware: FirmwareKind
    media: MediaKind


def mode_from_name(name: str) -> Mode:
    if name not in MODES:
        raise BadInput(f"unknown mode {name!r} (known: {', '.join(MODES)})")
    firmware, media = name.rsplit("-", 1)
    return Mode(name, cast(FirmwareKind, firmware), cast(MediaKind, media))


def parse_modes(values: Sequence[str] | None) -> list[str]:
    """--mode values (repeated and/or comma lists) to mode names in canonical order."""
    if not values:
        return list(MODES)
    wanted: set[str] = set()
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name:
                wanted.add(mode_from_name(name).name)
    if not wanted:
        raise BadInput("--mode names no mode")
    return [m for m in MODES if m in wanted]


@dataclass
class TestOptions:
    """How to test; None timeouts mean the default for the accelerator."""

    __test__ = False  # not a pytest class

    user: str = "user"
    password: str = "live"
    timeout: float | None = None  # seconds to the login prompt
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    jobs: int = 1
    screenshot: bool = False
    output: Path | None = None  # default: <iso dir>/test-<iso stem>
    memory_mib: int = 2048
    system_timeout: float = 180.0  # for systemctl is-system-running --wait
    poweroff_timeout: float = 120.0
    screenshot_delay: float = 2.0  # seconds after the menu shows on serial
    direct_kernel: DirectKernel | None = None  # develop checks without a boot loader
    arch: str | None = None  # the ISO's Debian architecture; None: read from the ISO

    @property
    def slowdown(self) -> float:
        """How much slower than the host's own architecture the guest runs (TCG)."""
        if self.arch is None or not qemu.is_foreign(self.arch):
            return 1.0
        return qemu.arch_profile(self.arch).foreign_slowdown

    def login_timeout(self, accel: str) -> float:
        """--timeout as given; the default scaled for a foreign architecture."""
        if self.timeout is not None:
            return self.timeout
        return LOGIN_TIMEOUT[accel] * self.slowdown

    def output_dir(self, iso: Path) -> Path:
        return self.output if self.output is not None else iso.parent / f"test-{iso.stem}"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class ModeResult:
    mode: str
    result: Literal["pass", "fail", "skipped"] = "fail"  # skipped: not applicable
    accel: str = ""
    accel_reason: str = ""
    seconds_to_login: float | None = None
    seconds_to_first_output: float | None = None  # on serial; what the KVM stall guard sees
    seconds_total: float = 0.0
    failures: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    serial_log: str = ""
    screenshot: str | None = None
    notes: list[str] = field(default_factory=list)
    # Seconds to the first sign of each boot phase on serial (see MILESTONES).
    milestones: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------
# The serial shell


@dataclass(frozen=True)
class Marked:
    """The output and exit status of one command run through the serial shell."""

    rc: int
    output: str


def marked_command(token: int, command: str) -> str:
    """The line to type: command framed by markers that only printf can produce.

    The typed text holds 'DL-%s-%s' and the token separately, so an echoed
    command line never matches the begin or end marker.
    """
    return f"printf 'DL-%s-%s\\n' B {token}; {command}; printf 'DL-%s-%s=%s\\n' RC {token} \"$?\"\r"


def marker_regex(token: int) -> re.Pattern[str]:
    return re.compile(rf"DL-B-{token}\r*\n(?P<out>.*?)DL-RC-{token}=(?P<rc>\d+)", re.DOTALL)


def parse_marked(text: str, token: int) -> Marked | None:
    """The framed output for token in serial text, or None if it is not complete yet."""
    match = marker_regex(token).search(text)
    if match is None:
        return None
    return _marked_from_match(match)


def _marked_from_match(match: re.Match[str]) -> Marked:
    out = qemu.clean_serial(match.group("out"))
    lines = [line.rstrip() for line in out.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return Marked(int(match.group("rc")), "\n".join(lines))


class SerialShell:
    """A logged-in shell on the VM's serial console."""

    def __init__(self, vm: VM, slowdown: float = 1.0) -> None:
        self.vm = vm
        self._token = 0
        self.slowdown = slowdown  # every timeout is multiplied by this

    def run(self, command: str, timeout: float = 60.0) -> Marked:
        self._token += 1
        self.vm.send(marked_command(self._token, command))
        timeout *= self.slowdown
        match = self.vm.expect(marker_regex(self._token), timeout, what=f"output of {command!r}")
        return _marked_from_match(match)

    def prepare(self) -> None:
        """No echo, no prompt, no colours or pager: output is only what commands print."""
        self.vm.send(
            "stty -echo cols 250; export PS1= PS2= TERM=dumb SYSTEMD_COLORS=0 "
            "SYSTEMD_PAGER=cat PAGER=cat; unset PROMPT_COMMAND\r"
        )
        self.run("true", timeout=60)


def login(vm: VM, user: str, password: str, timeout: float) -> None:
    """Answer getty's prompts; the login prompt itself was already seen."""
    for _attempt in range(3):
        time.sleep(0.5)  # let getty finish its prompt before we type
        vm.send(f"{user}\r")
        found = vm.expect(
            re.compile(f"{PASSWORD_PROMPT.pattern}|{LOGIN_PROMPT.pattern}", re.MULTILINE),
            timeout,
            what="Password: prompt",
        )
        if PASSWORD_PROMPT.search(found.group(0)):
            break
    else:
        raise ExpectTimeout("getty asked for the login name three times")
    vm.send(f"{password}\r")
    result = vm.expect(AFTER_PASSWORD, timeout, what="shell prompt after login")
    if result.group("bad"):
        raise LoginFailed(f"login as {user!r} failed: Login incorrect")


class LoginFailed(QemuError):
    """getty refused the user name or password."""


# --------------------------------------------------------------------------
# Checks


def check_sudo(shell: SerialShell, password: str) -> Check:
    res = shell.run(f"printf '%s\\n' {shlex.quote(password)} | sudo -S -p '' true")
    return Check("sudo", res.rc == 0, "works" if res.rc == 0 else f"failed: {res.output}")


def root_locked(passwd_status: str) -> bool | None:
    """From `passwd -S root` output: True if locked (L/LK), None if unreadable."""
    for line in passwd_status.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "root":
            return fields[1] in ("L", "LK")
    return None


def check_root_locked(shell: SerialShell) -> Check:
    res = shell.run("sudo -n passwd -S root")
    locked = root_locked(res.output) if res.rc == 0 else None
    if locked is None:
        return Check("root-locked", False, f"cannot read root's status: {res.output}")
    line = next(x for x in res.output.splitlines() if x.startswith("root "))
    return Check("root-locked", locked, line.strip())


def check_firmware(shell: SerialShell, mode: Mode) -> Check:
    res = shell.run("test -d /sys/firmware/efi && echo uefi || echo bios")
    seen = res.output.strip().splitlines()[-1] if res.output.strip() else "?"
    want = "bios" if mode.firmware == "bios" else "uefi"
    return Check("firmware", seen == want, f"booted via {seen}, expected {want}")


def secure_boot_value(od_output: str) -> int | None:
    """The SecureBoot efivar's value: the last byte (the first four are attributes)."""
    numbers = [int(n) for n in od_output.split() if n.isdigit()]
    return numbers[-1] if len(numbers) >= 5 else None


def check_secure_boot(shell: SerialShell, mode: Mode) -> Check:
    res = shell.run(f"od -An -t u1 {SECURE_BOOT_VAR}")
    value = secure_boot_value(res.output) if res.rc == 0 else 0  # no variable: not enabled
    want = 1 if mode.firmware == "secureboot" else 0
    state = {1: "enabled", 0: "disabled"}.get(value if value is not None else -1, "unreadable")
    return Check(
        "secure-boot",
        value == want,
        f"Secure Boot {state}, expected {'enabled' if want else 'disabled'}",
    )


UNIT_NAME = re.compile(
    r"^[\s*\u25cf]*(?P<unit>[\w@:.\\-]+\."
    r"(?:service|socket|mount|automount|swap|target|timer|path|device|scope|slice))\s",
    re.MULTILINE,
)


def failed_units(listing: str) -> list[str]:
    """Unit names from `systemctl --failed --plain --no-legend` (noise lines skipped)."""
    return [m.group("unit") for m in UNIT_NAME.finditer(listing)]


def check_system_running(shell: SerialShell, timeout: float) -> Check:
    res = shell.run(
        f"sudo -n timeout {int(timeout)} systemctl is-system-running --wait", timeout=timeout + 60
    )
    lines = res.output.strip().splitlines()
    state = lines[-1].strip() if lines else "(no answer: still starting?)"
    if state == "running":
        return Check("system-running", True, "running")
    failed = shell.run("sudo -n systemctl --failed --no-legend --plain --no-pager 2>&1")
    units = failed_units(failed.output)
    detail = f"system is {state}"
    if units:
        detail += f"; failed units: {', '.join(units)}"
    if res.rc == 124:
        jobs = shell.run("sudo -n systemctl list-jobs --no-legend --no-pager | head -n 10")
        detail += f"; timed out after {int(timeout)} s; jobs: {jobs.output.strip() or 'none'}"
    return Check("system-running", False, detail)


def not_applicable(mode: Mode, profile: qemu.ArchProfile) -> str | None:
    """Why mode cannot be tested for profile's architecture, or None if it can.

    BIOS needs a BIOS (arm64 is UEFI only). Secure Boot on an architecture
    other than amd64 needs its firmware with enrolled keys installed (AAVMF's
    from qemu-efi-aarch64); on amd64 a missing OVMF stays a failure.
    """
    if mode.firmware == "bios" and not profile.bios:
        return (
            f"{mode.name}: not applicable to {profile.debian} (UEFI only: "
            f"qemu's {profile.machine} machine has no BIOS, the ISO no BIOS boot record)"
        )
    if mode.firmware == "secureboot" and profile is not qemu.AMD64:
        try:
            qemu.select_firmware("secureboot", profile=profile)
        except QemuError as exc:
            return f"{mode.name}: not applicable: {exc}"
    return None


# live-tools asks for the medium at shutdown from a CD and waits for ENTER
# (systemd gives up after 90 s): a person would press it, so the test does.
EJECT_PROMPT = re.compile(r"Please remove the live-medium.*?press ENTER")


def power_off(vm: VM, timeout: float, notes: list[str]) -> bool:
    """Wait for qemu to end after `poweroff`, answering live-tools' eject prompt once."""
    deadline = time.monotonic() + timeout
    answered = False
    while time.monotonic() < deadline:
        if vm.wait_exit(1.0):
            return True
        if not answered and EJECT_PROMPT.search(vm.text, vm.cursor):
            vm.send("\r")
            answered = True
            notes.append("answered live-tools' 'remove the live-medium' prompt at shutdown")
    return False


def run_checks(shell: SerialShell, mode: Mode, options: TestOptions) -> list[Check]:
    checks = [check_sudo(shell, options.password)]
    # Kernel messages on the console would interleave with command output.
    shell.run("sudo -n dmesg -n 1")
    checks.append(check_root_locked(shell))
    checks.append(check_firmware(shell, mode))
    if mode.firmware != "bios":
        checks.append(check_secure_boot(shell, mode))
    checks.append(check_system_running(shell, options.system_timeout * options.slowdown))
    return checks


# --------------------------------------------------------------------------
# One mode


@dataclass
class _Attempt:
    """What one boot of a mode gave; kvm_broke asks the caller to retry under TCG."""

    result: ModeResult
    kvm_broke: str | None = None


def _take_screenshot(
    vm: VM, dest: Path, options: TestOptions, result: ModeResult, silence: float | None
) -> None:
    """Screenshot the boot menu: a few seconds after it shows on serial."""
    limit = min(options.login_timeout(vm.spec.accel), 120.0)
    try:
        seen = vm.expect(MENU_OR_KERNEL, limit, silence, what="boot menu")
    except ExpectTimeout:
        result.notes.append("boot menu not seen on serial; screenshot taken late")
        seen = None
    if seen is not None and seen.group("kernel"):
        result.notes.append("kernel started before a boot menu showed on serial")
    time.sleep(options.screenshot_delay)
    colours = vm.screendump_png(dest)
    if colours < 2:  # a menu still being drawn: one more try
        time.sleep(2.0)
        colours = vm.screendump_png(dest)
    result.screenshot = str(dest)
    if colours < 2:
        result.failures.append(f"screenshot {dest.name} is blank (one colour)")


def _boot_once(
    iso: Path,
    mode: Mode,
    decision: AccelDecision,
    options: TestOptions,
    out_dir: Path,
    log: BuildLog,
    smp: int,
    can_fall_back: bool,
) -> _Attempt:
    result = ModeResult(mode.name, accel=decision.accel, accel_reason=decision.reason)
    serial_log = out_dir / f"serial-{mode.name}.log"
    result.serial_log = str(serial_log)
    watch_kvm = decision.accel == "kvm" and can_fall_back
    silence = KVM_SILENCE_LIMIT if watch_kvm else None
    start = time.monotonic()
    with qemu.vm_workdir() as work:
        spec = qemu.prepare_spec(
            iso,
            mode.firmware,
            mode.media,
            decision.accel,
            work,
            memory_mib=options.memory_mib,
            smp=smp,
            name=f"deblive-{mode.name}",
            direct_kernel=options.direct_kernel,
            arch=options.arch or "amd64",
        )
        with VM(spec, serial_log, work) as vm:
            log.debug(f"{mode.name}: $ {shlex.join(vm.argv)}")
            logged_in = False
            try:
                if options.screenshot:
                    shot = out_dir / f"screen-{mode.name}.png"
                    _take_screenshot(vm, shot, options, result, silence)
                vm.expect(
                    LOGIN_PROMPT, options.login_timeout(decision.accel), silence, "login prompt"
                )
                result.seconds_to_login = round(vm.elapsed, 1)
                first = vm.first_output_after
                result.seconds_to_first_output = round(first, 1) if first is not None else None
                result.milestones = vm.milestones(MILESTONES)
                log.info(f"{mode.name}: login prompt after {format_seconds(vm.elapsed)}")
                login(vm, options.user, options.password, 120.0 * options.slowdown)
                logged_in = True
                shell = SerialShell(vm, options.slowdown)
                shell.prepare()
                result.checks = run_checks(shell, mode, options)
                result.failures += [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
                vm.send("sudo -n poweroff\r")
                poweroff_timeout = options.poweroff_timeout * options.slowdown
                if not power_off(vm, poweroff_timeout, result.notes):
                    result.failures.append(
                        f"poweroff: qemu still running after {poweroff_timeout:.0f} s"
                    )
            except (KvmFailure, VMExited) as exc:
                if watch_kvm and not logged_in:
                    result.seconds_total = round(time.monotonic() - start, 1)
                    return _Attempt(result, kvm_broke=str(exc))
                result.failures.append(str(exc))
            except QemuError as exc:
                result.failures.append(str(exc))
            finally:
                if result.failures:
                    _show_tail(log, mode.name, vm.tail(FAILURE_TAIL), serial_log)
                vm.quit()
    result.seconds_total = round(time.monotonic() - start, 1)
    result.result = "fail" if result.failures else "pass"
    return _Attempt(result)


def _show_tail(log: BuildLog, mode: str, lines: Sequence[str], path: Path) -> None:
    log.error(f"{mode}: failed; last {len(lines)} serial lines (full log: {path}):")
    for line in lines:
        log.debug(f"| {line}")
        if not log.verbose:
            log.console.print(f"  | {line}", markup=False, highlight=False)


def run_mode(
    iso: Path,
    mode: Mode,
    selector: AccelSelector,
    options: TestOptions,
    out_dir: Path,
    log: BuildLog,
    smp: int,
) -> ModeResult:
    """Boot one mode; a KVM that breaks (though the probe passed) is retried under TCG."""
    decision = selector.get()
    log.info(f"{mode.name}: booting with {decision.accel}")
    attempt = _boot_once(iso, mode, decision, options, out_dir, log, smp, selector.can_fall_back)
    if attempt.kvm_broke is None:
        return _logged(log, attempt.result)
    decision = selector.demote(f"KVM failed in {mode.name}: {attempt.kvm_broke}")
    log.warn(f"{mode.name}: {decision.reason}; falling back to TCG for the rest of the run")
    retry = _boot_once(iso, mode, decision, options, out_dir, log, smp, False).result
    retry.notes.insert(0, f"KVM attempt abandoned after {attempt.result.seconds_total} s")
    return _logged(log, retry)


def _logged(log: BuildLog, result: ModeResult) -> ModeResult:
    """One line per mode with its verdict; the checks' details go to the log file."""
    for check in result.checks:
        log.debug(
            f"{result.mode}: check {check.name}: {'ok' if check.ok else 'FAILED'}: {check.detail}"
        )
    word = "passed" if result.result == "pass" else "FAILED"
    log.info(f"{result.mode}: {word} in {format_seconds(result.seconds_total)} ({result.accel})")
    return result


# --------------------------------------------------------------------------
# The run


def run_tests(
    iso: Path, modes: Sequence[str], options: TestOptions, log: BuildLog
) -> list[ModeResult]:
    """Boot iso in each mode and check it; results in the order of modes.

    The architecture is options.arch or read from the ISO. Modes it does not
    have are skipped (result "skipped", the reason in notes); none left is an
    input error. Writes the serial logs, screenshots and results.json into
    the output dir.
    """
    iso = iso.resolve()
    if not iso.is_file():
        raise BadInput(f"ISO not found: {iso}")
    requested = [mode_from_name(m) for m in modes]
    if not requested:
        raise BadInput("no modes to test")
    arch = options.arch or qemu.iso_architecture(iso)
    try:
        profile = qemu.arch_profile(arch)
    except QemuError as exc:
        raise BadInput(f"{iso.name}: {exc}") from None
    options = dataclasses.replace(options, arch=arch)
    skipped: dict[str, str] = {}
    for mode in requested:
        reason = not_applicable(mode, profile)
        if reason is not None:
            skipped[mode.name] = reason
    chosen = [m for m in requested if m.name not in skipped]
    if not chosen:
        raise BadInput(f"no mode to test for this {arch} ISO: " + "; ".join(skipped.values()))
    if shutil.which(profile.binary) is None:
        raise DebliveError(f"{profile.binary} not found: install {profile.package}")
    out_dir = options.output_dir(iso)
    out_dir.mkdir(parents=True, exist_ok=True)
    foreign = arch if qemu.is_foreign(arch) else None
    log.info(f"architecture: {arch} ({profile.binary}, machine {profile.machine})")
    for reason in skipped.values():
        log.warn(f"skipped {reason}")
    selector = AccelSelector(options.accel, foreign=foreign)
    decision = selector.get()
    log.info(f"accelerator: {decision.accel} ({decision.reason})")
    if options.slowdown != 1.0:
        log.info(f"timeouts scaled by {options.slowdown:g} for the foreign architecture")
    jobs = max(1, min(options.jobs, len(chosen)))
    smp = 2 if jobs == 1 else 1
    started = time.monotonic()
    ran = iter(_run_all(iso, chosen, selector, options, out_dir, log, smp, jobs))
    results = [
        ModeResult(m.name, result="skipped", notes=[skipped[m.name]])
        if m.name in skipped
        else next(ran)
        for m in requested
    ]
    write_results(out_dir / "results.json", iso, selector, results, time.monotonic() - started)
    return results


def _run_all(
    iso: Path,
    chosen: Sequence[Mode],
    selector: AccelSelector,
    options: TestOptions,
    out_dir: Path,
    log: BuildLog,
    smp: int,
    jobs: int,
) -> list[ModeResult]:
    def one(mode: Mode) -> ModeResult:
        try:
            return run_mode(iso, mode, selector, options, out_dir, log, smp)
        except DebliveError as exc:  # firmware missing and the like
            log.error(f"{mode.name}: {exc}")
            return ModeResult(mode.name, failures=[str(exc)])

    if jobs == 1:
        return [one(m) for m in chosen]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    try:
        return list(pool.map(one, chosen))
    except BaseException:
        # Ctrl-C: the workers would wait for their boots; end the VMs instead.
        pool.shutdown(wait=False, cancel_futures=True)
        qemu.kill_all_vms()
        raise
    finally:
        pool.shutdown(wait=True)


def write_results(
    path: Path,
    iso: Path,
    selector: AccelSelector,
    results: Sequence[ModeResult],
    seconds: float,
) -> None:
    decision = selector.get()
    data = {
        "iso": str(iso),
        "passed": all(r.result != "fail" for r in results),
        "accel": {
            "requested": selector.requested,
            "final": decision.accel,
            "reason": decision.reason,
            "fell_back": decision.fell_back,
            "probe_seconds": decision.probe_seconds,
        },
        "seconds": round(seconds, 1),
        "modes": [r.to_json() for r in results],
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def results_table(results: Sequence[ModeResult]) -> Table:
    table = Table(title="boot tests")
    for column in ("mode", "result", "accel", "to login", "total", "failures"):
        table.add_column(column)
    for r in results:
        colour = {"pass": "green", "skipped": "yellow"}.get(r.result, "red")
        table.add_row(
            r.mode,
            f"[{colour}]{r.result}[/]",
            r.accel,
            format_seconds(r.seconds_to_login) if r.seconds_to_login is not None else "-",
            format_seconds(r.seconds_total),
            "; ".join(r.failures or (r.notes if r.result == "skipped" else []))[:200],
        )
    return table


# --------------------------------------------------------------------------
# CLI


def register(subparsers: Any) -> None:
    """Add `test` to the deblive CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "test",
        help="boot an ISO in qemu (BIOS, UEFI, Secure Boot; CD and USB) and check it",
        description="Boot IMAGE.iso headless in qemu in each mode, log in on the serial "
        "console and check sudo, the locked root, the firmware mode, Secure Boot and "
        "systemd's state. Exit status: 0 all passed, 1 a failure, 2 bad input.",
    )
    parser.add_argument("iso", type=Path, metavar="IMAGE.iso")
    parser.add_argument(
        "--mode",
        action="append",
        metavar="MODE",
        help=f"mode to test (repeatable or comma list; default all): {', '.join(MODES)}",
    )
    parser.add_argument("--user", default="user", help="live user (default: user)")
    parser.add_argument("--password", default="live", help="its password (default: live)")
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="seconds to the login prompt (default: 300 with TCG, 120 with KVM; "
        "times 4 for an arm64 ISO on an x86 host)",
    )
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="modes in parallel")
    parser.add_argument(
        "--screenshot", action="store_true", help="save a PNG of each boot menu screen"
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="serial logs, screenshots, results.json (default: <iso dir>/test-<iso name>)",
    )
    parser.add_argument("--memory", type=int, default=2048, metavar="MiB", help="guest RAM")
    parser.set_defaults(func=cli_test)


def options_from_args(args: argparse.Namespace) -> TestOptions:
    if args.jobs < 1:
        raise BadInput("--jobs must be at least 1")
    if args.timeout is not None and args.timeout <= 0:
        raise BadInput("--timeout must be positive")
    return TestOptions(
        user=args.user,
        password=args.password,
        timeout=args.timeout,
        accel=args.accel,
        jobs=args.jobs,
        screenshot=args.screenshot,
        output=args.output,
        memory_mib=args.memory,
    )


def cli_test(args: argparse.Namespace, console: Console | None = None) -> int:
    """The `test` subcommand: 0 all passed, 1 any failure, 2 bad input, 130 Ctrl-C."""
    log = BuildLog(verbose=bool(getattr(args, "verbose", False)))
    try:
        modes = parse_modes(args.mode)
        options = options_from_args(args)
        if not args.iso.is_file():
            raise BadInput(f"ISO not found: {args.iso}")
        log.open(options.output_dir(args.iso.resolve()) / "test.log")
        results = run_tests(args.iso, modes, options, log)
    except DebliveError as exc:
        log.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted; the VMs were stopped")
        return 130
    finally:
        log.close()
    (console or Console()).print(results_table(results))
    return 0 if all(r.result != "fail" for r in results) else 1
