"""One headless qemu VM for boot tests: command line, firmware, serial, QMP.

The command line is built by a pure function (build_command) so every mode's
flags can be checked without starting qemu. The serial console is qemu's
stdio, read by a thread into a growing text buffer that expect() searches:
pipes need no socket paths, cannot lose early firmware output and die with
the process. QMP (through qemu.qmp) is used only for what the serial console
cannot do: screendump, pressing keys on the VGA keyboard, and quit.

The accelerator choice lives here too. This machine's /dev/kvm opens but is a
broken nested virtualization that dies in firmware, so "auto" first runs a
sub-second probe (OVMF under KVM must print its boot manager lines on serial)
and falls back to TCG, and the verdict is cached for the whole run.

The guest architecture comes from the ISO (iso_architecture): amd64 boots in
qemu-system-x86_64 on q35 with OVMF, arm64 in qemu-system-aarch64 on virt with
AAVMF (UEFI only, CD on virtio-scsi). An architecture other than the host's
is always TCG: KVM cannot run it, so there is nothing to probe.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import enum
import fnmatch
import json
import logging
import os
import platform
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from deblive.core.runner import DebliveError

QEMU_BINARY = "qemu-system-x86_64"
FIRMWARE_DESCRIPTOR_DIRS = (Path("/usr/share/qemu/firmware"), Path("/etc/qemu/firmware"))
OVMF_DIR = Path("/usr/share/OVMF")
KVM_DEVICE = Path("/dev/kvm")
KVM_ERROR_TEXT = "KVM internal error"

FirmwareKind = Literal["bios", "uefi", "secureboot"]
MediaKind = Literal["cd", "usb"]
Accel = Literal["kvm", "tcg"]


@dataclass(frozen=True)
class ArchProfile:
    """How qemu runs guests of one Debian architecture."""

    debian: str  # Debian's name: amd64, arm64
    qemu_arch: str  # qemu's (and the firmware descriptors'): x86_64, aarch64
    binary: str
    machine: str  # -machine type
    descriptor_machine: str  # a versioned machine name descriptor patterns must match
    package: str  # the Debian package with the binary
    firmware_package: str  # the Debian package with the UEFI firmware
    firmware_dir: Path
    known_plain: tuple[str, str]  # file names of code and varstore, without Secure Boot
    known_secure: tuple[str, str]  # with Secure Boot and enrolled keys
    bios: bool  # has a legacy BIOS (SeaBIOS); otherwise UEFI only
    efi_boot_name: str  # EFI/boot/boot<name>.efi, the removable-media boot file
    # Cross-architecture TCG is several times slower than TCG of the host's
    # own architecture: timeouts are multiplied by this for a foreign guest.
    foreign_slowdown: float = 1.0


AMD64 = ArchProfile(
    debian="amd64",
    qemu_arch="x86_64",
    binary=QEMU_BINARY,
    machine="q35",
    descriptor_machine="pc-q35-7.2",
    package="qemu-system-x86",
    firmware_package="ovmf",
    firmware_dir=OVMF_DIR,
    known_plain=("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
    known_secure=("OVMF_CODE_4M.ms.fd", "OVMF_VARS_4M.ms.fd"),
    bios=True,
    efi_boot_name="x64",
    foreign_slowdown=3.0,
)
ARM64 = ArchProfile(
    debian="arm64",
    qemu_arch="aarch64",
    binary="qemu-system-aarch64",
    machine="virt",
    descriptor_machine="virt-7.2",
    package="qemu-system-arm",
    firmware_package="qemu-efi-aarch64",
    firmware_dir=Path("/usr/share/AAVMF"),
    known_plain=("AAVMF_CODE.fd", "AAVMF_VARS.fd"),
    known_secure=("AAVMF_CODE.ms.fd", "AAVMF_VARS.ms.fd"),
    bios=False,
    efi_boot_name="aa64",
    foreign_slowdown=4.0,
)
ARCH_PROFILES: dict[str, ArchProfile] = {p.debian: p for p in (AMD64, ARM64)}
# platform.machine() of the host -> Debian architecture
_HOST_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def arch_profile(arch: str) -> ArchProfile:
    """The profile of a Debian architecture; QemuError for one deblive cannot boot."""
    try:
        return ARCH_PROFILES[arch]
    except KeyError:
        raise QemuError(
            f"cannot boot-test {arch} images (known: {', '.join(ARCH_PROFILES)})"
        ) from None


def host_arch(machine: str | None = None) -> str:
    """The host's Debian architecture (its uname machine if unknown)."""
    machine = platform.machine() if machine is None else machine
    return _HOST_ARCHES.get(machine, machine)


