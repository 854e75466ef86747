"""The boot-menu model and its ISOLINUX, grub and loopback renderings."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from deblive.build import menus
from deblive.model import bootmenu, config
from deblive.model.bootmenu import Entry, MenuError, Submenu

from . import conftest


def make_config(**boot: Any) -> config.ImageConfig:
    return conftest.parse({"name": "demo", "boot": boot}, Path("/cfg/demo.yaml"))


def linux_lines(grub_cfg: str) -> list[str]:
    return [line.strip() for line in grub_cfg.splitlines() if line.strip().startswith("linux ")]


def append_lines(isolinux_menu: str) -> list[str]:
    lines = [line.strip() for line in isolinux_menu.splitlines()]
    return [line for line in lines if line.startswith("APPEND")]


def test_live_and_failsafe_entries_with_serial_console_last() -> None:
    menu = bootmenu.build_menu(make_config(cmdline="toram", serial_console=True))
    live, failsafe = list(menu.entries())
    assert live.label == "Live system"
    assert live.cmdline == (
        "boot=live", "components", "quiet", "splash", "toram",
        "console=tty0", "console=ttyS0,115200n8",
    )
    assert failsafe.label == "Live system (failsafe)"
    assert failsafe.cmdline[:2] == ("boot=live", "components")
    assert "nosplash" in failsafe.cmdline and "quiet" not in failsafe.cmdline
    # The kernel puts /dev/console on the last console=: ttyS0 for the serial getty.
    consoles = [a for a in failsafe.cmdline if a.startswith("console=")]
    assert consoles[-1] == "console=ttyS0,115200n8"


def test_no_serial_console_anywhere_when_off() -> None:
    menu = bootmenu.build_menu(make_config(serial_console=False))
    files = menus.render_isolinux(menu)
    grub = menus.render_grub(menu)
    assert "SERIAL" not in files["isolinux.cfg"]
    assert "ttyS0" not in files["menu.cfg"] and "ttyS0" not in grub
    assert "serial" not in grub
    assert "terminal_output gfxterm\n" in grub
    assert "terminal_input console\n" in grub


def test_serial_console_in_both_loaders() -> None:
    menu = bootmenu.build_menu(make_config(serial_console=True))
    files = menus.render_isolinux(menu)
    # ISOLINUX wants SERIAL as the first directive.
    first = next(line for line in files["isolinux.cfg"].splitlines() if line and line[0] != "#")
    assert first == "SERIAL 0 115200"
    grub = menus.render_grub(menu)
    assert "serial --unit=0 --speed=115200" in grub
    assert "terminal_input console serial" in grub
    assert "terminal_output gfxterm serial" in grub
    assert "terminal_output console serial" in grub  # the fallback without a font
    for line in append_lines(files["menu.cfg"]) + linux_lines(grub):
        assert line.endswith("console=tty0 console=ttyS0,115200n8")


@pytest.mark.parametrize(("seconds", "tenths"), [(5, 50), (1, 10), (30, 300), (0, 1)])
def test_timeout(seconds: int, tenths: int) -> None:
    menu = bootmenu.build_menu(make_config(timeout=seconds))
    assert f"TIMEOUT {tenths}\n" in menus.render_isolinux(menu)["isolinux.cfg"]
    assert f"set timeout={seconds}\n" in menus.render_grub(menu)
    assert f"set timeout={seconds}\n" in menus.render_loopback(menu)


def test_splash_in_both_loaders() -> None:
    menu = bootmenu.build_menu(make_config(), splash=True)
    isolinux = menus.render_isolinux(menu)["isolinux.cfg"]
    assert "UI vesamenu.c32" in isolinux
    assert "MENU BACKGROUND /isolinux/splash.png" in isolinux
    assert "MENU RESOLUTION 640 480" in isolinux
    assert "background_image $prefix/splash.png" in menus.render_grub(menu)


def test_no_splash_uses_text_menu() -> None:
    menu = bootmenu.build_menu(make_config(), splash=False)
    isolinux = menus.render_isolinux(menu)["isolinux.cfg"]
    assert "UI menu.c32" in isolinux
    assert "BACKGROUND" not in isolinux
    assert "background_image" not in menus.render_grub(menu)


def test_default_entry_in_both_loaders() -> None:
    menu = bootmenu.build_menu(make_config(default="failsafe"))
    files = menus.render_isolinux(menu)
    assert "DEFAULT failsafe\n" in files["isolinux.cfg"]
    block = files["menu.cfg"].split("\nLABEL failsafe", 1)[1].split("\nLABEL", 1)[0]
    assert "MENU DEFAULT" in block
    assert "set default=failsafe\n" in menus.render_grub(menu)


def test_isolinux_and_grub_entries_agree() -> None:
    menu = bootmenu.build_menu(make_config(cmdline="quiet2 x=1"))
    isolinux_args = [line.removeprefix("APPEND ") for line in append_lines(
        menus.render_isolinux(menu)["menu.cfg"])]
    grub_args = [line.removeprefix("linux /live/vmlinuz ") for line in linux_lines(
        menus.render_grub(menu))]
    assert isolinux_args == grub_args == [e.cmdline_text for e in menu.entries()]


def test_loopback_entries_carry_findiso() -> None:
    menu = bootmenu.build_menu(make_config())
    loopback = menus.render_loopback(menu)
    lines = linux_lines(loopback)
    assert len(lines) == 2
    assert all("findiso=${iso_path}" in line for line in lines)
    assert "findiso" not in menus.render_grub(menu)
    # loopback.cfg is sourced by a foreign grub: it must not reset its terminal.
    assert "terminal_output" not in loopback and "loadfont" not in loopback


def test_submenus_render_in_both_loaders() -> None:
    install = Submenu(
        "install",
        "Install",
        (Entry("install-text", "Text install", "/install/vmlinuz", "/install/initrd.gz",
               ("priority=low",)),),
    )
    menu = bootmenu.build_menu(make_config(), extra=[install])
    isolinux = menus.render_isolinux(menu)["menu.cfg"]
    assert re.search(
        r"MENU BEGIN install\n\s*MENU TITLE Install\n.*LABEL install-text.*MENU EXIT\nMENU END",
        isolinux,
        re.S,
    )
    grub = menus.render_grub(menu)
    assert re.search(r'submenu "Install" --id install \{.*menuentry "Text install"', grub, re.S)
    assert "linux /install/vmlinuz priority=low" in grub
    assert "findiso=${iso_path}" in menus.render_loopback(menu).split("Text install")[1]


def test_duplicate_ids_and_unknown_default_are_refused() -> None:
    with pytest.raises(MenuError, match="used twice"):
        bootmenu.build_menu(make_config(), extra=[Entry("live", "again", "/k", "/i", ())])
    menu = dataclasses.replace(bootmenu.build_menu(make_config()), default="nothing")
    with pytest.raises(MenuError, match="default entry"):
        menus.render_grub(menu)


def test_the_menu_round_trips_through_json() -> None:
    cfg = conftest.parse({"name": "demo", "installer": {"sources": ["package"]},
                          "languages": [{"locale": "de_DE.UTF-8", "keyboard": "de",
                                         "label": "Deutsch"}]})
    menu = bootmenu.build_menu(cfg)
    again = bootmenu.Menu.from_json(json.loads(json.dumps(menu.to_json())))
    assert again == menu
    assert again.entry("install").kernel == "/install.amd/vmlinuz"
    with pytest.raises(MenuError, match="not a boot menu"):
        bootmenu.Menu.from_json({"title": "x"})


def test_config_text_cannot_leave_its_line_in_either_loader() -> None:
    title = 'It\'s "$HOME" {x} ^hot \\'
    menu = bootmenu.build_menu(make_config(title=title, cmdline="a=$x;b"))
    grub = menus.render_grub(menu)
    # The title only in a comment, quoted: a trailing backslash cannot continue it.
    assert grub.splitlines()[0] == '# "It\'s \\"\\$HOME\\" {x} ^hot \\\\": written by deblive ' \
        "from its boot-menu model"
    assert "linux /live/vmlinuz boot=live components quiet splash 'a=$x;b'" in grub
    isolinux = menus.render_isolinux(menu)["isolinux.cfg"]
    assert 'MENU TITLE It\'s "$HOME" {x} hot \\\n' in isolinux


def test_a_devicetree_is_loaded_by_every_grub_entry_under_its_fixed_name() -> None:
    cfg = conftest.parse({"name": "demo", "architecture": "arm64",
                          "devicetree": "/usr/lib/linux-image-6.1.0-9-arm64/arm/virt.dtb",
                          "installer": {"sources": ["package"]}})
    menu = bootmenu.build_menu(cfg)
    assert menu.devicetree == bootmenu.DEVICETREE_PATH == "/live/devicetree.dtb"
    for text in (menus.render_grub(menu), menus.render_loopback(menu)):
        entries = text.count("menuentry ")
        assert entries > 3 and text.count("\tdevicetree /live/devicetree.dtb\n") == entries
        assert "virt.dtb" not in text  # the config's path never reaches the menu
    assert bootmenu.Menu.from_json(json.loads(json.dumps(menu.to_json()))) == menu
    plain = bootmenu.build_menu(conftest.parse({"name": "demo", "architecture": "arm64"}))
    assert plain.devicetree is None and "devicetree" not in menus.render_grub(plain)


@pytest.mark.parametrize(("data", "words"), [
    ({"devicetree": "board.dtb"},
     "amd64's medium loads no devicetree (only arm64, armhf, riscv64)"),
    ({"architecture": "arm64", "devicetree": "../board.dtb"}, "path inside the image"),
    ({"architecture": "arm64", "devicetree": "/usr/lib/x/./b.dtb"}, "path inside the image"),
    ({"architecture": "arm64", "devicetree": "b d.dtb"}, "path inside the image"),
])
def test_bad_devicetrees_are_refused_naming_the_key(data: dict[str, Any], words: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        conftest.parse({"name": "demo", **data})
    assert "devicetree" in str(caught.value) and words in str(caught.value)


def test_a_devicetree_beside_the_config_is_one_of_its_files() -> None:
    cfg = conftest.parse({"name": "demo", "architecture": "arm64", "devicetree": "dtb/b.dtb"})
    assert cfg.devicetree_file == Path("/cfg/dtb/b.dtb")
    assert cfg.referenced_paths()["devicetree"] == Path("/cfg/dtb/b.dtb")
    inside = conftest.parse({"name": "demo", "architecture": "arm64", "devicetree": "/b.dtb"})
    assert inside.devicetree_file is None and "devicetree" not in inside.referenced_paths()
