"""Boot the ISO's installer entry headless and see d-i reach a known question.

How a menu entry is started without a keyboard: direct kernel boot. The
entry's kernel, initrds and command line are read from the ISO's own
isolinux/menu.cfg (so the test follows whatever the menu says), its initrds
are concatenated into one file (what ISOLINUX and grub do in memory when an
entry lists several: the kernel unpacks them into one initramfs, the preseed
included), and console=ttyS0 is appended so d-i runs its text frontend on the
serial port the test reads. The ISO is attached as a CD as well, and a NIC on
qemu's user network lets the netboot installer reach the mirror.

Optionally, with a full preseed and a virtual disk, the same path runs a
complete unattended install (d-i powers off at the end; -no-reboot makes
qemu exit), then boots the installed disk to its login prompt.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from deblive.vm import qemu
from deblive.vm.qemu import VM, DirectKernel, KvmFailure, QemuError, VMExited

SERIAL_CONSOLE = "console=ttyS0,115200n8"
# d-i's hostname question (netcfg/get_hostname) as newt draws it on a serial console.
HOSTNAME_QUESTION = re.compile(r"enter the hostname|Hostname:", re.IGNORECASE)
KVM_SILENCE = 20.0


class InstallTestError(QemuError):
    """The installer did not reach the expected step."""


@dataclass(frozen=True)
class MenuEntry:
    label: str
    kernel: str
    initrds: tuple[str, ...]
    append: str


def parse_isolinux_entry(menu_cfg: str, label: str) -> MenuEntry:
    """LINUX, INITRD (comma list) and APPEND of `LABEL label` in an ISOLINUX menu.cfg."""
    current: dict[str, str] | None = None
    entries: dict[str, dict[str, str]] = {}
    for raw in menu_cfg.splitlines():
        words = raw.strip().split(None, 1)
        if not words:
            continue
        key = words[0].upper()
        value = words[1] if len(words) > 1 else ""
        if key == "LABEL":
            current = entries.setdefault(value, {})
        elif key in ("LINUX", "KERNEL", "INITRD", "APPEND") and current is not None:
            current[key] = value
        elif key == "MENU" and value.upper().startswith("BEGIN"):
            current = None
    found = entries.get(label)
    if found is None or ("LINUX" not in found and "KERNEL" not in found):
        raise InstallTestError(f"no entry LABEL {label} with a kernel in the ISOLINUX menu")
    return MenuEntry(
        label=label,
        kernel=found.get("LINUX") or found["KERNEL"],
        initrds=tuple(i for i in found.get("INITRD", "").split(",") if i),
        append=found.get("APPEND", ""),
    )


def extract(iso: Path, paths: list[str], dest: Path) -> None:
    """Copy files out of the ISO with xorriso (no mount, no loop device)."""
    argv = ["xorriso", "-osirrox", "on", "-indev", str(iso)]
    for path in paths:
        target = dest / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        argv += ["-extract", path, str(target)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise InstallTestError(f"xorriso could not extract {paths}: {proc.stderr[-500:]}")


def direct_kernel_for(iso: Path, label: str, workdir: Path,
                      extra_args: str = SERIAL_CONSOLE) -> DirectKernel:
    """The entry's kernel, its initrds joined into one, and its command line + extra_args."""
    extract(iso, ["/isolinux/menu.cfg"], workdir)
    entry = parse_isolinux_entry((workdir / "isolinux/menu.cfg").read_text(), label)
    extract(iso, [entry.kernel, *entry.initrds], workdir)
    joined = workdir / "initrd-joined"
    with joined.open("wb") as out:
        for initrd in entry.initrds:
            with (workdir / initrd.lstrip("/")).open("rb") as part:
                shutil.copyfileobj(part, out)
    append = f"{entry.append} {extra_args}".strip()
    return DirectKernel(workdir / entry.kernel.lstrip("/"), joined, append)


@dataclass
class InstallerVM(VM):
    """The test VM plus a NIC on qemu's user network and optional extra drives."""

    extra_args: tuple[str, ...] = ()

    @property
    def argv(self) -> list[str]:
        return [*qemu.build_command(self.spec, self.binary),
                "-nic", "user,model=virtio-net-pci", *self.extra_args]


@dataclass
class InstallerResult:
    reached: bool
    accel: str
    seconds: float
    serial_log: Path
    detail: str = ""
    notes: list[str] = field(default_factory=list)


def boot_installer(
    iso: Path, out_dir: Path, *, label: str = "install",
    expect: re.Pattern[str] = HOSTNAME_QUESTION, timeout: float = 900.0,
    accel: str = "auto", memory_mib: int = 2048, extra_drives: tuple[str, ...] = (),
    screenshot: bool = True,
) -> InstallerResult:
    """Boot the entry `label` of iso until the serial console shows `expect`."""
    selector = qemu.AccelSelector(accel)  # type: ignore[arg-type]
    decision = selector.get()
    out_dir.mkdir(parents=True, exist_ok=True)
    serial_log = out_dir / f"serial-installer-{label}.log"
    with tempfile.TemporaryDirectory(prefix="deblive-installer-") as tmp:
        work = Path(tmp)
        dk = direct_kernel_for(iso, label, work / "files")
        for attempt in ("first", "retry"):
            spec = qemu.prepare_spec(iso, "bios", "cd", decision.accel, work,
                                     memory_mib=memory_mib, smp=2,
                                     name=f"deblive-installer-{label}", direct_kernel=dk)
            silence = KVM_SILENCE if decision.accel == "kvm" and attempt == "first" else None
            with InstallerVM(spec, serial_log, work, extra_args=extra_drives) as vm:
                try:
                    _wait_for(vm, expect, timeout, silence)
                except (KvmFailure, VMExited) as exc:
                    if silence is not None:
                        decision = selector.demote(f"KVM failed in the installer boot: {exc}")
                        continue
                    return InstallerResult(False, decision.accel, round(vm.elapsed, 1),
                                           serial_log, str(exc))
                except QemuError as exc:
                    return InstallerResult(False, decision.accel, round(vm.elapsed, 1),
                                           serial_log, f"{exc}; last lines: "
                                           + " | ".join(vm.tail(8)))
                result = InstallerResult(True, decision.accel, round(vm.elapsed, 1),
                                         serial_log, f"reached {expect.pattern!r}")
                if screenshot:
                    try:
                        vm.screendump_png(out_dir / f"screen-installer-{label}.png")
                    except QemuError as exc:
                        result.notes.append(f"no screenshot: {exc}")
                vm.quit()
                return result
    return InstallerResult(False, decision.accel, 0.0, serial_log, "no attempt ran")


def _wait_for(vm: VM, expect: re.Pattern[str], timeout: float,
              silence: float | None) -> None:
    """Poll the serial text, cleaned of terminal escapes (newt draws with them)."""
    deadline = time.monotonic() + timeout
    while True:
        if expect.search(qemu.clean_serial(vm.text)):
            return
        vm.check_alive(silence)
        if time.monotonic() > deadline:
            raise InstallTestError(f"timed out after {timeout:.0f} s waiting for "
                                   f"{expect.pattern!r}")
        time.sleep(1.0)