def is_foreign(arch: str, host: str | None = None) -> bool:
    """True when arch cannot run under the host's KVM (another CPU architecture)."""
    return arch != (host_arch() if host is None else host)


class QemuError(DebliveError):
    """qemu could not be started or did something the test cannot go on from."""


class VMExited(QemuError):
    """qemu ended while the test still expected output from it."""


class KvmFailure(QemuError):
    """KVM broke inside the guest (internal error) or the guest stalled silently."""


class ExpectTimeout(QemuError):
    """The serial console did not show what was waited for in time."""


# --------------------------------------------------------------------------
# Firmware


@dataclass(frozen=True)
class Firmware:
    """A UEFI code image with the template of its variable store."""

    code: Path
    vars_template: Path
    secure_boot: bool
    requires_smm: bool
    source: str  # descriptor file or "known path", for the log


def _descriptor_files(dirs: Sequence[Path]) -> list[Path]:
    """Descriptor files in priority order; a later dir overrides a same-named file.

    That is the rule of qemu's firmware.json spec: /etc overrides /usr/share,
    and the file names (NN-name.json) give the order.
    """
    by_name: dict[str, Path] = {}
    for directory in dirs:
        if directory.is_dir():
            for path in directory.glob("*.json"):
                by_name[path.name] = path
    return [by_name[name] for name in sorted(by_name)]


def firmware_from_descriptor(
    data: Mapping[str, Any], source: str, profile: ArchProfile = AMD64
) -> Firmware | None:
    """The flash firmware for profile's machine (x86_64 q35, aarch64 virt) a
    descriptor describes, or None if it is not one."""
    if "uefi" not in data.get("interface-types", []):
        return None
    mapping = data.get("mapping", {})
    if mapping.get("device") != "flash":
        return None
    targets = data.get("targets", [])
    if not any(
        t.get("architecture") == profile.qemu_arch
        and any(fnmatch.fnmatch(profile.descriptor_machine, m) for m in t.get("machines", []))
        for t in targets
    ):
        return None
    try:
        code = Path(mapping["executable"]["filename"])
        template = Path(mapping["nvram-template"]["filename"])
    except (KeyError, TypeError):
        return None
    features = set(data.get("features", []))
    return Firmware(
        code=code,
        vars_template=template,
        # Secure Boot is only enforced when the keys are enrolled: the
        # "secure" build with an empty varstore boots anything.
        secure_boot="secure-boot" in features and "enrolled-keys" in features,
        requires_smm="requires-smm" in features,
        source=source,
    )


def _known_firmware(kind: FirmwareKind, profile: ArchProfile = AMD64) -> Firmware:
    """Debian's ovmf (qemu-efi-aarch64) package paths, for hosts without descriptors.

    Only OVMF's Secure Boot build needs SMM; AAVMF keeps its varstore safe
    without it (the flash is not reachable from the guest's EL1).
    """
    directory = profile.firmware_dir
    if kind == "secureboot":
        code, template = profile.known_secure
        smm = profile.qemu_arch == "x86_64"
        return Firmware(directory / code, directory / template, True, smm, "known path")
    code, template = profile.known_plain
    return Firmware(directory / code, directory / template, False, False, "known path")


def select_firmware(
    kind: FirmwareKind,
    descriptor_dirs: Sequence[Path] = FIRMWARE_DESCRIPTOR_DIRS,
    exists: Callable[[Path], bool] = Path.is_file,
    profile: ArchProfile = AMD64,
) -> Firmware | None:
    """The firmware for a mode: None for BIOS (qemu's built-in SeaBIOS).

    uefi wants a build without Secure Boot (so an unsigned boot loader works and
    SMM is not needed); secureboot wants one with Secure Boot and enrolled
    (Microsoft) keys, because only that proves the shim chain is accepted.
    """
    if kind == "bios":
        if not profile.bios:
            raise QemuError(f"{profile.debian} has no BIOS: its images boot with UEFI only")
        return None
    want_secure = kind == "secureboot"
    for path in _descriptor_files(descriptor_dirs):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        firmware = firmware_from_descriptor(data, str(path), profile)
        if firmware is None or firmware.secure_boot != want_secure:
            continue
        # Plain UEFI: no Secure Boot capable build at all, enrolled or not
        # (OVMF's needs SMM; AAVMF's "secboot" build would enforce it).
        if not want_secure and (firmware.requires_smm or "secure-boot" in data.get("features", [])):
            continue
        if exists(firmware.code) and exists(firmware.vars_template):
            return firmware
    fallback = _known_firmware(kind, profile)
    if exists(fallback.code) and exists(fallback.vars_template):
        return fallback
    what = f"{profile.qemu_arch} {kind} firmware"
    if kind == "secureboot":
        what += " with enrolled keys"
    raise QemuError(
        f"no {what} found (no matching descriptor in "
        f"{', '.join(map(str, descriptor_dirs))}, no {fallback.code}): "
        f"install the {profile.firmware_package} package"
    )


