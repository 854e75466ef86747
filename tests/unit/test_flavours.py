"""The flavour configs in examples/: valid, and shaped as Debian's live flavours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deblive.model import bootmenu

from . import conftest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DESKTOPS = ("xfce", "gnome", "kde", "lxqt", "mate", "cinnamon", "lxde")
FLAVOURS = ("standard", *DESKTOPS)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_flavour_config_is_valid(flavour: str) -> None:
    cfg = conftest.load(EXAMPLES / f"{flavour}.yaml")
    assert cfg.name == flavour
    assert f"live-task-{flavour}" in cfg.tasks
    assert "wpasupplicant" in cfg.packages
    assert cfg.installer is not None and cfg.metapackage.install
    ids = {e.id for e in bootmenu.build_menu(cfg).entries()}
    assert {"live", "install", "installgui", "expert", "speech"} <= ids
    assert any(i.startswith("lang-") for i in ids)


@pytest.mark.parametrize("flavour", DESKTOPS)
def test_desktop_flavour_uses_the_desktop_task(flavour: str) -> None:
    cfg = conftest.load(EXAMPLES / f"{flavour}.yaml")
    assert f"task-{flavour}-desktop" in cfg.tasks


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_validate_command_accepts_it(flavour: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "deblive", "validate",
                           str(EXAMPLES / f"{flavour}.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_desktop_screen_criterion() -> None:
    from deblive.vm import screen
    from tests.support import desktop as sessiontest

    black = bytes(3 * 1000)
    popup = black[: 3 * 900] + bytes(range(256))[: 3 * 80] + b"\xff" * 3 * 20
    wallpaper = bytes((i * 7) % 256 for i in range(3 * 1000))
    for pixels, desktop in ((black, False), (popup, False), (wallpaper, True)):
        colours, share = screen.pixel_stats(pixels, step=1)
        assert sessiontest.looks_like_desktop(colours, share) is desktop, (colours, share)
