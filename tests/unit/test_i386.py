"""i386 media and the up-front refusal of what cannot boot (architecture x suite).

i386 runs on amd64's CPU itself: no qemu-user for its bootstrap, KVM where it works.
Its medium boots BIOS (ISOLINUX) and 32-bit UEFI (Debian's signed shimia32 and
gcdia32); ovmf-ia32 has no varstore with enrolled keys, so Secure Boot is not tested.
No root, no qemu started.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deblive.boottest.modes import BootMode
from deblive.host import preflight
from deblive.model.arch import Arch, QemuSystem
from deblive.model.suites import ReleaseTable
from deblive.vm.command import Accel, Media, VMSpec, build_command
from deblive.vm.errors import QemuError
from deblive.vm.firmware import select_firmware
from tests.support import firmware
from tests.unit.test_vm import option_value

from . import conftest

RELEASES = ReleaseTable.from_csv(
    "version,codename,series,created,release,eol\n"
    "11,Bullseye,bullseye,2019-07-06,2021-08-14,2024-08-14\n"
    "12,Bookworm,bookworm,2021-08-14,2023-06-10,2026-06-10\n"
    "13,Trixie,trixie,2023-06-10,2025-08-09,\n"
    "14,Forky,forky,2025-08-09,,\n"
    ",Sid,sid,1993-08-16,,\n")
_i386 = Arch.I386.qemu
assert _i386 is not None
I386: QemuSystem = _i386


@pytest.mark.parametrize(("arch", "suite", "bootable"), [
    (Arch.AMD64, "bullseye", True), (Arch.AMD64, "sid", True), (Arch.ARM64, "trixie", True),
    (Arch.I386, "bookworm", True), (Arch.I386, "trixie", False), (Arch.I386, "sid", False),
    (Arch.ARMHF, "bookworm", True), (Arch.S390X, "trixie", False),
    (Arch.RISCV64, "bookworm", False), (Arch.RISCV64, "trixie", True),
    (Arch.PPC64EL, "bullseye", False), (Arch.PPC64EL, "bookworm", True),
    (Arch.MIPS64EL, "bookworm", False), (Arch.ARMEL, "bookworm", False),
])
def test_which_architecture_boots_from_which_suite(arch: Arch, suite: str,
                                                   bootable: bool) -> None:
    why = arch.boot_refusal(suite, RELEASES)
    assert (why is None) is bootable, why
    if why is not None:
        assert f"no bootable medium for {arch} from {suite}" in why
        assert "i386 (bullseye to bookworm)" in why and "amd64 (bullseye and later)" in why
        assert "--no-iso" in why


def test_the_refusal_names_the_file_and_the_key_and_why() -> None:
    cfg = conftest.parse({"name": "x", "suite": "trixie", "architecture": "i386"})
    with pytest.raises(preflight.PreflightError) as caught:
        preflight.check_bootable(cfg, RELEASES)
    text = str(caught.value)
    assert text.startswith("/cfg/demo.yaml: architecture: no bootable medium for i386 from trixie")
    assert "not in trixie (only bullseye to bookworm)" in text
    preflight.check_bootable(conftest.parse({"name": "x", "suite": "bookworm",
                                             "architecture": "i386"}), RELEASES)


def test_validate_refuses_an_unbootable_architecture_unless_no_iso(tmp_path: Path) -> None:
    for arch, suite in (("riscv64", "bookworm"), ("i386", "trixie")):
        path = tmp_path / f"{arch}.yaml"
        path.write_text(f"name: x\nsuite: {suite}\narchitecture: {arch}\n")
        proc = subprocess.run([sys.executable, "-m", "deblive", "validate", str(path)],
                              capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert f"{path}: architecture: no bootable medium for {arch} from {suite}" in proc.stderr
        proc = subprocess.run([sys.executable, "-m", "deblive", "validate", "--no-iso",
                               str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_i386_runs_natively_on_amd64_only() -> None:
    assert not Arch.I386.is_foreign(Arch.AMD64)
    assert Arch.I386.is_foreign(Arch.ARM64)
    assert Arch.AMD64.is_foreign(Arch.I386)  # the other way round it does not


def test_the_i386_layout_takes_debians_signed_32_bit_uefi_loaders() -> None:
    layout = Arch.I386.boot
    assert layout is not None and layout.bios and layout.efi_suffix == "ia32"
    assert {"grub-efi-ia32-signed", "shim-signed", "shim-helpers-i386-signed",
            "isolinux"} <= set(layout.packages)
    assert (layout.grub_efi_dir, layout.grub_platform) == ("i386-efi-signed", "i386-efi")
    assert Arch.I386.kernel_package == "linux-image-686-pae"


def spec(firmware_kind: str, **kw: Any) -> VMSpec:
    fw = select_firmware(firmware_kind, I386, [], exists=lambda _: True)  # type: ignore[arg-type]
    base: dict[str, Any] = {
        "arch": Arch.I386, "accel": Accel.TCG, "qmp_socket": Path("/run/t/qmp.sock"),
        "media": Media(Path("/img/live-i386.iso"), "cd"), "firmware": fw,
        "vars_file": None if fw is None else Path("/run/t/vars.fd"),
    }
    base.update(kw)
    return VMSpec(**base)


def test_i386_boots_in_qemu_system_i386_on_q35() -> None:
    bios = build_command(spec("bios"))
    assert bios[0] == "qemu-system-i386" and option_value(bios, "-machine") == ["q35"]
    assert option_value(bios, "-cpu") == ["max"]  # the 686-pae kernel needs PAE
    uefi = build_command(spec("uefi"))
    # ovmf-ia32's one build keeps its varstore in SMM, with or without Secure Boot.
    assert option_value(uefi, "-machine") == ["q35,smm=on"]
    assert any("OVMF32_CODE_4M.secboot.fd" in value for value in option_value(uefi, "-drive"))


def test_i386_firmware_from_its_descriptor_and_no_secure_boot(tmp_path: Path) -> None:
    (tmp_path / "50-edk2-i386-secure.json").write_text(firmware.descriptor(
        "/o/OVMF32_CODE_4M.secboot.fd", "/o/OVMF32_VARS_4M.fd",
        ["requires-smm", "secure-boot"], ["pc-q35-*"], arch="i386"))
    plain = select_firmware("uefi", I386, [tmp_path], exists=lambda _: True)
    # The descriptor's build is a Secure Boot one: plain UEFI takes the known paths, the
    # same build with its empty varstore, which boots anything (and needs SMM).
    assert plain is not None and not plain.secure_boot and plain.requires_smm
    assert plain.code == Path("/usr/share/OVMF/OVMF32_CODE_4M.secboot.fd")
    with pytest.raises(QemuError, match=r"i386 secureboot firmware with enrolled keys.*ovmf-ia32"):
        select_firmware("secureboot", I386, [tmp_path], exists=lambda _: True)
    reason = BootMode.SECUREBOOT_USB.not_applicable(Arch.I386)
    assert reason is not None and reason.startswith("secureboot-usb: not applicable")
    assert BootMode.BIOS_CD.not_applicable(Arch.I386) is None