# --------------------------------------------------------------------------
# Command line


@dataclass(frozen=True)
class DirectKernel:
    """Boot a kernel directly (no boot loader): for developing the login checks."""

    kernel: Path
    initrd: Path
    append: str


@dataclass(frozen=True)
class VMSpec:
    """Everything that decides a qemu command line."""

    iso: Path
    firmware_kind: FirmwareKind
    media: MediaKind
    accel: Accel
    qmp_socket: Path
    firmware: Firmware | None = None
    vars_file: Path | None = None  # the per-run copy of firmware.vars_template
    memory_mib: int = 2048
    smp: int = 2
    name: str = "deblive-test"
    direct_kernel: DirectKernel | None = None
    arch: str = "amd64"  # the guest's Debian architecture

    @property
    def profile(self) -> ArchProfile:
        return arch_profile(self.arch)


def _machine_args(spec: VMSpec) -> list[str]:
    profile = spec.profile
    machine = profile.machine
    if spec.firmware is not None and spec.firmware.requires_smm:
        machine += ",smm=on"
    args = ["-machine", machine, "-accel", spec.accel]
    # KVM: the host CPU. TCG: on x86 qemu's default model, the fastest to
    # emulate; virt has no usable default (cortex-a15 is 32-bit), and "max"
    # runs every arm64 kernel.
    if spec.accel == "kvm":
        args += ["-cpu", "host"]
    elif profile.qemu_arch == "aarch64":
        args += ["-cpu", "max"]
    return args


def _firmware_args(spec: VMSpec) -> list[str]:
    if spec.firmware is None:
        return []
    if spec.vars_file is None:
        raise QemuError("UEFI needs a per-run copy of the variable store")
    args = [
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={spec.firmware.code}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={spec.vars_file}",
    ]
    if spec.firmware.requires_smm:
        # Without this the guest could write the varstore around SMM and
        # Secure Boot would not be enforced.
        args += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    return args


def _media_args(spec: VMSpec) -> list[str]:
    """The ISO as a CD (q35: the built-in AHCI; virt, which has no IDE: virtio-scsi),
    or as a USB stick on xHCI.

    The stick is the same file as a raw disk with snapshot=on: the guest may
    write (live-boot does not, but a persistence test would) and the ISO is
    never modified. virt always gets the xHCI (for its USB keyboard).
    """
    iso = str(spec.iso).replace(",", ",,")
    virt = spec.profile.machine == "virt"
    if spec.media == "cd":
        cdrom = f"if=none,id=media,media=cdrom,readonly=on,format=raw,file={iso}"
        if virt:
            return [
                "-device",
                "virtio-scsi-pci,id=scsi",
                "-drive",
                cdrom,
                "-device",
                "scsi-cd,bus=scsi.0,drive=media,bootindex=1",
            ]
        return ["-drive", cdrom, "-device", "ide-cd,drive=media,bootindex=1"]
    return [
        *([] if virt else ["-device", "qemu-xhci,id=xhci"]),
        "-drive",
        f"if=none,id=media,format=raw,snapshot=on,file={iso}",
        "-device",
        "usb-storage,bus=xhci.0,drive=media,removable=on,bootindex=1",
    ]


def _display_args(spec: VMSpec) -> list[str]:
    """One screen QMP's screendump can read, and a keyboard for send-key.

    q35: the standard VGA (and its PS/2 keyboard). virt has neither VGA nor
    PS/2: virtio-gpu (AAVMF drives it for the boot menu, the kernel's
    virtio_gpu after it) and a USB keyboard on the xHCI.
    """
    if spec.profile.machine == "virt":
        return [
            "-display",
            "none",
            "-device",
            "qemu-xhci,id=xhci",
            "-device",
            "virtio-gpu-pci",
            "-device",
            "usb-kbd,bus=xhci.0",
        ]
    return ["-display", "none", "-vga", "std"]


