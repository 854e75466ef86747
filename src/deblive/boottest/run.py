"""`deblive test IMAGE.iso`: boot an ISO in qemu in several firmware modes and check it.

Each mode boots headless, waits for the login prompt on the serial console,
logs in as the live user and runs its checks through the serial shell
(boottest.checks). Then it powers off and waits for qemu to end, so a hang
at shutdown is caught too. The architecture and the live user come from the
build's boot-entries.json beside the ISO (or --arch); a foreign architecture
runs under TCG with its timeouts scaled.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.table import Table
from rich.text import Text

from deblive.boottest import checks as checks_mod
from deblive.boottest import netboot
from deblive.boottest.medium import BootEntries, EntriesError, entries_path, read_entries
from deblive.boottest.modes import BadInput, BootMode, check_target
from deblive.boottest.shell import LOGIN_PROMPT, SerialShell, login
from deblive.core.errors import DebliveError
from deblive.core.log import BuildLog, format_seconds
from deblive.core.runner import Runner
from deblive.host.hostapt import host_architecture
from deblive.model.arch import Arch
from deblive.vm import screen
from deblive.vm.accel import AccelDecision, AccelRequest, AccelSelector, with_kvm_fallback
from deblive.vm.command import DirectKernel, Media, MediaKind, VMSpec
from deblive.vm.errors import ExpectTimeout, KvmFailure, QemuError, VMExited
from deblive.vm.firmware import FirmwareKind, select_firmware
from deblive.vm.machine import Machine, vm_workdir

LOGIN_TIMEOUT = {"kvm": 120.0, "tcg": 300.0}
FAILURE_TAIL = 30
# First words of each boot phase on the serial console. The kernel, initramfs
# and systemd lines show only without `quiet` (e.g. boot.cmdline
# "loglevel=6 systemd.show_status=1"); the boot loader and login always show.
MILESTONES = {
    "firmware": re.compile(r"BdsDxe|SeaBIOS|iPXE|Booting from|SLOF"),
    "boot-loader": re.compile(r"ISOLINUX|GNU GRUB|Welcome to GRUB"),
    "kernel": re.compile(r"Linux version \d|EFI stub:"),
    "initramfs": re.compile(r"Run /init as init process|Loading, please wait"),
    "live-boot": re.compile(r"live-boot|Begin: Running /scripts/live"),
    "userspace": re.compile(r"Welcome to .*Debian|systemd\[1\]: |run-init"),
    "login": re.compile(r"login: *$", re.MULTILINE),
}
# The boot loaders' menus on serial (grub; ISOLINUX with SERIAL), or the
# kernel already starting (then the menu was missed).
MENU_OR_KERNEL = re.compile(
    r"(?P<menu>GNU GRUB|automatically in|Automatic boot in|Press \[Tab\])"
    r"|(?P<kernel>Linux version \d|Run /init|Loading, please wait)"
)
# live-tools asks for the medium at shutdown from a CD and waits for ENTER
# (systemd gives up after 90 s): a person would press it, so the test does.
EJECT_PROMPT = re.compile(r"Please remove the live-medium.*?press ENTER")
# live-boot's askpass for a LUKS persistence volume (persistence-encryption=luks).
UNLOCK_PROMPT = re.compile(r"Please unlock disk \S+: ")


@dataclass(frozen=True)
class TestOptions:
    """How to test; None timeouts mean the default for the accelerator."""

    __test__ = False  # not a pytest class

    password: str = "live"
    passphrase: str | None = None  # typed at live-boot's LUKS prompt, if it asks
    user: str | None = None  # default: the build's live user (boot-entries.json), else "user"
    timeout: float | None = None  # seconds to the login prompt
    accel: AccelRequest = AccelRequest.AUTO
    jobs: int = 1
    screenshot: bool = False
    output: Path | None = None  # default: <iso dir>/test-<iso stem>
    memory_mib: int = 2048
    system_timeout: float = 180.0  # for systemctl is-system-running --wait
    poweroff_timeout: float = 120.0
    screenshot_delay: float = 2.0  # seconds after the menu shows on serial
    direct_kernel: DirectKernel | None = None  # develop checks without a boot loader
    writable_media: bool = False  # a USB stick that keeps what the guest writes
    arch: Arch | None = None  # None: from boot-entries.json
    expect: tuple[str, ...] = ()  # commands that must exit 0 in the booted system (live user)

    def slowdown(self, arch: Arch) -> float:
        """How much slower than the host's own architecture the guest runs (TCG)."""
        if not arch.is_foreign(host_architecture()) or arch.qemu is None:
            return 1.0
        return arch.qemu.foreign_slowdown

    def login_timeout(self, accel: str, arch: Arch) -> float:
        """--timeout as given; the default scaled for a foreign architecture."""
        if self.timeout is not None:
            return self.timeout
        return LOGIN_TIMEOUT[accel] * self.slowdown(arch)

    def output_dir(self, iso: Path) -> Path:
        return self.output if self.output is not None else iso.parent / f"test-{iso.stem}"


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
    checks: list[checks_mod.Check] = field(default_factory=list)
    serial_log: str = ""
    screenshot: str | None = None
    notes: list[str] = field(default_factory=list)
    # Seconds to the first sign of each boot phase on serial (see MILESTONES).
    milestones: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """One ISO (or netboot tree) to boot, with what the build said about it."""

    iso: Path
    entries: BootEntries
    out_dir: Path
    served: netboot.ServedTree | None = None  # a netboot tree's HTTP server, while it runs


