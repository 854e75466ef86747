"""Extended tier: the default image built for arm64 (a foreign architecture here:
mmdebstrap and the chroot run through qemu-user), then booted with `deblive test`'s
machinery in qemu-system-aarch64 (virt, AAVMF, TCG) from a CD, logged in on ttyAMA0.

The image carries a devicetree (seed point 8): qemu's own virt DTB (-machine dumpdtb=)
with its model renamed, next to the config; grub loads it, so the booted kernel's
/proc/device-tree/model names it (booted by the firmware's ACPI it would not exist).

Artifacts (serial logs, results.json) go to $DEBLIVE_ARTIFACTS or the pytest temp dir.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from deblive.boottest.medium import read_entries
from deblive.boottest.modes import BootMode
from deblive.boottest.run import TestOptions, run_tests
from deblive.core.log import BuildLog
from deblive.model.arch import Arch
from deblive.vm.command import Accel, VMSpec, build_command
from deblive.vm.firmware import select_firmware
from tests.extended.buildkit import SLOW_CONSOLE_CMDLINE, build_iso
from tests.extended.test_flavours_extended import artifacts

pytestmark = pytest.mark.extended


DTB_MODEL = "deblive-test-virt"


def virt_devicetree(dest: Path) -> None:
    """qemu virt's DTB for the boot test's own machine, renamed.

    The dump comes from the command line the boot test runs (AAVMF in pflash, -cpu
    max, 2 CPUs, 2 GiB): with firmware loaded, virt leaves out the PL061 GPIO that
    the firmware's ACPI owns, and a kernel given the DTB of virt without firmware
    dies of a synchronous external abort probing that GPIO at 0x9030000.
    """
    qemu = Arch.ARM64.qemu
    assert qemu is not None
    firmware = select_firmware("uefi", qemu)
    assert firmware is not None and firmware.vars_template is not None
    vars_file = dest.with_suffix(".vars.fd")
    shutil.copyfile(firmware.vars_template, vars_file)
    spec = VMSpec(arch=Arch.ARM64, accel=Accel.TCG, firmware=firmware, vars_file=vars_file,
                  display=False)
    dumped = dest.with_suffix(".orig.dtb")
    argv = build_command(spec)
    machine = argv.index("-machine") + 1
    argv[machine] += f",dumpdtb={dumped}"
    subprocess.run(argv, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    source = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(dumped)], check=True,
                            capture_output=True, text=True).stdout
    assert 'model = "linux,dummy-virt";' in source
    assert "pl061@9030000" not in source  # the firmware's machine, as booted
    source = source.replace('model = "linux,dummy-virt";', f'model = "{DTB_MODEL}";')
    subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-o", str(dest)], input=source,
                   check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def arm64_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("arm64")
    virt_devicetree(base / "virt.dtb")
    config = base / "arm64.yaml"
    config.write_text("name: deblive\narchitecture: arm64\ndevicetree: virt.dtb\n"
                      f"boot: {{cmdline: {SLOW_CONSOLE_CMDLINE}}}\n")
    iso, _ = build_iso(config, base)
    return iso


def test_arm64_iso_is_detected_and_boots_uefi_cd(
    arm64_iso: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    entries = read_entries(arm64_iso)
    assert entries is not None and entries.architecture is Arch.ARM64
    out = artifacts(tmp_path_factory, "arm64-boot")
    assert entries.menu is not None and entries.menu.devicetree == "/live/devicetree.dtb"
    model = f"tr -d '\\0' < /proc/device-tree/model | grep -qx {DTB_MODEL}"
    results = run_tests(arm64_iso, [BootMode.UEFI_CD], TestOptions(output=out, expect=(model,)),
                        BuildLog())
    [result] = results
    assert result.result == "pass", f"{result.mode}: {result.failures}"
    assert result.accel == "tcg"
    names = {check.name: check for check in result.checks}
    assert names["firmware"].ok and names["system-running"].ok and names["machine"].ok
    assert names[f"expect: {model}"].ok, result.checks  # the kernel runs on our devicetree
    serial = Path(result.serial_log).read_text(encoding="utf-8", errors="replace")
    assert "ttyAMA0" in serial  # getty's banner: the PL011 serial console
    data = json.loads((out / "results.json").read_text())
    assert data["passed"] is True