def build_command(spec: VMSpec, binary: str | None = None) -> list[str]:
    """The full qemu argv for one test VM (binary: default the arch's qemu-system-*).

    -nodefaults drops the default NIC (whose iPXE ROM slows BIOS boots), the
    default monitor and serial; we add back exactly one screen (for
    screendump), one serial port on stdio (virt: its PL011, the guest's
    ttyAMA0), QMP on a unix socket and an entropy source (without one a TCG
    guest can wait long for random numbers).
    """
    argv = [binary or spec.profile.binary, "-name", spec.name, "-nodefaults", "-no-user-config"]
    argv += _machine_args(spec)
    argv += ["-m", str(spec.memory_mib), "-smp", str(spec.smp)]
    argv += _firmware_args(spec)
    argv += _display_args(spec)
    argv += _media_args(spec)
    argv += ["-chardev", "stdio,id=serial0,signal=off", "-serial", "chardev:serial0"]
    argv += ["-qmp", f"unix:{spec.qmp_socket},server=on,wait=off"]
    argv += ["-device", "virtio-rng-pci", "-no-reboot"]
    if spec.direct_kernel is not None:
        dk = spec.direct_kernel
        argv += ["-kernel", str(dk.kernel), "-initrd", str(dk.initrd), "-append", dk.append]
    return argv


# --------------------------------------------------------------------------
# Accelerator choice


class ProbeOutcome(enum.Enum):
    """What a short KVM boot showed."""

    OK = "ok"
    KVM_ERROR = "KVM internal error"
    EXITED = "qemu exited"
    NO_OUTPUT = "no serial output"
    NOT_RUN = "not run"


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
    requested: Literal["auto", "kvm", "tcg"],
    kvm_usable: bool,
    probe: Callable[[], ProbeResult],
    clock: Callable[[], float] = time.monotonic,
    foreign: str | None = None,
) -> AccelDecision:
    """Pick kvm or tcg. probe is only called for auto with a usable /dev/kvm.

    An explicit --accel kvm is obeyed without a probe (the user may want to see
    KVM fail), but a missing /dev/kvm is an input error then. foreign names a
    guest architecture that is not the host's: always TCG, never a probe.
    """
    if foreign is not None:
        if requested == "kvm":
            raise QemuError(f"--accel kvm, but KVM cannot run {foreign} on this host")
        host = host_arch()
        return AccelDecision(
            "tcg", f"{requested}: {foreign} guest on an {host} host is always TCG (no KVM probe)"
        )
    if requested == "tcg":
        return AccelDecision("tcg", "requested")
    if requested == "kvm":
        if not kvm_usable:
            raise QemuError(f"--accel kvm, but {KVM_DEVICE} cannot be opened")
        return AccelDecision("kvm", "requested")
    if not kvm_usable:
        return AccelDecision("tcg", f"{KVM_DEVICE} not usable", fell_back=True)
    start = clock()
    result = probe()
    seconds = round(clock() - start, 2)
    if result.outcome is ProbeOutcome.OK:
        return AccelDecision("kvm", f"KVM probe passed in {seconds} s", probe_seconds=seconds)
    reason = f"KVM probe failed in {seconds} s: {result.outcome.value}"
    if result.detail:
        reason += f" ({result.detail})"
    return AccelDecision("tcg", reason, fell_back=True, probe_seconds=seconds)


PROBE_OK = re.compile(r"BdsDxe|Shell>|UEFI Interactive Shell")


def probe_kvm(timeout: float = 10.0, binary: str = QEMU_BINARY) -> ProbeResult:
    """Boot OVMF alone under KVM and wait for its boot manager on serial.

    OVMF exercises what broke KVM here (real mode, SMM-less flash, FPU setup):
    on this host KVM reports an internal error within 0.1 s; under TCG the
    "BdsDxe:" line comes after about 3.7 s, so a working KVM prints it well
    within the timeout. Without OVMF, SeaBIOS is the probe (its "Booting" line
    on the debug port).
    """
    with tempfile.TemporaryDirectory(prefix="deblive-kvmprobe-") as tmp:
        try:
            firmware = select_firmware("uefi")
        except QemuError:
            firmware = None
        argv = [binary, "-nodefaults", "-no-user-config", "-machine", "q35", "-accel", "kvm"]
        argv += ["-cpu", "host", "-m", "256", "-display", "none", "-no-reboot"]
        if firmware is not None:
            vars_file = Path(tmp) / "vars.fd"
            shutil.copyfile(firmware.vars_template, vars_file)
            argv += ["-chardev", "stdio,id=serial0,signal=off", "-serial", "chardev:serial0"]
            argv += [
                "-drive",
                f"if=pflash,format=raw,unit=0,readonly=on,file={firmware.code}",
                "-drive",
                f"if=pflash,format=raw,unit=1,file={vars_file}",
            ]
            ok = PROBE_OK
        else:
            argv += ["-debugcon", "stdio", "-global", "isa-debugcon.iobase=0x402"]
            ok = re.compile(r"Booting from|No bootable device")
        return _run_probe(argv, ok, timeout)