def boot_vm_spec(iso: Path, firmware_kind: FirmwareKind, media: MediaKind | None,
                 decision: AccelDecision, arch: Arch, workdir: Path, writable: bool = False,
                 **extra: Any) -> VMSpec:
    """A test VM for iso: firmware chosen, its varstore copied into workdir, QMP there;
    media None: no medium (a network boot)."""
    assert arch.qemu is not None
    firmware = select_firmware(firmware_kind, arch.qemu)
    vars_file = None
    if firmware is not None and firmware.vars_template is not None:
        vars_file = workdir / f"{arch.qemu.firmware_dir.name}_VARS.fd"
        shutil.copyfile(firmware.vars_template, vars_file)
    return VMSpec(arch=arch, accel=decision.accel, firmware=firmware, vars_file=vars_file,
                  media=Media(iso, media, writable) if media is not None else None,
                  qmp_socket=workdir / "qmp.sock", **extra)


def power_off(vm: Machine, timeout: float, notes: list[str]) -> bool:
    """Wait for qemu to end after a power-off, answering live-tools' eject prompt once."""
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


def _take_screenshot(vm: Machine, dest: Path, options: TestOptions, result: ModeResult,
                     silence: float | None, target: Target) -> None:
    """Screenshot the boot menu: a moment after it shows on serial, within its timeout
    (a menu of one second is gone after the usual two)."""
    arch = target.entries.architecture
    limit = min(options.login_timeout(vm.spec.accel, arch), 120.0)
    try:
        seen = vm.expect(MENU_OR_KERNEL, limit, silence, what="boot menu")
    except ExpectTimeout:
        result.notes.append("boot menu not seen on serial; screenshot taken late")
        seen = None
    if seen is not None and seen.group("kernel"):
        result.notes.append("kernel started before a boot menu showed on serial")
    menu = target.entries.menu
    delay = options.screenshot_delay
    if menu is not None and menu.timeout > 0:
        delay = min(delay, menu.timeout / 2)
    time.sleep(delay)
    drawn = vm.screendump_png(dest)
    if drawn < screen.BLANK_SHARE:  # a menu still being drawn: one more try
        time.sleep(min(2.0, delay))
        drawn = vm.screendump_png(dest)
    result.screenshot = str(dest)
    if drawn < screen.BLANK_SHARE:
        result.failures.append(f"screenshot {dest.name} is blank ({drawn:.2%} of it drawn)")


