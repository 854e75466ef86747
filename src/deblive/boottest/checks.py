"""What a booted live system must show, each checked through the serial shell.

sudo as the image's policy says (passwordless by default, as Debian's live
images; with the password; or not at all), root locked, the firmware
interface and Secure Boot state the mode booted with, systemd "running".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from deblive.boottest.medium import BootEntries
from deblive.boottest.modes import BootMode
from deblive.boottest.shell import SerialShell
from deblive.model.sections import NETBOOT_SQUASHFS

SECURE_BOOT_VAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
# The firmware interface the kernel booted through: EFI's runtime services show in
# /sys/firmware/efi; Open Firmware leaves its /openprom node (SLOF's "model" in it) in
# the device tree the kernel copied from it; a PC BIOS leaves neither.
FIRMWARE_COMMAND = ("if test -d /sys/firmware/efi; then echo uefi; "
                    "elif test -d /proc/device-tree/openprom; then echo ofw; else echo bios; fi")
UNIT_NAME = re.compile(
    r"^[\s*\u25cf]*(?P<unit>[\w@:.\\-]+\."
    r"(?:service|socket|mount|automount|swap|target|timer|path|device|scope|slice))\s",
    re.MULTILINE,
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def check_sudo(shell: SerialShell, entries: BootEntries, password: str) -> Check:
    """The live user's sudo rights are what the image's policy says, no more, no less."""
    without = shell.sudo_without_password()
    if entries.sudo == "nopasswd":
        ok = without.rc == 0
        return Check("sudo", ok, "works without a password" if ok
                     else f"sudo -n failed: {without.output}")
    if without.rc == 0:
        return Check("sudo", False, f"sudo works without a password, policy is {entries.sudo}")
    asked = shell.sudo_with_password(password)
    if entries.sudo == "password":
        return Check("sudo", asked.rc == 0, "asks for the password and accepts it"
                     if asked.rc == 0 else f"sudo with the password failed: {asked.output}")
    return Check("sudo", asked.rc != 0, "no sudo rights" if asked.rc != 0
                 else "sudo works, policy is none")


def root_locked(passwd_status: str) -> bool | None:
    """From `passwd -S root` output: True if locked (L/LK), None if unreadable."""
    for line in passwd_status.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "root":
            return fields[1] in ("L", "LK")
    return None


def check_root_locked(shell: SerialShell, entries: BootEntries) -> Check:
    res = shell.run("sudo -n passwd -S root")
    locked = root_locked(res.output) if res.rc == 0 else None
    if locked is None:
        return Check("root-locked", False, f"cannot read root's status: {res.output}")
    line = next(x for x in res.output.splitlines() if x.startswith("root "))
    return Check("root-locked", locked == entries.root_locked,
                 f"{line.strip()} (expected {'locked' if entries.root_locked else 'unlocked'})")


def check_firmware(shell: SerialShell, mode: BootMode) -> Check:
    res = shell.run(FIRMWARE_COMMAND)
    seen = res.output.strip().splitlines()[-1] if res.output.strip() else "?"
    want = mode.interface
    return Check("firmware", seen == want, f"booted via {seen}, expected {want}")


def check_machine(shell: SerialShell, entries: BootEntries) -> Check:
    """The kernel that booted is one of the image's architecture (uname -m)."""
    res = shell.run("uname -m")
    seen = res.output.strip().splitlines()[-1] if res.output.strip() else "?"
    arch = entries.architecture
    return Check("machine", seen in arch.profile().machines,
                 f"kernel for {seen}, expected {arch} ({', '.join(arch.profile().machines)})")


def secure_boot_value(od_output: str) -> int | None:
    """The SecureBoot efivar's value: the last byte (the first four are attributes)."""
    numbers = [int(n) for n in od_output.split() if n.isdigit()]
    return numbers[-1] if len(numbers) >= 5 else None


