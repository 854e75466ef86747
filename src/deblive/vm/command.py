"""The one place a qemu command line is built, for test VMs and builder VMs alike.

A VMSpec says everything that decides the command line; build_command() is a
pure function of it, so every mode's flags can be checked without starting
qemu. -nodefaults drops the default NIC (whose iPXE ROM slows BIOS boots),
the default monitor and serial; what a VM gets back is exactly what its spec
names: one serial port on stdio (virt: its PL011, the guest's ttyAMA0;
pseries: the hypervisor's virtual terminal, spapr-vty, the guest's hvc0), an
entropy source (a TCG guest can wait long for random numbers without one),
and as asked a screen and keyboard, QMP, media, disks, 9p shares, a network.
qemu runs with its seccomp sandbox on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from deblive.model.arch import Arch, QemuSystem
from deblive.vm.errors import QemuError
from deblive.vm.firmware import Firmware

MediaKind = Literal["cd", "usb"]
# qemu's seccomp filter: no obsolete system calls, no privilege changes, no
# new processes, no resource limits changed. A VM whose network forwards to a
# command (the builder VM's guestfwd runs its proxy per connection) must spawn,
# and its children inherit the filter: Python does not start under
# elevateprivileges=deny, so that one VM keeps it.
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
SANDBOX_SPAWNING = "on,obsolete=deny,spawn=allow,resourcecontrol=deny"


class Accel(enum.StrEnum):
    KVM = "kvm"
    TCG = "tcg"


def escape(value: str | Path) -> str:
    """A value inside a qemu option list: commas are doubled."""
    return str(value).replace(",", ",,")


@dataclass(frozen=True)
class Media:
    """The ISO as a CD or as a USB stick; writable: the stick keeps what the guest
    writes (a copy of a disk image, for persistence), else qemu's snapshot does."""

    path: Path
    kind: MediaKind
    writable: bool = False


@dataclass(frozen=True)
class DirectKernel:
    """Boot a kernel directly (no boot loader)."""

    kernel: Path
    initrd: Path
    append: str


@dataclass(frozen=True)
class Disk:
    """A raw virtio disk; snapshot keeps the file unchanged whatever the guest writes."""

    path: Path
    snapshot: bool = False
    scratch: bool = False  # a throwaway work disk: no flushing, discard passed down


@dataclass(frozen=True)
class Share:
    """A host directory shared over 9p.

    Writable shares use security_model=mapped-xattr: the guest's owners, modes,
    setuid bits, device nodes and symlinks are kept in extended attributes of
    plain files owned by the host user, so nothing a guest writes becomes a
    setuid file, a device node or a symlink on the host. Read-only shares
    need no mapping (none).
    """

    tag: str
    path: Path
    writable: bool

    def args(self, index: int) -> list[str]:
        model = "mapped-xattr" if self.writable else "none,readonly=on"
        return [
            "-fsdev", f"local,id=fs{index},path={escape(self.path)},security_model={model}",
            "-device", f"virtio-9p-pci,fsdev=fs{index},mount_tag={self.tag}",
        ]


@dataclass(frozen=True)
class UserNetwork:
    """qemu's user network. restrict cuts the guest off from everything (the host's
    127.0.0.1 services too) but the guestfwd entries: tcp:IP:PORT-cmd:COMMAND.

    tftp: a directory qemu's built-in TFTP server serves, bootfile the file its
    DHCP names: the NIC is then the first boot device (PXE). pxe_rom keeps the
    NIC's iPXE option ROM, which a BIOS needs to boot from the network; UEFI
    firmware (OVMF) has a network stack of its own and boots without it.
    """

    restrict: bool = False
    guestfwd: tuple[str, ...] = ()
    tftp: Path | None = None
    bootfile: str | None = None
    pxe_rom: bool = False

    def args(self) -> list[str]:
        options = ["user", "id=net0"]
        if self.restrict:
            options.append("restrict=on")
        options += [f"guestfwd={escape(rule)}" for rule in self.guestfwd]
        if self.tftp is not None:
            options.append(f"tftp={escape(self.tftp)}")
        if self.bootfile is not None:
            options.append(f"bootfile={escape(self.bootfile)}")
        device = "virtio-net-pci,netdev=net0"
        if not self.pxe_rom:
            device += ",romfile="
        if self.tftp is not None:
            device += ",bootindex=1"
        return ["-netdev", ",".join(options), "-device", device]


@dataclass(frozen=True)
class VMSpec:
    """Everything that decides a qemu command line."""

    arch: Arch
    accel: Accel
    name: str = "deblive-vm"
    memory_mib: int = 2048
    smp: int = 2
    firmware: Firmware | None = None
    vars_file: Path | None = None  # the per-run copy of firmware.vars_template
    media: Media | None = None
    direct_kernel: DirectKernel | None = None
    disks: tuple[Disk, ...] = ()
    shares: tuple[Share, ...] = ()
    network: UserNetwork | None = None
    qmp_socket: Path | None = None
    display: bool = True  # a screen QMP's screendump reads, and a keyboard

    @property
    def qemu(self) -> QemuSystem:
        qemu = self.arch.qemu
        if qemu is None:
            raise QemuError(f"deblive cannot run {self.arch} guests")
        return qemu

    @property
    def virt(self) -> bool:
        return self.qemu.machine == "virt"