def _logged_in(vm: Machine, target: Target, mode: BootMode, options: TestOptions,
               result: ModeResult, log: BuildLog, fetches_before: int = 0) -> None:
    """Log in, run the checks, power off."""
    arch = target.entries.architecture
    slowdown = options.slowdown(arch)
    shell = SerialShell(vm, slowdown)
    shell.prepare()
    result.checks, notes = checks_mod.run_checks(
        shell, mode, target.entries, options.password, options.system_timeout * slowdown,
        options.expect)
    if target.served is not None:
        result.checks.append(target.served.check(fetches_before))
    result.notes += notes
    result.failures += [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
    if shell.root:
        vm.send("sudo -n poweroff\r")
    else:
        vm.qmp("system_powerdown")  # the ACPI power button
    timeout = options.poweroff_timeout * slowdown
    if not power_off(vm, timeout, result.notes):
        result.failures.append(f"poweroff: qemu still running after {timeout:.0f} s")


def _boot_once(target: Target, mode: BootMode, decision: AccelDecision, silence: float | None,
               options: TestOptions, runner: Runner, smp: int) -> ModeResult:
    """One boot of a mode; KvmFailure when KVM broke before the login (to fall back)."""
    log, arch = runner.log, target.entries.architecture
    result = ModeResult(str(mode), accel=str(decision.accel), accel_reason=decision.reason)
    serial_log = target.out_dir / f"serial-{mode}.log"
    serial_log.unlink(missing_ok=True)
    result.serial_log = str(serial_log)
    start = time.monotonic()
    fetches_before = target.served.fetches() if target.served is not None else 0
    with vm_workdir() as work:
        network = netboot.pxe_network(target.iso, target.entries, mode) if mode.network else None
        # live-boot's fetch= keeps the squashfs in RAM, beside the running system.
        memory = options.memory_mib + (target.served.squashfs_bytes >> 20 if target.served else 0)
        spec = boot_vm_spec(target.iso, mode.firmware, None if mode.network else mode.media,
                            decision, arch, work, memory_mib=memory, smp=smp,
                            name=f"deblive-{mode}", writable=options.writable_media,
                            direct_kernel=options.direct_kernel, network=network)
        with Machine(spec, runner, serial_log, work) as vm:
            logged_in = False
            try:
                if options.screenshot:
                    _take_screenshot(vm, target.out_dir / f"screen-{mode}.png", options, result,
                                     silence, target)
                if options.passphrase is not None:
                    vm.expect(UNLOCK_PROMPT, options.login_timeout(decision.accel, arch),
                              silence, "live-boot's LUKS passphrase prompt")
                    vm.send(options.passphrase + "\r")  # askpass does not echo it
                    result.notes.append("typed the LUKS passphrase at live-boot's prompt")
                vm.expect(LOGIN_PROMPT, options.login_timeout(decision.accel, arch), silence,
                          "login prompt")
                result.seconds_to_login = round(vm.elapsed, 1)
                first = vm.first_output_after
                result.seconds_to_first_output = round(first, 1) if first is not None else None
                result.milestones = vm.milestones(MILESTONES)
                log.info(f"{mode}: login prompt after {format_seconds(vm.elapsed)}")
                login(vm, options.user or target.entries.user, options.password,
                      120.0 * options.slowdown(arch))
                logged_in = True
                _logged_in(vm, target, mode, options, result, log, fetches_before)
            except (KvmFailure, VMExited) as exc:
                if silence is not None and not logged_in:
                    raise KvmFailure(f"{exc} (after {vm.elapsed:.0f} s)") from None
                result.failures.append(str(exc))
            except QemuError as exc:
                result.failures.append(str(exc))
            finally:
                if result.failures:
                    _show_tail(log, str(mode), vm.tail(FAILURE_TAIL), serial_log)
                vm.quit()
    result.seconds_total = round(time.monotonic() - start, 1)
    result.result = "fail" if result.failures else "pass"
    return result


def _show_tail(log: BuildLog, mode: str, lines: Sequence[str], path: Path) -> None:
    log.error(f"{mode}: failed; last {len(lines)} serial lines (full log: {path}):")
    for line in lines:
        log.debug(f"| {line}")
        if not log.verbose:
            log.console.print(Text(f"  | {line}"), highlight=False)


def run_mode(target: Target, mode: BootMode, selector: AccelSelector, options: TestOptions,
             runner: Runner, smp: int) -> ModeResult:
    """Boot one mode; a KVM that breaks (though the probe passed) is retried under TCG."""
    log = runner.log
    log.info(f"{mode}: booting with {selector.get().accel}")
    abandoned: list[str] = []
    result = with_kvm_fallback(
        selector,
        lambda decision, silence: _boot_once(target, mode, decision, silence, options, runner,
                                             smp),
        log, str(mode), on_abandon=lambda exc: abandoned.append(f"KVM attempt abandoned: {exc}"),
    )
    result.notes[:0] = abandoned
    for check in result.checks:
        log.debug(f"{mode}: check {check.name}: {'ok' if check.ok else 'FAILED'}: {check.detail}")
    word = "passed" if result.result == "pass" else "FAILED"
    log.info(f"{mode}: {word} in {format_seconds(result.seconds_total)} ({result.accel})")
    return result


def image_arch(iso: Path, options: TestOptions) -> Arch | None:
    """The architecture of an image file (its boot entries, else --arch), for its default
    modes; None when neither says (target_for then tells why)."""
    if options.arch is not None:
        return options.arch
    try:
        entries = read_entries(iso.resolve()) if iso.is_file() else None
    except EntriesError:
        return None
    return entries.architecture if entries is not None else None


def target_for(iso: Path, options: TestOptions) -> Target:
    """The ISO (or netboot directory) with its boot entries (from the build, or --arch);
    BadInput without either."""
    iso = iso.resolve()
    if not iso.is_file() and not (iso.is_dir() and entries_path(iso).is_file()):
        raise BadInput(f"ISO not found: {iso}" if not iso.is_dir() else
                       f"{iso} is not a netboot tree: no {entries_path(iso).name} in it")
    try:
        entries = read_entries(iso)
    except EntriesError as exc:
        raise BadInput(str(exc)) from None
    if entries is None:
        if options.arch is None:
            raise BadInput(f"{iso.name}: no {entries_path(iso)} beside it (deblive build "
                           "writes one): give --arch")
        entries = BootEntries.defaults(options.arch, options.user or "user")
    elif options.arch is not None and options.arch is not entries.architecture:
        raise BadInput(f"{iso.name} is an {entries.architecture} image, not {options.arch}")
    return Target(iso, entries, options.output_dir(iso))


def run_tests(iso: Path, modes: Sequence[BootMode], options: TestOptions,
              log: BuildLog) -> list[ModeResult]:
    """Boot iso in each mode and check it; results in the order of modes.

    Modes the architecture does not have are skipped (result "skipped", the
    reason in notes); none left is an input error. Writes the serial logs,
    screenshots and results.json into the output dir.
    """
    if not modes:
        raise BadInput("no modes to test")
    target = target_for(iso, options)
    check_target(modes, network=target.iso.is_dir())
    arch = target.entries.architecture
    skipped = {m: reason for m in modes if (reason := m.not_applicable(arch)) is not None}
    chosen = [m for m in modes if m not in skipped]
    if not chosen:
        raise BadInput(f"no mode to test for this {arch} ISO: " + "; ".join(skipped.values()))
    assert arch.qemu is not None
    if shutil.which(arch.qemu.binary) is None:
        raise DebliveError(f"{arch.qemu.binary} not found: install {arch.qemu.package}")
    target.out_dir.mkdir(parents=True, exist_ok=True)
    host = host_architecture()
    log.info(f"architecture: {arch} ({arch.qemu.binary}, machine {arch.qemu.machine})")
    for reason in skipped.values():
        log.warn(f"skipped {reason}")
    runner = Runner(log)
    selector = AccelSelector(options.accel, runner, host,
                             foreign=arch if arch.is_foreign(host) else None)
    decision = selector.get()
    log.info(f"accelerator: {decision.accel} ({decision.reason})")
    if options.slowdown(arch) != 1.0:
        log.info(f"timeouts scaled by {options.slowdown(arch):g} for the foreign architecture")
    jobs = max(1, min(options.jobs, len(chosen)))
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if any(m.network for m in chosen):
            served = stack.enter_context(netboot.serving(target.iso, target.entries))
            target = dataclasses.replace(target, served=served)
            log.info(f"serving {target.iso} on 127.0.0.1:{served.server.port} "
                     f"(the guest's {target.entries.netboot_url})")
        ran = iter(_run_all(target, chosen, selector, options, runner, jobs))
    results = [ModeResult(str(m), result="skipped", notes=[skipped[m]]) if m in skipped
               else next(ran) for m in modes]
    write_results(target.out_dir / "results.json", target.iso, selector, results,
                  time.monotonic() - started)
    return results


def _run_all(target: Target, chosen: Sequence[BootMode], selector: AccelSelector,
             options: TestOptions, runner: Runner, jobs: int) -> list[ModeResult]:
    smp = 2 if jobs == 1 else 1

    def one(mode: BootMode) -> ModeResult:
        try:
            return run_mode(target, mode, selector, options, runner, smp)
        except DebliveError as exc:  # firmware missing and the like
            runner.log.error(f"{mode}: {exc}")
            return ModeResult(str(mode), failures=[str(exc)])

    if jobs == 1:
        return [one(m) for m in chosen]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    try:
        return list(pool.map(one, chosen))
    except BaseException:
        # Ctrl-C: the workers would wait for their boots; end the VMs instead.
        pool.shutdown(wait=False, cancel_futures=True)
        runner.terminate_children(grace=1.0)
        raise
    finally:
        pool.shutdown(wait=True)


def write_results(path: Path, iso: Path, selector: AccelSelector,
                  results: Sequence[ModeResult], seconds: float) -> None:
    decision = selector.get()
    data = {
        "iso": str(iso),
        "passed": all(r.result != "fail" for r in results),
        "accel": {
            "requested": str(selector.requested),
            "final": str(decision.accel),
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
            r.mode, Text(r.result, style=colour), r.accel,
            format_seconds(r.seconds_to_login) if r.seconds_to_login is not None else "-",
            format_seconds(r.seconds_total),
            # Failures quote the guest's console: plain text, never markup.
            Text("; ".join(r.failures or (r.notes if r.result == "skipped" else []))[:200]),
        )
    return table
