"""Extended tier: a netboot-only build booted over PXE in every firmware mode (BIOS
through PXELINUX; UEFI and UEFI with Secure Boot through shim and Debian's
signed network grub), the squashfs fetched over HTTP each time."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deblive.boottest.modes import PXE_MODES
from deblive.boottest.run import ModeResult, TestOptions, run_tests
from deblive.core.log import BuildLog
from tests.extended.test_flavours_extended import artifacts

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.extended


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("netboot")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = base / "netboot.yaml"
    # A URL path below the server's root, and only the netboot format: no ISO at all.
    config.write_text("name: netext\nformats: [netboot]\n"
                      f"netboot: {{url: 'http://10.0.2.2:{port}/lab/bookworm'}}\n"
                      "boot: {timeout: 1}\nsquashfs: {compression: zstd, level: 3}\n")
    out = base / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "deblive", "build", str(config), "-o", str(out), "--workdir",
         str(base / "work")],
        capture_output=True, text=True, timeout=3600, cwd=REPO, stdin=subprocess.DEVNULL)
    (base / "output.txt").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert not list(out.glob("*.iso")) and not list(out.glob("*.img"))
    report = json.loads((out / "report.json").read_text())
    assert "netboot/live/filesystem.squashfs" in [o["name"] for o in report["outputs"]]
    yield out / "netboot"


@pytest.fixture(scope="module")
def pxe(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModeResult]:
    options = TestOptions(output=artifacts(tmp_path_factory, "boot-pxe"))
    return {r.mode: r for r in run_tests(tree, list(PXE_MODES), options, BuildLog())}


@pytest.mark.parametrize("mode", [str(m) for m in PXE_MODES])
def test_the_netboot_tree_boots_over_pxe(pxe: dict[str, ModeResult], mode: str) -> None:
    result = pxe[mode]
    assert result.result == "pass", "\n".join(result.failures) + "\n" + result.serial_log
    checks = {c.name: c for c in result.checks}
    assert checks["fetched"].ok and checks["http-fetch"].ok, checks
