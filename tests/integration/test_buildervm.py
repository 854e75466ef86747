"""CI tier: the builder VM is made, boots, reaches the mirror and hands its result back.

A full build inside the VM is in the extended tier (tests/extended/test_buildervm.py):
under TCG it takes many times a host build. Here the guest runs a build whose
package plan names a package the suite lacks: the guest must read the config
at the host's path, fetch the suite's indexes from the mirror through qemu's
network, stop before building, and its exit status (2, bad input) must come
back to the host, with nothing published.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import Build, build


@pytest.fixture(scope="session")
def vm_unknown_package(tmp_path_factory: pytest.TempPathFactory) -> Build:
    base = tmp_path_factory.mktemp("vmplan")
    config = base / "images" / "vmplan.yaml"
    config.parent.mkdir()
    config.write_text("name: vmplan\npackages: [wpasupplicant, no-such-package-deblive]\n")
    return build(config, base, "--vm")


def test_builder_vm_returns_the_guests_status(vm_unknown_package: Build) -> None:
    result = vm_unknown_package
    assert result.returncode == 2, result.output[-3000:]
    assert "no-such-package-deblive" in result.output
    assert "the build in the builder VM failed (status 2)" in result.output
    # Nothing that looks like a result; the console is kept for debugging.
    assert not list(result.outdir.glob("*.iso"))
    assert not (result.outdir / "report.json").exists()
    console = (result.workdir / "console.log").read_text()
    assert "deblive-builder: running the build" in console
    assert "deblive-builder: the build ended with status 2" in console


def test_builder_image_is_cached_with_its_recipe(vm_unknown_package: Build) -> None:
    builders = Path("/var/cache/deblive/builders")
    infos = [json.loads(p.read_text()) for p in builders.glob("*/info.json")]
    assert infos, "no builder image in the cache"
    assert all(int(i["python"].split(".")[1]) >= 11 for i in infos)
    assert not list(builders.glob("*.tmp"))
