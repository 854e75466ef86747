"""Boot the ISO's installer entry headless and see d-i reach a known question.

How a menu entry is started without a keyboard: direct kernel boot. The
entry's kernel, initrds and command line come from the build's boot entries
(boot-entries.json beside the ISO: the menu model both boot loaders were
written from), its files are extracted from the ISO, the initrds joined into
one file (what ISOLINUX and grub do in memory when an entry lists several:
the kernel unpacks them into one initramfs, the preseed included), and
console=ttyS0 is appended so d-i runs its text frontend on the serial port
the test reads. The ISO is attached as a CD as well, and a NIC on qemu's
user network lets the netboot installer reach the mirror.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from deblive.boottest.medium import direct_kernel_for, read_entries
from deblive.boottest.run import boot_vm_spec
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.host.hostapt import host_architecture
from deblive.vm.accel import AccelDecision, AccelRequest, AccelSelector, with_kvm_fallback
from deblive.vm.command import DirectKernel
from deblive.vm.console import clean_serial
from deblive.vm.errors import QemuError
from deblive.vm.machine import Machine

SERIAL_CONSOLE = "console=ttyS0,115200n8"
# d-i's hostname question (netcfg/get_hostname) as newt draws it on a serial console.
HOSTNAME_QUESTION = re.compile(r"enter the hostname|Hostname:", re.IGNORECASE)


class InstallTestError(QemuError):
    """The installer did not reach the expected step."""


@dataclass
class InstallerResult:
    reached: bool
    accel: str
    seconds: float
    serial_log: Path
    detail: str = ""
    notes: list[str] = field(default_factory=list)


def _wait_for(vm: Machine, expect: re.Pattern[str], timeout: float,
              silence: float | None) -> None:
    """Poll the serial text, cleaned of terminal escapes (newt draws with them)."""
    deadline = time.monotonic() + timeout
    while True:
        if expect.search(clean_serial(vm.text)):
            return
        vm.check_alive(silence)
        if time.monotonic() > deadline:
            raise InstallTestError(f"timed out after {timeout:.0f} s waiting for "
                                   f"{expect.pattern!r}")
        time.sleep(1.0)


def _attempt(iso: Path, out_dir: Path, label: str, dk: DirectKernel, work: Path,
             expect: re.Pattern[str], timeout: float, memory_mib: int, runner: Runner,
             screenshot: bool, decision: AccelDecision,
             silence: float | None) -> InstallerResult:
    serial_log = out_dir / f"serial-installer-{label}.log"
    entries = read_entries(iso)
    assert entries is not None
    spec = boot_vm_spec(iso, "bios", "cd", decision, entries.architecture, work,
                        memory_mib=memory_mib, smp=2, name=f"deblive-installer-{label}",
                        direct_kernel=dk)
    extra = ("-nic", "user,model=virtio-net-pci")
    with Machine(spec, runner, serial_log, work, extra_args=extra) as vm:
        try:
            _wait_for(vm, expect, timeout, silence)
        except InstallTestError as exc:
            return InstallerResult(False, str(decision.accel), round(vm.elapsed, 1), serial_log,
                                   f"{exc}; last lines: " + " | ".join(vm.tail(8)))
        result = InstallerResult(True, str(decision.accel), round(vm.elapsed, 1), serial_log,
                                 f"reached {expect.pattern!r}")
        if screenshot:
            try:
                vm.screendump_png(out_dir / f"screen-installer-{label}.png")
            except QemuError as exc:
                result.notes.append(f"no screenshot: {exc}")
        vm.quit()
        return result


def boot_installer(
    iso: Path, out_dir: Path, *, label: str = "install",
    expect: re.Pattern[str] = HOSTNAME_QUESTION, timeout: float = 900.0,
    accel: str = "auto", memory_mib: int = 2048, screenshot: bool = True,
) -> InstallerResult:
    """Boot the menu entry `label` of iso until the serial console shows `expect`."""
    runner = Runner(BuildLog())
    entries = read_entries(iso)
    if entries is None or entries.menu is None:
        raise InstallTestError(f"no boot-entries.json beside {iso}")
    out_dir.mkdir(parents=True, exist_ok=True)
    selector = AccelSelector(AccelRequest(accel), runner, host_architecture())
    with tempfile.TemporaryDirectory(prefix="deblive-installer-") as tmp:
        work = Path(tmp)
        dk = direct_kernel_for(runner, iso, entries.menu.entry(label), work / "files",
                               SERIAL_CONSOLE)
        return with_kvm_fallback(
            selector,
            lambda decision, silence: _attempt(iso, out_dir, label, dk, work, expect, timeout,
                                               memory_mib, runner, screenshot, decision,
                                               silence),
            runner.log, f"the installer boot ({label})",
        )