def _run_probe(argv: Sequence[str], ok: re.Pattern[str], timeout: float) -> ProbeResult:
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:
        return ProbeResult(ProbeOutcome.EXITED, str(exc))
    out = StreamBuffer(proc.stdout)
    err = StreamBuffer(proc.stderr)
    outcome = ProbeOutcome.NO_OUTPUT
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if KVM_ERROR_TEXT in err.text:
                outcome = ProbeOutcome.KVM_ERROR
                break
            if ok.search(out.text):
                return ProbeResult(ProbeOutcome.OK)
            if proc.poll() is not None:
                outcome = ProbeOutcome.EXITED
                break
            time.sleep(0.05)
    finally:
        stop(proc)
        out.join()
        err.join()
    return ProbeResult(outcome, _probe_detail(err.text))


def _probe_detail(stderr: str) -> str:
    """The line of qemu's stderr that explains a failed probe (warnings skipped)."""
    for line in stderr.splitlines():
        line = line.strip()
        if line and "warning:" not in line:
            return line.removeprefix(f"{QEMU_BINARY}: ")[:160]
    return ""


class AccelSelector:
    """The accelerator verdict for one `deblive test` run: probed once, shared.

    Modes running in parallel call get(); the first caller probes, the others
    wait for it. demote() switches the rest of the run to TCG when a mode saw
    KVM fail although the probe had passed.
    """

    def __init__(
        self,
        requested: Literal["auto", "kvm", "tcg"],
        kvm_usable: Callable[[], bool] = kvm_device_usable,
        probe: Callable[[], ProbeResult] = probe_kvm,
        foreign: str | None = None,
    ) -> None:
        self.requested = requested
        self._kvm_usable = kvm_usable
        self._probe = probe
        self.foreign = foreign  # a guest architecture KVM cannot run here
        self._decision: AccelDecision | None = None
        self._lock = threading.Lock()

    def get(self) -> AccelDecision:
        with self._lock:
            if self._decision is None:
                # A foreign guest: /dev/kvm is not even looked at, KVM cannot help.
                usable = False if self.foreign is not None else self._kvm_usable()
                self._decision = decide_accel(
                    self.requested, usable, self._probe, foreign=self.foreign
                )
            return self._decision

    def demote(self, reason: str) -> AccelDecision:
        """Use TCG from now on (only for auto; an explicit kvm stays kvm)."""
        with self._lock:
            if self.requested == "auto":
                self._decision = AccelDecision("tcg", reason, fell_back=True)
            assert self._decision is not None
            return self._decision

    @property
    def can_fall_back(self) -> bool:
        return self.requested == "auto" and self.foreign is None


# --------------------------------------------------------------------------
# Output streams


class StreamBuffer:
    """Reads a pipe in a thread into text (and optionally a raw log file)."""

    def __init__(self, stream: IO[bytes] | None, log: IO[bytes] | None = None) -> None:
        self._parts: list[str] = []
        self._text = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._log = log
        self.changed = threading.Condition()
        self.last_output = time.monotonic()
        self.first_output: float | None = None
        # (time, characters received so far): when each part of the text arrived.
        self.arrivals: list[tuple[float, int]] = []
        self._received = 0
        self.eof = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            self.eof = True
            return
        fd = stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if self._log is not None and chunk:
                self._log.write(chunk)
                self._log.flush()
            with self.changed:
                if chunk:
                    decoded = self._decoder.decode(chunk)
                    self._parts.append(decoded)
                    now = time.monotonic()
                    self._received += len(decoded)
                    self.arrivals.append((now, self._received))
                    self.last_output = now
                    if self.first_output is None:
                        self.first_output = now
                else:
                    self.eof = True
                self.changed.notify_all()
            if not chunk:
                return

    @property
    def text(self) -> str:
        with self.changed:
            if self._parts:
                self._text += "".join(self._parts)
                self._parts.clear()
            return self._text

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)


