"""The boot-menu model written out as ISOLINUX, grub and grub loopback configs.

Every text that comes from the config is quoted for the loader that reads it
(grub strings and arguments) or reduced to what it can show (ISOLINUX reads
one line per directive); the config already refused control characters, so
no value can start a new directive. A third rendering, loopback.cfg, serves
grub installs elsewhere that boot the ISO file itself (`loopback loop x.iso;
source (loop)/boot/grub/loopback.cfg`): live-boot then needs `findiso=` to
find the ISO file again from inside the initramfs.
"""

from __future__ import annotations

import re
from typing import Final

import jinja2

from deblive.model.bootmenu import SERIAL_SPEED, SPLASH_NAME, Entry, Menu

SERIAL_UNIT: Final = 0
# Kernel arguments grub can take unquoted; anything else gets single quotes.
_GRUB_SAFE_RE = re.compile(r"[A-Za-z0-9_.,:/=+@%^~-]+")


def grub_quote(arg: str) -> str:
    """Quote one kernel argument for a grub script line.

    grub expands $ and splits on ; and spaces; single quotes stop all of it.
    """
    if _GRUB_SAFE_RE.fullmatch(arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def grub_string(text: str) -> str:
    """A double-quoted grub string (menu labels, titles)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def isolinux_text(text: str) -> str:
    """ISOLINUX reads one line per directive; '^' marks a hotkey, so drop both."""
    return " ".join(text.replace("^", "").split())


def isolinux_timeout(seconds: int) -> int:
    """ISOLINUX counts tenths of a second and reads 0 as "wait forever".

    A configured 0 means "boot at once" (as in grub), so it becomes 1 tenth.
    """
    return max(1, seconds * 10)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("deblive", "data/templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["grub_quote"] = grub_quote
    env.filters["grub_string"] = grub_string
    env.filters["isolinux_text"] = isolinux_text
    env.tests["entry"] = lambda item: isinstance(item, Entry)
    return env


def _render(template: str, menu: Menu, **extra: object) -> str:
    menu.validate()
    boot = menu.architecture.boot
    return (
        _environment()
        .get_template(template)
        .render(
            menu=menu,
            serial_unit=SERIAL_UNIT,
            # grub drives a PC's UART itself; EFI-only grubs (arm64) reach the
            # port through the firmware's Serial I/O protocol (`serial efi0`);
            # Open Firmware's console is the serial console (ppc64el's hvc0).
            serial_efi=not menu.architecture.profile().grub_uart,
            firmware_console=boot is not None and boot.firmware.console_is_serial,
            serial_speed=SERIAL_SPEED,
            splash_name=SPLASH_NAME,
            isolinux_timeout=isolinux_timeout(menu.timeout),
            **extra,
        )
    )


def render_isolinux(menu: Menu, loader_dir: str = "/isolinux") -> dict[str, str]:
    """File name (in loader_dir) -> content: isolinux.cfg and the menu it includes.

    The look (isolinux.cfg: serial, UI module, colours) is kept apart from the
    entries (menu.cfg) so an installer can add its own include beside it.
    PXELINUX reads the same two files from /pxelinux.cfg (loader_dir), the
    first one as `default`.
    """
    return {
        "isolinux.cfg": _render("isolinux.cfg.j2", menu, loader_dir=loader_dir),
        "menu.cfg": _render("isolinux-menu.cfg.j2", menu),
    }


def render_grub(menu: Menu, *, font: str | None = None) -> str:
    """grub.cfg for the medium's /boot/grub (sourced by the signed EFI grub).

    font: a grub path of a PF2 font to load for gfxterm; by default the one
    embedded in Debian's signed grub memdisk, falling back to grub's own search.
    """
    return _render("grub.cfg.j2", menu, font=font, loopback=False)


def render_loopback(menu: Menu) -> str:
    """loopback.cfg: the same entries with findiso=${iso_path} for ISO-file booting."""
    return _render("loopback.cfg.j2", menu, loopback=True)
