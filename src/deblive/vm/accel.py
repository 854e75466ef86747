"""KVM or TCG: the one accelerator choice and the one KVM-to-TCG fallback.

This machine's /dev/kvm opens but is a broken nested virtualization that
dies in firmware, so "auto" first runs a sub-second probe (OVMF under KVM
must print its boot manager lines on serial) and falls back to TCG, and the
verdict is shared by every VM of the run. A KVM that passes the probe can
still break later ("KVM internal error", or a guest silent from its start):
with_kvm_fallback() runs an attempt under KVM, watches for exactly that, and
runs it again under TCG, saying so. A guest of another architecture than the
host's always runs under TCG: there is nothing to probe.
"""

from __future__ import annotations

import enum
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.model.arch import Arch
from deblive.vm.command import Accel, VMSpec
from deblive.vm.errors import ExpectTimeout, KvmFailure, QemuError
from deblive.vm.firmware import select_firmware
from deblive.vm.machine import KVM_ERROR_TEXT, Machine, vm_workdir

KVM_DEVICE = Path("/dev/kvm")
# A guest under KVM that printed nothing on serial by now is stalled: TCG gets
# OVMF's first line out after ~3 s, ISOLINUX's banner and a kernel sooner.
KVM_SILENCE = 20.0
PROBE_OK = re.compile(r"BdsDxe|Shell>|UEFI Interactive Shell")
T = TypeVar("T")


class AccelRequest(enum.StrEnum):
    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


class ProbeOutcome(enum.Enum):
    """What a short KVM boot showed."""

    OK = "ok"
    KVM_ERROR = "KVM internal error"
    EXITED = "qemu exited"
    NO_OUTPUT = "no serial output"


@dataclass(frozen=True)
class ProbeResult:
    outcome: ProbeOutcome
    detail: str = ""  # qemu's first stderr line that matters


@dataclass(frozen=True)
class AccelDecision:
    accel: Accel
    reason: str
    fell_back: bool = False  # auto wanted KVM but had to use TCG
    probe_seconds: float = 0.0


def kvm_device_usable(device: Path = KVM_DEVICE) -> bool:
    """True when /dev/kvm can be opened read-write (exists, permissions)."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def decide_accel(
    requested: AccelRequest, kvm_usable: bool, probe: Callable[[], ProbeResult],
    clock: Callable[[], float] = time.monotonic, foreign: Arch | None = None,
) -> AccelDecision:
    """Pick kvm or tcg. probe is only called for auto with a usable /dev/kvm.

    An explicit --accel kvm is obeyed without a probe (the user may want to see
    KVM fail), but a missing /dev/kvm is an input error then. foreign names a
    guest architecture that is not the host's: always TCG, never a probe.
    """
    if foreign is not None:
        if requested is AccelRequest.KVM:
            raise QemuError(f"--accel kvm, but KVM cannot run {foreign} on this host")
        return AccelDecision(Accel.TCG, f"{requested}: {foreign} guest on another host "
                             "architecture is always TCG (no KVM probe)")
    if requested is AccelRequest.TCG:
        return AccelDecision(Accel.TCG, "requested")
    if requested is AccelRequest.KVM:
        if not kvm_usable:
            raise QemuError(f"--accel kvm, but {KVM_DEVICE} cannot be opened")
        return AccelDecision(Accel.KVM, "requested")
    if not kvm_usable:
        return AccelDecision(Accel.TCG, f"{KVM_DEVICE} not usable", fell_back=True)
    start = clock()
    result = probe()
    seconds = round(clock() - start, 2)
    if result.outcome is ProbeOutcome.OK:
        return AccelDecision(Accel.KVM, f"KVM probe passed in {seconds} s",
                             probe_seconds=seconds)
    reason = f"KVM probe failed in {seconds} s: {result.outcome.value}"
    if result.detail:
        reason += f" ({result.detail})"
    return AccelDecision(Accel.TCG, reason, fell_back=True, probe_seconds=seconds)


def probe_detail(stderr: str) -> str:
    """The line of qemu's stderr that explains a failed probe (warnings skipped)."""
    for line in stderr.splitlines():
        line = line.strip()
        if line and "warning:" not in line:
            return re.sub(r"^qemu-system-\w+: ", "", line)[:160]
    return ""