def stop(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    """End qemu: SIGTERM (qemu exits cleanly), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


# --------------------------------------------------------------------------
# Screenshots: qemu writes PPM (every version can), we check and write PNG


def parse_ppm(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, RGB bytes) of a binary P6 PPM with maxval 255."""
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while end < len(data) and not data[end : end + 1].isspace():
            end += 1
        if end == pos:
            raise ValueError("truncated PPM header")
        fields.append(data[pos:end])
        pos = end
    magic, width, height, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    if magic != b"P6" or maxval != 255:
        raise ValueError(f"unsupported PPM ({magic!r}, maxval {maxval})")
    pixels = data[pos + 1 : pos + 1 + width * height * 3]
    if len(pixels) != width * height * 3:
        raise ValueError("truncated PPM pixel data")
    return width, height, pixels


def count_colours(pixels: bytes, limit: int = 16) -> int:
    """Distinct RGB colours, counting stops at limit (we only ask "more than one?")."""
    seen: set[bytes] = set()
    for i in range(0, len(pixels), 3):
        seen.add(pixels[i : i + 3])
        if len(seen) >= limit:
            break
    return len(seen)


def encode_png(width: int, height: int, pixels: bytes) -> bytes:
    """An 8-bit RGB PNG (filter 0 on every row): enough for screenshots, no Pillow."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    stride = width * 3
    raw = b"".join(b"\x00" + pixels[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------
# QMP


# qemu.qmp logs every failed connection attempt at ERROR level; deblive turns
# such failures into QemuError with its own message, so its log stays quiet.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


async def _qmp_execute(
    socket_path: Path, command: str, arguments: Mapping[str, object] | None, timeout: float
) -> object:
    from qemu.qmp import QMPClient

    client = QMPClient("deblive")
    await asyncio.wait_for(client.connect(str(socket_path)), timeout)
    try:
        return await asyncio.wait_for(client.execute(command, arguments), timeout)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), timeout)


def qmp_execute(
    socket_path: Path,
    command: str,
    arguments: Mapping[str, object] | None = None,
    timeout: float = 20.0,
) -> object:
    """Run one QMP command on a fresh connection (QMP takes one client at a time)."""
    return asyncio.run(_qmp_execute(socket_path, command, arguments, timeout))


# --------------------------------------------------------------------------
# The VM

_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def kill_all_vms() -> None:
    """Kill every qemu this process started and that still runs.

    qemu runs in its own session (a terminal's Ctrl-C does not reach it), so an
    interrupted test run must end its VMs itself, also those of worker threads.
    """
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        stop(proc, grace=1.0)


@dataclass
class VM:
    """A running qemu with its serial console. Use as a context manager.

    expect() searches the serial text from a cursor that moves past each
    match, so the same prompt is never matched twice.
    """

    spec: VMSpec
    serial_log: Path
    workdir: Path
    binary: str | None = None  # default: the spec's architecture's qemu-system-*
    cursor: int = 0
    started: float = 0.0
    proc: subprocess.Popen[bytes] | None = None
    _serial: StreamBuffer | None = None
    _stderr: StreamBuffer | None = None
    _log_file: IO[bytes] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def argv(self) -> list[str]:
        return build_command(self.spec, self.binary)

    def start(self) -> None:
        self.serial_log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.serial_log.open("wb")
        self.started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.workdir,
                start_new_session=True,  # a Ctrl-C on the terminal is ours to handle
            )
        except OSError as exc:
            raise QemuError(f"cannot start {self.argv[0]}: {exc}") from exc
        with _LIVE_LOCK:
            _LIVE.add(self.proc)
        self._serial = StreamBuffer(self.proc.stdout, self._log_file)
        self._stderr = StreamBuffer(self.proc.stderr)

    def __enter__(self) -> VM:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill qemu if it still runs and close the log; safe to call twice."""
        if self.proc is not None:
            stop(self.proc)
            with _LIVE_LOCK:
                _LIVE.discard(self.proc)
        for buf in (self._serial, self._stderr):
            if buf is not None:
                buf.join()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- state

    @property
    def text(self) -> str:
        return self._serial.text if self._serial is not None else ""

    @property
    def stderr_text(self) -> str:
        return self._stderr.text if self._stderr is not None else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def first_output_after(self) -> float | None:
        """Seconds from start to the first serial byte, None while silent."""
        if self._serial is None or self._serial.first_output is None:
            return None
        return self._serial.first_output - self.started

    def milestones(self, patterns: Mapping[str, re.Pattern[str]]) -> dict[str, float]:
        """Seconds from start to the first serial appearance of each pattern.

        Where a boot spends its time (firmware, boot loader, kernel, initramfs,
        userspace) shows in when their first words arrive on the console.
        """
        if self._serial is None:
            return {}
        text = self._serial.text
        arrivals = list(self._serial.arrivals)
        found: dict[str, float] = {}
        for name, pattern in patterns.items():
            match = pattern.search(text)
            if match is None:
                continue
            for when, received in arrivals:
                if received >= match.end():
                    found[name] = round(when - self.started, 1)
                    break
        return found

    def check_alive(self, silence_limit: float | None = None) -> None:
        """Raise when KVM broke, qemu ended, or the guest was silent too long from start."""
        if KVM_ERROR_TEXT in self.stderr_text:
            raise KvmFailure("qemu reported a KVM internal error")
        if not self.running:
            code = self.proc.returncode if self.proc is not None else None
            detail = self.stderr_text.strip().splitlines()[-3:]
            raise VMExited(f"qemu exited (status {code})" + (": " + " / ".join(detail)))
        if (
            silence_limit is not None
            and self.first_output_after is None
            and self.elapsed > silence_limit
        ):
            raise KvmFailure(f"no serial output in the first {silence_limit:.0f} s")

    # -- serial

    def expect(
        self,
        pattern: str | re.Pattern[str],
        timeout: float,
        silence_limit: float | None = None,
        what: str | None = None,
    ) -> re.Match[str]:
        """Wait for pattern on serial after the cursor; move the cursor past it."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        assert self._serial is not None
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.text, self.cursor)
            if match is not None:
                self.cursor = match.end()
                return match
            self.check_alive(silence_limit)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ExpectTimeout(
                    f"timed out after {timeout:.0f} s waiting for {what or regex.pattern!r}"
                )
            with self._serial.changed:
                self._serial.changed.wait(min(remaining, 0.5))

    def send(self, text: str) -> None:
        """Type text on the serial console."""
        if self.proc is None or self.proc.stdin is None:
            raise QemuError("qemu is not running")
        try:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise VMExited("qemu exited (serial input closed)") from exc

    def tail(self, lines: int = 30) -> list[str]:
        """The last serial lines, without terminal escapes, for error reports."""
        return clean_serial(self.text).splitlines()[-lines:]

    def wait_exit(self, timeout: float) -> bool:
        """True if qemu ended within timeout."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    # -- QMP

    def qmp(self, command: str, arguments: Mapping[str, object] | None = None) -> object:
        """One QMP command; any failure (VM gone, socket, QMP error) is a QemuError."""
        with self._lock:
            try:
                return qmp_execute(self.spec.qmp_socket, command, arguments)
            except Exception as exc:
                raise QemuError(f"QMP {command} failed: {exc!r}") from exc

    def screendump_png(self, dest: Path) -> int:
        """Save the VGA screen as PNG; returns its number of colours (capped at 16)."""
        ppm = self.workdir / "screen.ppm"
        self.qmp("screendump", {"filename": str(ppm)})
        try:
            width, height, pixels = parse_ppm(ppm.read_bytes())
        except (OSError, ValueError) as exc:
            raise QemuError(f"unreadable screendump: {exc}") from exc
        finally:
            ppm.unlink(missing_ok=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(encode_png(width, height, pixels))
        return count_colours(pixels)

    def press_key(self, key: str) -> None:
        """Press a key on the VM's keyboard (qcode name, e.g. "ret")."""
        self.qmp("send-key", {"keys": [{"type": "qcode", "data": key}]})

    def type_text(self, text: str, delay: float = 0.05) -> None:
        """Type text on the VM's keyboard (US layout), for consoles without serial."""
        for char in text:
            keys = [{"type": "qcode", "data": qcode} for qcode in char_qcodes(char)]
            self.qmp("send-key", {"keys": keys})
            time.sleep(delay)

    def quit(self) -> None:
        """Ask qemu to quit through QMP; ignore a VM that is already gone."""
        if not self.spec.qmp_socket.exists():
            return
        with contextlib.suppress(Exception):
            self.qmp("quit")


ANSI_ESCAPE = re.compile(r"\x1b(\[[0-9;?=]*[ -/]*[@-~]|[()%][0-9A-Za-z@]|[0-~])")


CURSOR_MOVE = re.compile(r"\x1b\[\d*(;\d*)?[Hf]")


_PLAIN_QCODES = {
    " ": "spc", "\n": "ret", "\t": "tab", "-": "minus", "=": "equal", "[": "bracket_left",
    "]": "bracket_right", ";": "semicolon", "'": "apostrophe", "`": "grave_accent",
    "\\": "backslash", ",": "comma", ".": "dot", "/": "slash",
}
_SHIFTED = {
    "!": "1", "@": "2", "#": "3", "$": "4", "%": "5", "^": "6", "&": "7", "*": "8", "(": "9",
    ")": "0", "_": "-", "+": "=", "{": "[", "}": "]", ":": ";", '"': "'", "~": "`",
    "|": "\\", "<": ",", ">": ".", "?": "/",
}


def char_qcodes(char: str) -> list[str]:
    """The qcodes (with shift where needed) that type char on a US keyboard."""
    if char.isascii() and (char.islower() or char.isdigit()):
        return [char]
    if char.isascii() and char.isupper():
        return ["shift", char.lower()]
    if char in _PLAIN_QCODES:
        return [_PLAIN_QCODES[char]]
    if char in _SHIFTED:
        return ["shift", *char_qcodes(_SHIFTED[char])]
    raise ValueError(f"cannot type {char!r} on a US keyboard")


def clean_serial(text: str) -> str:
    """Serial text without terminal escapes, NULs and carriage returns.

    Cursor moves become line breaks: boot menus draw by positioning the cursor,
    and joined up they would make one unreadable line.
    """
    text = CURSOR_MOVE.sub("\n", text)
    text = ANSI_ESCAPE.sub("", text).replace("\x0e", "").replace("\x0f", "")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


@contextlib.contextmanager
def vm_workdir(prefix: str = "deblive-vm-") -> Iterator[Path]:
    """A temp dir for the varstore copy, QMP socket and screendump; always removed."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def prepare_spec(
    iso: Path,
    firmware_kind: FirmwareKind,
    media: MediaKind,
    accel: Accel,
    workdir: Path,
    **extra: Any,
) -> VMSpec:
    """A VMSpec with firmware chosen and its varstore copied into workdir.

    extra may hold arch (the guest's Debian architecture, default amd64).
    """
    profile = arch_profile(extra.get("arch", "amd64"))
    firmware = select_firmware(firmware_kind, profile=profile)
    vars_file = None
    if firmware is not None:
        vars_file = workdir / f"{profile.firmware_dir.name}_VARS.fd"
        shutil.copyfile(firmware.vars_template, vars_file)
    return VMSpec(
        iso=iso,
        firmware_kind=firmware_kind,
        media=media,
        accel=accel,
        qmp_socket=workdir / "qmp.sock",
        firmware=firmware,
        vars_file=vars_file,
        **extra,
    )


# --------------------------------------------------------------------------
# Which architecture an ISO is for

_EFI_BOOT_FILE = re.compile(r"^boot(?P<name>x64|aa64|ia32|arm|riscv64)\.efi$", re.IGNORECASE)
# Read-only: a missing path is a message, not an abort.
XORRISO_READ = ("xorriso", "-abort_on", "NEVER", "-indev")
_EFI_NAMES = {"x64": "amd64", "aa64": "arm64", "ia32": "i386", "arm": "armhf", "riscv64": "riscv64"}
_ARCH_WORD = re.compile(
    r"(?<![a-z0-9])(amd64|arm64|i386|armhf|armel|riscv64|ppc64el|s390x)(?![a-z0-9])"
)


def arch_from_efi_names(names: Sequence[str]) -> str | None:
    """The architecture of the removable-media boot files (EFI/boot/boot<arch>.efi).

    An ISO with boot files of two architectures (a multi-arch medium) gives
    the first one known to deblive, amd64 before the others.
    """
    found = []
    for name in names:
        match = _EFI_BOOT_FILE.match(name.rsplit("/", 1)[-1])
        if match:
            found.append(_EFI_NAMES[match.group("name").lower()])
    for arch in (*ARCH_PROFILES, *found):
        if arch in found:
            return arch
    return None


def arch_from_text(text: str) -> str | None:
    """A Debian architecture named as a word in text (.disk/info, volume id, file name)."""
    match = _ARCH_WORD.search(text.lower())
    return match.group(1) if match else None


def _iso_efi_names(iso: Path) -> list[str]:
    """Names in the ISO's /EFI/boot (any case), read with xorriso; [] when unreadable."""
    try:
        proc = subprocess.run(
            [*XORRISO_READ, str(iso), "-lsd", "/EFI/boot/*", "-lsd", "/EFI/BOOT/*"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    names = []
    for line in proc.stdout.splitlines():
        line = line.strip().strip("'")
        if line:
            names.append(line)
    return names


def _iso_text_file(iso: Path, path: str) -> str:
    """A small text file of the ISO (e.g. /.disk/info), "" when missing or unreadable."""
    with tempfile.TemporaryDirectory(prefix="deblive-isoinfo-") as tmp:
        dest = Path(tmp) / "file"
        try:
            subprocess.run(
                [*XORRISO_READ, str(iso), "-osirrox", "on", "-extract", path, str(dest)],
                capture_output=True,
                timeout=60,
                check=False,
            )
            return dest.read_text(encoding="utf-8", errors="replace")[:4096]
        except (OSError, subprocess.TimeoutExpired):
            return ""


def iso_architecture(iso: Path, default: str = "amd64") -> str:
    """The Debian architecture an ISO boots: from its EFI boot file names
    (EFI/boot/bootaa64.efi: arm64), else its /.disk/info, else its file name,
    else default.
    """
    arch = arch_from_efi_names(_iso_efi_names(iso))
    if arch is None:
        arch = arch_from_text(_iso_text_file(iso, "/.disk/info"))
    if arch is None:
        arch = arch_from_text(iso.name)
    return arch or default
