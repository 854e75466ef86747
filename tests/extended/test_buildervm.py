"""Extended tier: an image built inside the throwaway builder VM, then booted.

Under TCG (this machine's KVM fails on real boots) a build in the VM takes
many times as long as on the host, so the full build is here; the CI tier
(tests/integration/test_buildervm.py) makes the builder, boots it and checks
that the guest's result comes back.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from deblive.boottest.modes import BootMode
from deblive.boottest.run import TestOptions, run_tests
from deblive.core.log import BuildLog
from deblive.host.configfile import default_config_text
from tests.integration.conftest import ARTIFACTS, Build, build

pytestmark = pytest.mark.extended


@pytest.fixture(scope="session")
def vm_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    base = tmp_path_factory.mktemp("vmbuild")
    config = base / "images" / "default.yaml"
    config.parent.mkdir()
    data = yaml.safe_load(default_config_text())
    data["name"] = "vmbuilt"  # the ISO's name shows the guest read this very file
    config.write_text(yaml.safe_dump(data))
    result = build(config, base, "--vm")
    console = base / "out" / "logs" / "builder-console.log"
    if not console.exists():
        console = base / "work" / "console.log"  # a failed run keeps it there
    if console.exists():
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(console, ARTIFACTS / "builder-vm-console.log")
    assert result.returncode == 0, result.output[-4000:]
    return result


def test_vm_build_writes_the_same_results_plus_the_builders_console(vm_build: Build) -> None:
    out = vm_build.outdir
    for name in ("filesystem.squashfs", "filesystem.packages", "build.log", "report.json",
                 "SHA256SUMS", "logs/builder-console.log", "logs/builder.log"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["result"] == "success"
    console = (out / "logs/builder-console.log").read_text()
    # The build ran in the guest (its init and its hostname), not on the host.
    assert "deblive-builder: running the build" in console
    assert "deblive-builder: the build ended with status 0" in console
    builder_log = (out / "logs/builder.log").read_text()
    assert "builder VM accelerator:" in builder_log
    # Throwaway: the work disk, the control directory, the whole run directory are gone.
    assert not vm_build.workdir.exists()


def test_vm_build_reads_its_config_at_the_hosts_path(vm_build: Build) -> None:
    assert vm_build.iso.name.startswith("vmbuilt-")
    assert "building vmbuilt:" in (vm_build.outdir / "build.log").read_text()


def test_vm_built_image_boots(vm_build: Build, tmp_path: Path) -> None:
    results = run_tests(vm_build.iso, [BootMode.UEFI_USB], TestOptions(output=tmp_path), BuildLog())
    assert results[0].result == "pass", results[0].failures