def probe_kvm(runner: Runner, host: Arch, timeout: float = 10.0) -> ProbeResult:
    """Boot the host architecture's UEFI firmware alone under KVM and wait for its
    boot manager on serial.

    OVMF exercises what broke KVM here (real mode, SMM-less flash, FPU setup):
    on this host KVM reports an internal error within 0.1 s; under TCG the
    "BdsDxe:" line comes after about 3.7 s, so a working KVM prints it well
    within the timeout.
    """
    qemu = host.qemu
    if qemu is None:
        return ProbeResult(ProbeOutcome.EXITED, f"no qemu profile for {host}")
    try:
        firmware = select_firmware("uefi", qemu)
    except QemuError as exc:
        return ProbeResult(ProbeOutcome.EXITED, str(exc))
    assert firmware is not None
    with vm_workdir("deblive-kvmprobe-") as work:
        vars_file = None
        if firmware.vars_template is not None:
            vars_file = work / "vars.fd"
            shutil.copyfile(firmware.vars_template, vars_file)
        spec = VMSpec(arch=host, accel=Accel.KVM, name="deblive-kvmprobe", memory_mib=256,
                      firmware=firmware, vars_file=vars_file, display=False)
        with Machine(spec, runner, work / "serial.log", work) as vm:
            try:
                vm.expect(PROBE_OK, timeout, what="the firmware's boot manager")
                return ProbeResult(ProbeOutcome.OK)
            except KvmFailure:
                outcome = ProbeOutcome.KVM_ERROR
            except ExpectTimeout:
                outcome = ProbeOutcome.NO_OUTPUT
            except QemuError:
                outcome = (ProbeOutcome.KVM_ERROR if KVM_ERROR_TEXT in vm.stderr_text
                           else ProbeOutcome.EXITED)
            return ProbeResult(outcome, probe_detail(vm.stderr_text))


class AccelSelector:
    """The accelerator verdict for one run: probed once, shared.

    VMs running in parallel call get(); the first caller probes, the others
    wait for it. demote() switches the rest of the run to TCG when a VM saw
    KVM fail although the probe had passed.
    """

    def __init__(
        self, requested: AccelRequest, runner: Runner, host: Arch,
        foreign: Arch | None = None,
        kvm_usable: Callable[[], bool] = kvm_device_usable,
        probe: Callable[[], ProbeResult] | None = None,
    ) -> None:
        self.requested = requested
        self.foreign = foreign  # a guest architecture KVM cannot run here
        self._kvm_usable = kvm_usable
        self._probe = probe or (lambda: probe_kvm(runner, host))
        self._decision: AccelDecision | None = None
        self._lock = threading.Lock()

    def get(self) -> AccelDecision:
        with self._lock:
            if self._decision is None:
                # A foreign guest: /dev/kvm is not even looked at, KVM cannot help.
                usable = False if self.foreign is not None else self._kvm_usable()
                self._decision = decide_accel(self.requested, usable, self._probe,
                                              foreign=self.foreign)
            return self._decision

    def demote(self, reason: str) -> AccelDecision:
        """Use TCG from now on (only for auto; an explicit kvm stays kvm)."""
        with self._lock:
            if self.requested is AccelRequest.AUTO:
                self._decision = AccelDecision(Accel.TCG, reason, fell_back=True)
            assert self._decision is not None
            return self._decision

    @property
    def can_fall_back(self) -> bool:
        return self.requested is AccelRequest.AUTO and self.foreign is None


def with_kvm_fallback(
    selector: AccelSelector, attempt: Callable[[AccelDecision, float | None], T],
    log: BuildLog, what: str, on_abandon: Callable[[KvmFailure], None] | None = None,
) -> T:
    """Run attempt(decision, silence_limit); if KVM breaks in it, once more under TCG.

    The attempt gets a silence limit only when a broken KVM can be fallen back
    from, and raises KvmFailure when it sees KVM break (the VM's check_alive).
    """
    decision = selector.get()
    watch = decision.accel is Accel.KVM and selector.can_fall_back
    try:
        return attempt(decision, KVM_SILENCE if watch else None)
    except KvmFailure as exc:
        if not watch:
            raise
        if on_abandon is not None:
            on_abandon(exc)
        decision = selector.demote(f"KVM failed in {what}: {exc}")
        log.warn(f"{what}: {decision.reason}; restarting under TCG (slower)")
        return attempt(decision, None)
