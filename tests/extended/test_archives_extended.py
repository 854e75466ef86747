"""Extended tier: an image with a distribution's own software, built twice and booted.

A shipped signed repository (pinned), a build-only one and local packages, plus
an overlay: built twice without SOURCE_DATE_EPOCH, in other directories, later,
under another umask and time zone. The ISO, the squashfs and the SBOM are
byte-identical, and the ISO boots with the repositories' and local packages'
files in place and no trace of what was for the build only.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from deblive.boottest.modes import BootMode
from deblive.boottest.run import TestOptions, run_tests
from deblive.core.log import BuildLog
from tests.extended.test_flavours_extended import artifacts
from tests.integration.conftest import make_archives
from tests.support import archives

REPO = Path(__file__).resolve().parents[2]
EXPECT = (
    "sh /usr/bin/distro-tool | grep -qx distro",  # the test package ships it 0644
    "test -f /usr/share/build-only-tool/marker",
    "test -f /etc/site-config/site.conf && test -x /usr/games/sl",
    "grep -qx 'Pin-Priority: 600' /etc/apt/preferences.d/deblive-1-127.0.0.1.pref",
    "test ! -e /etc/apt/sources.list.d/deblive-2-127.0.0.1.sources",
    "test ! -e /var/lib/deblive && ! ls /etc/apt/keyrings | grep -q local",
    "test \"$(stat -c %a /etc/deblive-extra/tool.conf)\" = 640",
)

pytestmark = pytest.mark.extended


def _build(config: Path, out: Path, *, umask: int, tz: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["TZ"] = tz
    proc = subprocess.run(
        [sys.executable, "-m", "deblive", "build", str(config), "-o", str(out), "--workdir",
         str(out.with_name(out.name + "-work")), "--force"],
        capture_output=True, text=True, timeout=3600, cwd=REPO, stdin=subprocess.DEVNULL,
        env=env, preexec_fn=lambda: os.umask(umask),
    )
    out.with_name(out.name + "-output.txt").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    base = tmp_path_factory.mktemp("archives")
    with archives.gnupg_home() as home:
        make_archives(base, home)
    overlay = base / "overlay" / "etc" / "deblive-extra"
    overlay.mkdir(parents=True)
    (overlay / "tool.conf").write_text("setting = 1\n")
    (overlay / "tool.conf").chmod(0o640)
    config = base / "own.yaml"
    config.write_text(textwrap.dedent("""\
        name: ownsoft
        packages: [distro-tool, build-only-tool]
        repositories:
          - {uri: "__URL__/shipped", suites: [stable], key: keys/distro.asc, priority: 600}
          - {uri: "__URL__/build-only", suites: [stable], key: keys/build.gpg, ship: false}
        local_packages: [debs]
        overlay: overlay
        squashfs: {compression: zstd, level: 3}
        """))
    with archives.serve(base / "archives") as url:
        config.write_text(config.read_text().replace("__URL__", url))
        _build(config, base / "one" / "out", umask=0o022, tz="UTC")
        _build(config, base / "two" / "deeper" / "out", umask=0o077, tz="America/Los_Angeles")
    yield base / "one" / "out", base / "two" / "deeper" / "out"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_builds_are_identical_iso_squashfs_and_sbom(builds: tuple[Path, Path]) -> None:
    one, two = builds
    names = sorted(p.name for p in one.iterdir()
                   if p.suffix in (".iso", ".squashfs") or p.name.endswith(".spdx.json"))
    assert len(names) == 3, names
    assert {n: _digest(one / n) for n in names} == {n: _digest(two / n) for n in names}
    report = json.loads((one / "report.json").read_text())
    assert report["source_date_epoch_from"] == "release"


def test_the_image_boots_with_its_own_software(builds: tuple[Path, Path],
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    iso = next(builds[0].glob("*.iso"))
    options = TestOptions(output=artifacts(tmp_path_factory, "boot-archives"), jobs=1,
                          expect=EXPECT)
    [result] = run_tests(iso, [BootMode.UEFI_CD], options, BuildLog())
    assert result.result == "pass", "\n".join(result.failures) + "\n" + result.serial_log
    passed = {c.name for c in result.checks if c.ok}
    assert {f"expect: {command}" for command in EXPECT} <= passed, result.checks
