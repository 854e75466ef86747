"""Debian architectures and everything deblive knows about each, in one place.

An Arch is a StrEnum (its value is dpkg's name) whose profile() holds the
facts the rest of deblive asks about: the kernel flavour, the qemu-user
binfmt handler, the kernel's serial console, how grub reaches the serial
port, the boot layout of a live medium (boot loader packages, EFI file
names, or Open Firmware's CHRP boot on IBM POWER) and how qemu runs such a
guest. An architecture without a boot layout can still be bootstrapped and
squashed; it cannot get a bootable ISO.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from deblive.model.suites import ReleaseTable


class BootFirmware(enum.StrEnum):
    """The firmware interface that starts a medium's grub: it decides the medium's boot
    records, where grub finds its config, and which boot modes can test the medium."""

    # /EFI/boot/boot<suffix>.efi in efi.img (El Torito EFI entry, appended ESP); grub's
    # prefix /EFI/debian holds the early config in efi.img.
    UEFI = "uefi"
    # Open Firmware (IEEE 1275; SLOF on IBM POWER's pseries): the ISO is one CHRP
    # partition (MBR type 0x96), /ppc/bootinfo.txt names grub's ELF, which carries its
    # early config inside (grub-mkimage --config): there is no FAT image to hold it.
    IEEE1275 = "ieee1275"

    @property
    def efi(self) -> bool:
        """The medium carries efi.img and the /EFI tree."""
        return self is BootFirmware.UEFI

    @property
    def grub_prefix(self) -> str:
        """The prefix linked into a grub deblive makes (grub-mkimage --prefix)."""
        return "/EFI/debian" if self is BootFirmware.UEFI else "/boot/grub"

    @property
    def console_is_serial(self) -> bool:
        """grub's `console` terminal already is the serial console: Open Firmware's
        console on POWER is the hypervisor's virtual terminal (the kernel's hvc0),
        so grub needs no `serial` terminal and no screen terminal beside it."""
        return self is BootFirmware.IEEE1275

    @property
    def text(self) -> str:
        return "UEFI" if self is BootFirmware.UEFI else "Open Firmware"


@dataclass(frozen=True)
class BootLayout:
    """How a live ISO of one architecture boots: BIOS (ISOLINUX) and/or UEFI (shim, grub),
    or Open Firmware (a grub ELF on a CHRP medium).

    efi_suffix is the UEFI architecture's name in file names (x64, aa64):
    bootx64.efi, shimx64.efi.signed, gcdx64.efi.signed ("" without UEFI).
    """

    packages: tuple[str, ...]  # of the target release: downloaded and unpacked, not installed
    efi_suffix: str
    grub_efi_dir: str  # /usr/lib/grub/<dir>: the signed images, or (unsigned) the modules
    grub_platform: str  # grub's name of the firmware platform (x86_64-efi, powerpc-ieee1275)
    bios: bool  # ISOLINUX and an isohybrid MBR too
    installer_dir: str  # debian-installer on the medium, debian-cd's name
    # Downloaded only for the netboot format: PXELINUX for BIOS network boot (the
    # UEFI one, grubnet<suffix>.efi.signed, comes with the signed grub package).
    netboot_packages: tuple[str, ...] = ()
    # The releases whose archive has these packages and a kernel for the architecture
    # (i386 lost its kernels in trixie): oldest and newest codename, None for "and later".
    first_suite: str = "bullseye"
    last_suite: str | None = None
    # grub's `devicetree` (EFI on ARM and RISC-V): a config's DTB replaces the firmware's.
    devicetree: bool = False
    # Debian signs shim and grub for it. Otherwise (armhf) the package holds grub's
    # modules only: the host's grub-mkimage makes the EFI image from them, the
    # firmware starts it directly, and there is no Secure Boot and no network grub.
    signed: bool = True
    firmware: BootFirmware = BootFirmware.UEFI

    def netboot_refusal(self) -> str | None:
        """Why there is no netboot tree for this layout (None: there is one)."""
        if not self.firmware.efi:
            return f"deblive links no network grub for {self.firmware.text}"
        if not self.signed:
            return "Debian signs no network grub for it"
        return None

    def disk_refusal(self) -> str | None:
        """Why there is no disk image for this layout (None: there is one)."""
        if not self.firmware.efi:
            # xorriso's chrp_boot_part is the only MBR partition there may be.
            return ("its medium boots from one CHRP partition over the whole ISO, which "
                    "leaves no room for a persistence partition")
        return None

    def suites_text(self) -> str:
        if self.last_suite is None:
            return f"{self.first_suite} and later"
        return f"{self.first_suite} to {self.last_suite}"


@dataclass(frozen=True)
class QemuSystem:
    """How qemu-system runs a guest of one architecture (boot tests, builder VMs)."""

    binary: str
    package: str  # the Debian package with the binary
    machine: str  # -machine type
    descriptor_machine: str  # a versioned machine name firmware descriptors must match
    qemu_arch: str  # qemu's (and the firmware descriptors') architecture name
    firmware_package: str  # the Debian package with the firmware (UEFI, U-Boot, SLOF)
    firmware_dir: Path
    known_plain: tuple[str, str | None]  # code and varstore without Secure Boot (None: none)
    known_secure: tuple[str, str] | None  # with Secure Boot and enrolled keys, if packaged
    tcg_cpu: str | None  # -cpu under TCG (None: qemu's default model)
    # Cross-architecture TCG is several times slower than TCG of the host's
    # own architecture: timeouts are multiplied by this for a foreign guest.
    foreign_slowdown: float
    secure_boot_needs_smm: bool  # OVMF's Secure Boot build keeps its varstore in SMM
    bios: bool  # the machine has a legacy BIOS (SeaBIOS); otherwise UEFI only
    # The plain UEFI build is OVMF's Secure Boot one with an empty varstore (ovmf-ia32
    # packages no other), which keeps its varstore in SMM too.
    plain_needs_smm: bool = False
    # The known firmware is U-Boot, loaded by qemu's -kernel as the next stage of
    # qemu's own OpenSBI (RISC-V virt; no flash, its EFI variables live in RAM).
    # Debian's qemu-riscv64_smode build boots virtio disks only: no CD (no
    # virtio-scsi driver; its AHCI times out on an ATAPI drive) and no USB.
    known_is_u_boot: bool = False
    # The machine's own firmware is Open Firmware, built into qemu (pseries: SLOF,
    # qemu's slof.bin, known_plain): no flash, no varstore, nothing to pass.
    open_firmware: bool = False
    # The SCSI controller a CD sits on where the machine has no IDE (None: virt's
    # virtio-scsi-pci, q35's built-in AHCI); pseries: its virtual SCSI (spapr-vscsi).
    cd_controller: str | None = None


@dataclass(frozen=True)
class ArchProfile:
    kernel_flavour: str  # linux-image-<flavour>
    qemu_user: str  # qemu-<name> binfmt handler for foreign bootstraps
    machines: tuple[str, ...]  # uname -m values of hosts of this architecture
    serial_tty: str  # the kernel's name of the first serial port (hvc0: POWER's hypervisor)
    grub_uart: bool  # grub drives the PC's UART itself; else the firmware's Serial I/O
    boot: BootLayout | None = None
    qemu: QemuSystem | None = None
    # Host architectures whose CPUs run this one's programs themselves (i386 on amd64):
    # no qemu-user for a bootstrap, KVM for a boot.
    native_on: tuple[str, ...] = ()


class Arch(enum.StrEnum):
    """A Debian architecture, by dpkg's name."""

    AMD64 = "amd64"
    ARM64 = "arm64"
    I386 = "i386"
    ARMHF = "armhf"
    ARMEL = "armel"
    PPC64EL = "ppc64el"
    S390X = "s390x"
    RISCV64 = "riscv64"
    MIPS64EL = "mips64el"

    def profile(self) -> ArchProfile:
        return PROFILES[self]

    @property
    def kernel_package(self) -> str:
        return f"linux-image-{self.profile().kernel_flavour}"

    @property
    def binfmt_name(self) -> str:
        """The binfmt_misc entry of its qemu-user handler (qemu-aarch64...)."""
        return f"qemu-{self.profile().qemu_user}"

    @property
    def serial_tty(self) -> str:
        return self.profile().serial_tty

    @property
    def boot(self) -> BootLayout | None:
        return self.profile().boot

    @property
    def qemu(self) -> QemuSystem | None:
        return self.profile().qemu

    def is_foreign(self, host: Arch) -> bool:
        """Another CPU architecture than the host's: qemu-user and TCG, no KVM."""
        return self is not host and str(host) not in self.profile().native_on

    def boot_refusal(self, codename: str, releases: ReleaseTable) -> str | None:
        """Why no bootable medium of this architecture can be made from codename's
        archive (None if it can), naming what is supported."""
        layout = self.boot
        if layout is not None and not releases.is_older(codename, layout.first_suite) and (
                layout.last_suite is None or not releases.is_older(layout.last_suite, codename)):
            return None
        why = ("deblive has no boot layout for it" if layout is None else
               f"its boot loaders or kernel are not in {codename} "
               f"(only {layout.suites_text()})")
        supported = ", ".join(f"{arch} ({arch.boot.suites_text()})"
                              for arch in Arch if arch.boot is not None)
        return (f"architecture: no bootable medium for {self} from {codename}: {why}; "
                f"bootable: {supported}; --no-iso builds its squashfs only")

    @classmethod
    def from_machine(cls, machine: str) -> Arch | None:
        """The architecture of a kernel's uname -m (x86_64: amd64), None if unknown."""
        for arch, profile in PROFILES.items():
            if machine in profile.machines:
                return arch
        return None

    @classmethod
    def bootable(cls) -> list[Arch]:
        """Architectures deblive makes bootable media for."""
        return [arch for arch in cls if arch.boot is not None]