def _machine_args(spec: VMSpec) -> list[str]:
    qemu = spec.qemu
    machine = qemu.machine
    if spec.firmware is not None and spec.firmware.requires_smm:
        machine += ",smm=on"
    args = ["-machine", machine, "-accel", str(spec.accel)]
    # KVM: the host CPU. TCG: on x86 qemu's default model, the fastest to
    # emulate; virt has no usable default (cortex-a15 is 32-bit), and "max"
    # runs every arm64 kernel.
    if spec.accel is Accel.KVM:
        args += ["-cpu", "host"]
    elif qemu.tcg_cpu is not None:
        args += ["-cpu", qemu.tcg_cpu]
    return args


def _firmware_args(spec: VMSpec) -> list[str]:
    if spec.firmware is None or spec.firmware.open_firmware:
        return []  # SeaBIOS; SLOF: qemu loads its own slof.bin
    if spec.firmware.u_boot:
        # qemu's default OpenSBI (-bios default) starts what -kernel loads: U-Boot.
        if spec.direct_kernel is not None:
            raise QemuError("U-Boot is loaded as qemu's -kernel: no direct kernel boot with it")
        return ["-kernel", str(spec.firmware.code)]
    if spec.vars_file is None:
        raise QemuError("UEFI needs a per-run copy of the variable store")
    args = [
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={escape(spec.firmware.code)}",
        "-drive", f"if=pflash,format=raw,unit=1,file={escape(spec.vars_file)}",
    ]
    if spec.firmware.requires_smm:
        # Without this the guest could write the varstore around SMM and
        # Secure Boot would not be enforced.
        args += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    return args


def _xhci(spec: VMSpec) -> bool:
    """An xHCI controller: for a USB stick, and on virt for its USB keyboard."""
    usb = (spec.media is not None and spec.media.kind == "usb"
           and (spec.firmware is None or spec.firmware.boots_usb))
    return usb or (spec.virt and spec.display)


def _media_args(spec: VMSpec) -> list[str]:
    """The ISO as a CD (q35: the built-in AHCI; virt, which has no IDE: virtio-scsi;
    pseries: its virtual SCSI, which SLOF boots from), or as a USB stick on xHCI:
    the same file as a raw disk with snapshot=on, so the guest may write and the
    ISO is never modified. Under U-Boot, which boots no USB, the stick is a virtio
    disk."""
    if spec.media is None:
        return []
    iso = escape(spec.media.path)
    if spec.media.kind == "cd":
        cdrom = f"if=none,id=media,media=cdrom,readonly=on,format=raw,file={iso}"
        controller = "virtio-scsi-pci" if spec.virt else spec.qemu.cd_controller
        if controller is not None:
            return ["-device", f"{controller},id=scsi", "-drive", cdrom,
                    "-device", "scsi-cd,bus=scsi.0,drive=media,bootindex=1"]
        return ["-drive", cdrom, "-device", "ide-cd,drive=media,bootindex=1"]
    snapshot = "" if spec.media.writable else "snapshot=on,"
    drive = ["-drive", f"if=none,id=media,format=raw,{snapshot}file={iso}"]
    if spec.firmware is not None and not spec.firmware.boots_usb:
        return [*drive, "-device", "virtio-blk-pci,drive=media,bootindex=1"]
    return [*drive, "-device", "usb-storage,bus=xhci.0,drive=media,removable=on,bootindex=1"]


def _display_args(spec: VMSpec) -> list[str]:
    """q35: the standard VGA (and its PS/2 keyboard); pseries: the same VGA for the
    screen, no keyboard (SLOF and the login stay on the virtual terminal). virt
    has neither VGA nor PS/2: virtio-gpu (AAVMF drives it for the boot menu, the
    kernel's virtio_gpu after it) and a USB keyboard on the xHCI."""
    if not spec.display:
        return ["-display", "none"]
    if spec.virt:
        return ["-display", "none", "-device", "virtio-gpu-pci", "-device", "usb-kbd,bus=xhci.0"]
    return ["-display", "none", "-vga", "std"]


def _disk_args(spec: VMSpec) -> list[str]:
    args = []
    for disk in spec.disks:
        options = [f"file={escape(disk.path)}", "if=virtio", "format=raw"]
        if disk.snapshot:
            options.append("snapshot=on")
        if disk.scratch:
            options += ["cache=unsafe", "discard=unmap"]
        args += ["-drive", ",".join(options)]
    return args


def build_command(spec: VMSpec) -> list[str]:
    """The full qemu argv for one VM."""
    spawns = spec.network is not None and bool(spec.network.guestfwd)
    argv = [spec.qemu.binary, "-name", spec.name, "-nodefaults", "-no-user-config",
            "-sandbox", SANDBOX_SPAWNING if spawns else SANDBOX]
    argv += _machine_args(spec)
    argv += ["-m", str(spec.memory_mib), "-smp", str(spec.smp)]
    argv += _firmware_args(spec)
    if _xhci(spec):
        argv += ["-device", "qemu-xhci,id=xhci"]
    argv += _display_args(spec)
    argv += _media_args(spec)
    argv += _disk_args(spec)
    for index, share in enumerate(spec.shares):
        argv += share.args(index)
    if spec.network is not None:
        argv += spec.network.args()
    argv += ["-chardev", "stdio,id=serial0,signal=off", "-serial", "chardev:serial0"]
    if spec.qmp_socket is not None:
        argv += ["-qmp", f"unix:{escape(spec.qmp_socket)},server=on,wait=off"]
    argv += ["-device", "virtio-rng-pci", "-no-reboot"]
    if spec.direct_kernel is not None:
        dk = spec.direct_kernel
        argv += ["-kernel", str(dk.kernel), "-initrd", str(dk.initrd), "-append", dk.append]
    return argv