def check_secure_boot(shell: SerialShell, mode: BootMode) -> Check:
    res = shell.run(f"od -An -t u1 {SECURE_BOOT_VAR}")
    value = secure_boot_value(res.output) if res.rc == 0 else 0  # no variable: not enabled
    want = 1 if mode.firmware == "secureboot" else 0
    state = {1: "enabled", 0: "disabled"}.get(value if value is not None else -1, "unreadable")
    return Check("secure-boot", value == want,
                 f"Secure Boot {state}, expected {'enabled' if want else 'disabled'}")


def failed_units(listing: str) -> list[str]:
    """Unit names from `systemctl --failed --plain --no-legend` (noise lines skipped)."""
    return [m.group("unit") for m in UNIT_NAME.finditer(listing)]


def check_system_running(shell: SerialShell, timeout: float) -> Check:
    res = shell.run(f"timeout {int(timeout)} systemctl is-system-running --wait",
                    timeout=timeout + 60)
    lines = res.output.strip().splitlines()
    state = lines[-1].strip() if lines else "(no answer: still starting?)"
    if state == "running":
        return Check("system-running", True, "running")
    failed = shell.run("systemctl --failed --no-legend --plain --no-pager 2>&1")
    units = failed_units(failed.output)
    detail = f"system is {state}"
    if units:
        detail += f"; failed units: {', '.join(units)}"
    if res.rc == 124:
        jobs = shell.run("systemctl list-jobs --no-legend --no-pager | head -n 10")
        detail += f"; timed out after {int(timeout)} s; jobs: {jobs.output.strip() or 'none'}"
    return Check("system-running", False, detail)


def check_expect(shell: SerialShell, command: str) -> Check:
    """A command of the tester's (`deblive test --expect`), run as the live user: it must
    exit 0. How an image maker checks in the booted system what the hook made."""
    res = shell.run(command)
    tail = res.output.strip()[-300:]
    return Check(f"expect: {command}", res.rc == 0,
                 "exit 0" if res.rc == 0 else f"exit {res.rc}: {tail}")


def check_fetched(shell: SerialShell, url: str) -> Check:
    """A network boot: live-boot was told to fetch the squashfs, and its medium is the
    RAM file system it downloaded it into (not a CD or stick found by chance)."""
    res = shell.run("cat /proc/cmdline; grep ' /run/live/medium ' /proc/mounts")
    fetch = f"fetch={url}" in res.output.split()
    ram = any(line.split()[1:3] == ["/run/live/medium", "ramfs"]
              for line in res.output.splitlines() if len(line.split()) > 2)
    detail = (f"fetch={url} on the command line, /run/live/medium on ramfs" if fetch and ram
              else f"fetch= {'seen' if fetch else 'missing'}, /run/live/medium "
              f"{'on ramfs' if ram else 'not on ramfs'}: {res.output.strip()[-300:]}")
    return Check("fetched", fetch and ram, detail)


def run_checks(shell: SerialShell, mode: BootMode, entries: BootEntries, password: str,
               system_timeout: float, expect: Sequence[str] = ()) -> tuple[list[Check], list[str]]:
    """Every check of a booted mode; returns the checks and notes on what was skipped."""
    notes = []
    checks = [check_sudo(shell, entries, password)]
    if shell.root:
        # Kernel messages on the console would interleave with command output.
        shell.run("sudo -n dmesg -n 1")
        checks.append(check_root_locked(shell, entries))
    else:
        notes.append("root-locked not checked: the live user has no root rights to read it")
    checks += [check_firmware(shell, mode), check_machine(shell, entries)]
    if mode.network and entries.netboot_url is not None:
        checks.append(check_fetched(shell, entries.netboot_url + NETBOOT_SQUASHFS))
    if mode.uefi:
        checks.append(check_secure_boot(shell, mode))
    checks.append(check_system_running(shell, system_timeout))
    checks += [check_expect(shell, command) for command in expect]
    return checks, notes
