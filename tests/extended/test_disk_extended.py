"""Extended tier: the disk image booted in all six firmware modes, persistence
across a reboot of the same stick on BIOS and on UEFI, and an encrypted (LUKS2)
persistence partition opened with its passphrase at live-boot's prompt."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deblive.boottest.modes import MEDIUM_MODES, BootMode
from deblive.boottest.persistence import run_persistence
from deblive.boottest.run import ModeResult, TestOptions, run_tests
from deblive.core.log import BuildLog
from tests.extended.test_flavours_extended import artifacts

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.extended


def _build_disk(base: Path, name: str, persistence: str) -> Path:
    config = base / f"{name}.yaml"
    config.write_text(f"name: {name}\nformats: [disk]\npersistence: {persistence}\n"
                      "boot: {default: persistence, timeout: 1}\n"
                      "squashfs: {compression: zstd, level: 3}\n")
    out = base / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "deblive", "build", str(config), "-o", str(out), "--workdir",
         str(base / "work")],
        capture_output=True, text=True, timeout=3600, cwd=REPO, stdin=subprocess.DEVNULL)
    (base / "output.txt").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert not list(out.glob("*.iso"))  # formats: [disk] only
    report = json.loads((out / "report.json").read_text())
    [img] = [o["name"] for o in report["outputs"] if o["name"].endswith(".img")]
    return out / str(img)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield _build_disk(tmp_path_factory.mktemp("disk"), "diskext", "{size: 128MiB, label: keep}")


@pytest.fixture(scope="module")
def six(image: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModeResult]:
    options = TestOptions(output=artifacts(tmp_path_factory, "boot-disk"), jobs=2)
    return {r.mode: r for r in run_tests(image, list(MEDIUM_MODES), options, BuildLog())}


@pytest.mark.parametrize("mode", [str(m) for m in MEDIUM_MODES])
def test_the_disk_image_boots_in_every_mode(six: dict[str, ModeResult], mode: str) -> None:
    result = six[mode]
    assert result.result == "pass", "\n".join(result.failures) + "\n" + result.serial_log


@pytest.mark.parametrize("mode", [BootMode.BIOS_USB, BootMode.UEFI_USB])
def test_persistence_with_a_label_survives_a_reboot(
        image: Path, mode: BootMode, tmp_path_factory: pytest.TempPathFactory) -> None:
    options = TestOptions(output=artifacts(tmp_path_factory, f"persistence-{mode}"))
    results = run_persistence(image, [mode], options, BuildLog())
    assert [r.result for r in results] == ["pass", "pass"], [
        "\n".join(r.failures) for r in results]
    assert [r.mode for r in results] == [f"{mode} boot 1", f"{mode} boot 2"]


PASSPHRASE = "correct horse battery"


def test_an_encrypted_persistence_partition_is_opened_with_its_passphrase(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    image = _build_disk(tmp_path_factory.mktemp("luks"), "luksext",
                        f"{{size: 96MiB, encryption: luks, passphrase: '{PASSPHRASE}'}}")
    options = TestOptions(output=artifacts(tmp_path_factory, "persistence-luks"),
                          passphrase=PASSPHRASE)
    results = run_persistence(image, [BootMode.BIOS_USB], options, BuildLog())
    assert [r.result for r in results] == ["pass", "pass"], [
        "\n".join(r.failures) for r in results]
    for result in results:
        assert "typed the LUKS passphrase at live-boot's prompt" in result.notes
        assert any("/dev/mapper/" in c.name and c.ok for c in result.checks), result.checks
    assert PASSPHRASE not in Path(results[0].serial_log).read_text(errors="replace")
