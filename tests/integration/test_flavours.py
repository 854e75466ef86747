"""CI tier: the standard and one desktop flavour's config validate and plan (the other
desktops plan in the extended tier, tests/extended/test_flavours_extended.py); the
standard flavour's config is built with its installer entries, languages and
metapackage (its Install entry is booted to d-i's hostname question in the
extended tier).

To keep CI cheap the build swaps live-task-standard (1136 packages, 6.5 minutes here)
for task-ssh-server (191) and uses lz4: what is tested here is the medium the config
makes, not the task's packages. The extended tier builds and boots the flavours whole.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, Build, build, extract_iso, run_deblive, unsquash

EXAMPLES = REPO / "examples"
SMALL_TASK = "task-ssh-server"
FLAVOURS = ("standard", "xfce", "gnome", "kde", "lxqt", "mate", "cinnamon", "lxde")
CI_FLAVOURS = FLAVOURS[:2]  # 30 s a plan here: the other six plan in the extended tier
# Answers d-i's first questions (language, country, keyboard); it then asks the hostname.
PRESEED = """\
d-i debian-installer/locale string en_US.UTF-8
d-i debian-installer/language string en
d-i debian-installer/country string US
d-i keyboard-configuration/xkb-keymap select us
d-i netcfg/choose_interface select auto
"""


def check_flavour_plan(flavour: str) -> None:
    """The flavour's config validates and its plan holds the flavour's tasks."""
    config = EXAMPLES / f"{flavour}.yaml"
    proc = run_deblive("validate", config)
    assert proc.returncode == 0, proc.stderr
    proc = run_deblive("plan", config, "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    names = {p["name"] for p in result["packages"]}
    assert {f"live-task-{flavour}", "live-boot", "live-config", "wpasupplicant"} <= names
    if flavour != "standard":
        assert {f"task-{flavour}-desktop", "calamares-settings-debian"} <= names
    assert result["total"]["packages"] > result["base"]["packages"] > 50
    assert result["total"]["installed_bytes"] > result["total"]["download_bytes"] > 0
    assert result["installer_package"].startswith("debian-installer-")


@pytest.mark.parametrize("flavour", CI_FLAVOURS)
def test_flavour_validates_and_plans(flavour: str) -> None:
    check_flavour_plan(flavour)


def test_unknown_package_stops_plan_and_build_early(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("name: bad\nsuite: bookworm\npackages: [wpasupplicant, no-such-pkg-x]\n")
    proc = run_deblive("plan", config)
    assert proc.returncode == 2 and "no-such-pkg-x" in proc.stderr, proc.stderr
    assert "wpasupplicant" not in proc.stderr
    proc = run_deblive("build", config, "-o", tmp_path / "out", "--workdir", tmp_path / "work",
                       timeout=300)
    assert proc.returncode == 2 and "no-such-pkg-x" in proc.stderr, proc.stderr
    assert not (tmp_path / "work").exists()  # stopped before anything was touched


def test_metapackage_passes_dpkg_deb_and_lintian(tmp_path: Path) -> None:
    proc = run_deblive("metapackage", EXAMPLES / "standard.yaml", "-o", tmp_path)
    assert proc.returncode == 0, proc.stderr
    deb = Path(proc.stdout.strip())
    assert deb.name.startswith("standard-live-task_") and deb.is_file()
    subprocess.run(["dpkg-deb", "--info", str(deb)], check=True, capture_output=True)
    if shutil.which("lintian") is None:
        pytest.fail("lintian is not installed (apt-get install lintian)")
    lint = subprocess.run(["lintian", str(deb)], capture_output=True, text=True)
    errors = [line for line in lint.stdout.splitlines() if line.startswith("E:")]
    assert lint.returncode == 0 and not errors, lint.stdout + lint.stderr


@pytest.fixture(scope="session")
def standard_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """examples/standard.yaml with a small task, lz4 and a preseed for the installer test."""
    base = tmp_path_factory.mktemp("standard")
    data = yaml.safe_load((EXAMPLES / "standard.yaml").read_text())
    data["squashfs"] = {"compression": "lz4"}
    data["tasks"] = [SMALL_TASK]
    data["installer"]["preseed"] = "preseed.cfg"
    (base / "preseed.cfg").write_text(PRESEED)
    config = base / "standard.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True))
    result = build(config, base)
    assert result.returncode == 0, result.output[-4000:]
    return result


@pytest.fixture(scope="session")
def standard_iso(standard_build: Build) -> Path:
    return standard_build.iso


@pytest.fixture(scope="session")
def standard_medium(standard_iso: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_iso(standard_iso, tmp_path_factory.mktemp("stdmedium") / "m")


def test_medium_carries_the_installer_and_preseed(standard_medium: Path) -> None:
    inst = standard_medium / "install.amd"
    for rel in ("vmlinuz", "initrd.gz", "gtk/vmlinuz", "gtk/initrd.gz", "preseed.cpio.gz"):
        assert (inst / rel).is_file(), rel
    assert (standard_medium / "preseed.cfg").read_text() == PRESEED
    iso_menu = (standard_medium / "isolinux/menu.cfg").read_text()
    grub = (standard_medium / "boot/grub/grub.cfg").read_text()
    for text in (iso_menu, grub):
        for label in ("Graphical install", "Install", "Advanced options", "Expert install",
                      "Install with speech synthesis", "Languages", "Live system (Deutsch)"):
            assert label in text, label
    assert "INITRD /install.amd/initrd.gz,/install.amd/preseed.cpio.gz" in iso_menu
    assert "initrd /install.amd/initrd.gz /install.amd/preseed.cpio.gz" in grub
    assert re.search(r"locales=de_DE\.UTF-8 keyboard-layouts=de console=tty0", grub)


def test_image_has_metapackage_and_language_locales(
    standard_build: Build, tmp_path: Path
) -> None:
    tree = unsquash(standard_build.path("filesystem.squashfs"), tmp_path / "t",
                    "var/lib/dpkg/status", "var/lib/apt/extended_states", "usr/lib/locale")
    status = (tree / "var/lib/dpkg/status").read_text()
    assert re.search(r"^Package: standard-live-task\nStatus: install ok installed$", status,
                     re.MULTILINE), "metapackage not installed"
    states = (tree / "var/lib/apt/extended_states").read_text()
    assert re.search(rf"^Package: {SMALL_TASK}\nArchitecture: \S+\nAuto-Installed: 1$",
                     states, re.MULTILINE), "dependencies not marked automatic"
    # localedef names the directory by glibc's normalised codeset (UTF-8 -> utf8).
    for locale in ("de_DE.utf8", "es_ES.utf8", "fr_FR.utf8"):
        assert (tree / "usr/lib/locale" / locale / "LC_CTYPE").is_file(), locale
    assert "standard-live-task" in standard_build.path("filesystem.packages").read_text()
