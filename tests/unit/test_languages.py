"""languages: the config key, the "Languages" boot submenu and the locales in the image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deblive.build import menus
from deblive.build.stages import packages
from deblive.model import bootmenu, config
from deblive.model.packages import PackageSelection

from . import conftest

DE = {"locale": "de_DE.UTF-8", "keyboard": "de", "label": "Deutsch"}
SR = {"locale": "sr_RS.UTF-8@latin", "keyboard": "rs(latin)", "label": "Srpski"}


def make_config(languages: list[dict[str, Any]], **data: Any) -> config.ImageConfig:
    return conftest.parse({"name": "demo", "languages": languages, **data}, Path("/c/d.yaml"))


def test_languages_submenu_in_both_loaders() -> None:
    menu = bootmenu.build_menu(make_config([DE, SR]))
    sub = menu.items[2]
    assert isinstance(sub, bootmenu.Submenu) and sub.label == "Languages"
    de = sub.items[0]
    assert isinstance(de, bootmenu.Entry)
    assert de.label == "Live system (Deutsch)"
    assert de.cmdline[-2:] == ("console=tty0", "console=ttyS0,115200n8")  # serial stays last
    assert "locales=de_DE.UTF-8" in de.cmdline and "keyboard-layouts=de" in de.cmdline
    grub = menus.render_grub(menu)
    assert 'submenu "Languages" --id languages {' in grub
    assert "'keyboard-layouts=rs(latin)'" in grub  # grub quoting of the parentheses
    iso = menus.render_isolinux(menu)["menu.cfg"]
    assert "MENU BEGIN languages" in iso and "MENU LABEL Live system (Srpski)" in iso
    assert "locales=sr_RS.UTF-8@latin keyboard-layouts=rs(latin)" in iso


def test_ids_are_unique_and_valid() -> None:
    menu = bootmenu.build_menu(make_config([DE, SR]))
    menu.validate()
    assert [e.id for e in menu.entries()][2:] == ["lang-de-de-utf-8", "lang-sr-rs-utf-8-latin"]


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({**DE, "locale": "deutsch"}, "languages[0].locale"),
        ({**DE, "locale": "C.UTF-8"}, "languages[0].locale"),
        ({**DE, "locale": "de_DE"}, "languages[0].locale"),
        ({**DE, "keyboard": "German!"}, "languages[0].keyboard"),
        ({**DE, "label": 'say "hi"'}, "languages[0].label"),
        ({**DE, "label": ""}, "languages[0].label"),
        ({"locale": "de_DE.UTF-8", "label": "x"}, "languages[0].keyboard"),
    ],
)
def test_bad_language_entries_name_the_key(entry: dict[str, Any], key: str) -> None:
    with pytest.raises(config.ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        make_config([entry])


def test_duplicate_locale_refused() -> None:
    with pytest.raises(config.ConfigError, match="listed twice"):
        make_config([DE, {**DE, "label": "Deutsch (2)"}])


def test_locales_generated_for_every_language_but_the_images_own() -> None:
    cfg = make_config([DE, SR, {"locale": "en_US.UTF-8", "keyboard": "us", "label": "English"}])
    assert packages.language_locales(cfg) == ["de_DE.UTF-8", "sr_RS.UTF-8@latin"]
    assert packages.localedef_argv("sr_RS.UTF-8@latin") == [
        "localedef", "--no-archive", "-i", "sr_RS@latin", "-f", "UTF-8", "sr_RS.UTF-8@latin"]
    selection = PackageSelection.from_config(make_config([DE], locale="C.UTF-8"))
    assert "locales" in selection.install


def test_no_languages_no_submenu() -> None:
    menu = bootmenu.build_menu(make_config([]))
    assert not any(isinstance(i, bootmenu.Submenu) for i in menu.items)