_OVMF = Path("/usr/share/OVMF")
_AAVMF = Path("/usr/share/AAVMF")

PROFILES: dict[Arch, ArchProfile] = {
    Arch.AMD64: ArchProfile(
        kernel_flavour="amd64", qemu_user="x86_64", machines=("x86_64", "amd64"),
        serial_tty="ttyS0", grub_uart=True,
        boot=BootLayout(
            packages=("isolinux", "syslinux-common", "grub-efi-amd64-signed", "shim-signed",
                      "shim-helpers-amd64-signed"),
            efi_suffix="x64", grub_efi_dir="x86_64-efi-signed", grub_platform="x86_64-efi",
            bios=True, installer_dir="/install.amd", netboot_packages=("pxelinux",),
        ),
        qemu=QemuSystem(
            binary="qemu-system-x86_64", package="qemu-system-x86", machine="q35",
            descriptor_machine="pc-q35-7.2", qemu_arch="x86_64", firmware_package="ovmf",
            firmware_dir=_OVMF, known_plain=("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
            known_secure=("OVMF_CODE_4M.ms.fd", "OVMF_VARS_4M.ms.fd"), tcg_cpu=None,
            foreign_slowdown=3.0, secure_boot_needs_smm=True, bios=True,
        ),
    ),
    Arch.ARM64: ArchProfile(
        kernel_flavour="arm64", qemu_user="aarch64", machines=("aarch64", "arm64"),
        serial_tty="ttyAMA0", grub_uart=False,
        boot=BootLayout(
            packages=("grub-efi-arm64-signed", "shim-signed", "shim-helpers-arm64-signed"),
            efi_suffix="aa64", grub_efi_dir="arm64-efi-signed", grub_platform="arm64-efi",
            bios=False, installer_dir="/install.a64", devicetree=True,
        ),
        qemu=QemuSystem(
            binary="qemu-system-aarch64", package="qemu-system-arm", machine="virt",
            descriptor_machine="virt-7.2", qemu_arch="aarch64",
            firmware_package="qemu-efi-aarch64", firmware_dir=_AAVMF,
            known_plain=("AAVMF_CODE.fd", "AAVMF_VARS.fd"),
            known_secure=("AAVMF_CODE.ms.fd", "AAVMF_VARS.ms.fd"), tcg_cpu="max",
            foreign_slowdown=4.0, secure_boot_needs_smm=False, bios=False,
        ),
    ),
    Arch.I386: ArchProfile(
        kernel_flavour="686-pae", qemu_user="i386", machines=("i686", "i586", "i386"),
        serial_tty="ttyS0", grub_uart=True, native_on=("amd64",),
        # Debian signs shim and grub for 32-bit UEFI too (shimia32, gcdia32).
        boot=BootLayout(
            packages=("isolinux", "syslinux-common", "grub-efi-ia32-signed", "shim-signed",
                      "shim-helpers-i386-signed"),
            efi_suffix="ia32", grub_efi_dir="i386-efi-signed", grub_platform="i386-efi",
            bios=True, installer_dir="/install.386", netboot_packages=("pxelinux",),
            last_suite="bookworm",
        ),
        qemu=QemuSystem(
            binary="qemu-system-i386", package="qemu-system-x86", machine="q35",
            descriptor_machine="pc-q35-7.2", qemu_arch="i386", firmware_package="ovmf-ia32",
            firmware_dir=_OVMF, known_plain=("OVMF32_CODE_4M.secboot.fd", "OVMF32_VARS_4M.fd"),
            known_secure=None, tcg_cpu="max", foreign_slowdown=3.0,
            secure_boot_needs_smm=True, bios=True, plain_needs_smm=True,
        ),
    ),
    Arch.ARMHF: ArchProfile(
        kernel_flavour="armmp", qemu_user="arm", machines=("armv7l", "armv8l"),
        serial_tty="ttyAMA0", grub_uart=False,
        boot=BootLayout(
            packages=("grub-efi-arm-bin",), efi_suffix="arm", grub_efi_dir="arm-efi",
            grub_platform="arm-efi", bios=False, installer_dir="/install.armhf",
            devicetree=True, signed=False,
        ),
        qemu=QemuSystem(
            binary="qemu-system-arm", package="qemu-system-arm", machine="virt",
            descriptor_machine="virt-7.2", qemu_arch="arm", firmware_package="qemu-efi-arm",
            firmware_dir=_AAVMF, known_plain=("AAVMF32_CODE.fd", "AAVMF32_VARS.fd"),
            known_secure=None, tcg_cpu="cortex-a15", foreign_slowdown=4.0,
            secure_boot_needs_smm=False, bios=False,
        ),
    ),
    Arch.ARMEL: ArchProfile(
        kernel_flavour="rpi", qemu_user="arm", machines=("armv5tel", "armv6l"),
        serial_tty="ttyAMA0", grub_uart=False,
    ),
    Arch.PPC64EL: ArchProfile(
        kernel_flavour="powerpc64le", qemu_user="ppc64le", machines=("ppc64le",),
        serial_tty="hvc0", grub_uart=False,
        # IBM POWER boots through Open Firmware; Debian signs no boot loader for it:
        # grub-ieee1275-bin holds grub's modules. From bookworm (grub 2.06), the
        # oldest release this layout was tried with.
        boot=BootLayout(
            packages=("grub-ieee1275-bin",), efi_suffix="", grub_efi_dir="powerpc-ieee1275",
            grub_platform="powerpc-ieee1275", bios=False, installer_dir="/install",
            first_suite="bookworm", signed=False, firmware=BootFirmware.IEEE1275,
        ),
        qemu=QemuSystem(
            binary="qemu-system-ppc64", package="qemu-system-ppc", machine="pseries",
            descriptor_machine="pseries", qemu_arch="ppc64", firmware_package="qemu-system-data",
            firmware_dir=Path("/usr/share/qemu"), known_plain=("slof.bin", None),
            known_secure=None, tcg_cpu=None, foreign_slowdown=5.0,
            secure_boot_needs_smm=False, bios=False, open_firmware=True,
            cd_controller="spapr-vscsi",
        ),
    ),
    Arch.S390X: ArchProfile(
        kernel_flavour="s390x", qemu_user="s390x", machines=("s390x",),
        serial_tty="ttysclp0", grub_uart=False,
    ),
    Arch.RISCV64: ArchProfile(
        kernel_flavour="riscv64", qemu_user="riscv64", machines=("riscv64",),
        serial_tty="ttyS0", grub_uart=False,
        # A release architecture from trixie; Debian signs no boot loader for it.
        boot=BootLayout(
            packages=("grub-efi-riscv64-bin",), efi_suffix="riscv64",
            grub_efi_dir="riscv64-efi", grub_platform="riscv64-efi", bios=False,
            installer_dir="/install.riscv64", first_suite="trixie", devicetree=True,
            signed=False,
        ),
        qemu=QemuSystem(
            binary="qemu-system-riscv64", package="qemu-system-misc", machine="virt",
            descriptor_machine="virt", qemu_arch="riscv64", firmware_package="u-boot-qemu",
            firmware_dir=Path("/usr/lib/u-boot/qemu-riscv64_smode"),
            known_plain=("u-boot.bin", None), known_secure=None, tcg_cpu=None,
            foreign_slowdown=5.0, secure_boot_needs_smm=False, bios=False,
            known_is_u_boot=True,
        ),
    ),
    Arch.MIPS64EL: ArchProfile(
        kernel_flavour="5kc-malta", qemu_user="mips64el", machines=("mips64",),
        serial_tty="ttyS0", grub_uart=False,
    ),
}
