"""One boot-menu model, written out as ISOLINUX, grub and grub loopback configs.

BIOS boots through ISOLINUX and UEFI through Debian's signed grub, so the
medium carries two menus. They are rendered from the same Menu object so
their entries, defaults and kernel command lines can never drift apart (a
classic bug of hand-kept isolinux.cfg/grub.cfg pairs). A third rendering,
loopback.cfg, serves grub installs elsewhere that boot the ISO file itself
(`loopback loop x.iso; source (loop)/boot/grub/loopback.cfg`): live-boot then
needs `findiso=` to find the ISO file again from inside the initramfs.

Later features (installer entries, "Advanced options") add Submenus to
Menu.items, or pass them to build_menu(extra=...): the templates render any
nesting depth of submenus in both boot loaders.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import jinja2

from deblive.config import ImageConfig

# live-boot's normal command line (live-build's LB_BOOTAPPEND_LIVE default).
LIVE_ARGS: Final = ("boot=live", "components", "quiet", "splash")
# live-build's failsafe line: switch off what most often hangs odd hardware.
FAILSAFE_ARGS: Final = (
    "boot=live", "components", "memtest", "noapic", "noapm", "nodma", "nomce",
    "nosmp", "nosplash", "vga=788",
)
# ttyS0 comes last: the kernel makes the last console= /dev/console, and
# systemd starts its serial getty there, which is what a headless test reads.
SERIAL_ARGS: Final = ("console=tty0", "console=ttyS0,115200n8")
SERIAL_UNIT: Final = 0
SERIAL_SPEED: Final = 115200

# Paths on the medium, shared with the medium and bootloader stages.
KERNEL_PATH: Final = "/live/vmlinuz"
INITRD_PATH: Final = "/live/initrd.img"
SPLASH_NAME: Final = "splash.png"

# Labels that both ISOLINUX and grub accept as ids without quoting.
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Kernel arguments grub can take unquoted; anything else gets single quotes.
_GRUB_SAFE_RE = re.compile(r"^[A-Za-z0-9_.,:/=+@%^~-]+$")


class MenuError(ValueError):
    """The menu model is inconsistent (duplicate ids, unknown default...)."""


@dataclass(frozen=True)
class Entry:
    """One bootable choice: a kernel, its initrd and its command line."""

    id: str
    label: str
    kernel: str
    initrd: str
    cmdline: tuple[str, ...]

    @property
    def cmdline_text(self) -> str:
        return " ".join(self.cmdline)


@dataclass(frozen=True)
class Submenu:
    """A named group of entries (and further submenus), e.g. "Advanced options"."""

    id: str
    label: str
    items: tuple[Entry | Submenu, ...]


Item = Entry | Submenu


@dataclass
class Menu:
    """The whole menu plus the look and console settings both loaders share."""

    title: str
    timeout: int  # seconds; 0 boots the default at once
    default: str  # id of an Entry
    serial: bool
    splash: bool  # a splash.png lies beside each loader's config
    items: list[Item] = field(default_factory=list)

    def entries(self) -> Iterator[Entry]:
        """Every Entry, depth first, submenus included."""
        yield from _walk(self.items)

    def validate(self) -> None:
        """Ids must be unique (ISOLINUX labels are global) and the default must exist."""
        seen: set[str] = set()
        for item in _walk_all(self.items):
            if not _ID_RE.match(item.id):
                raise MenuError(f"menu id {item.id!r} must match {_ID_RE.pattern}")
            if item.id in seen:
                raise MenuError(f"menu id {item.id!r} is used twice")
            seen.add(item.id)
        if self.default not in {e.id for e in self.entries()}:
            raise MenuError(f"default entry {self.default!r} is not in the menu")


def _walk(items: Iterable[Item]) -> Iterator[Entry]:
    for item in items:
        if isinstance(item, Entry):
            yield item
        else:
            yield from _walk(item.items)


def _walk_all(items: Iterable[Item]) -> Iterator[Item]:
    for item in items:
        yield item
        if isinstance(item, Submenu):
            yield from _walk_all(item.items)


def live_cmdline(config: ImageConfig, base: Sequence[str]) -> tuple[str, ...]:
    """base args, then the config's own, then the serial consoles (which must be last)."""
    args = list(base)
    args.extend(config.boot.cmdline.split())
    if config.boot.serial_console:
        args.extend(SERIAL_ARGS)
    return tuple(args)


def build_menu(
    config: ImageConfig,
    *,
    splash: bool = True,
    extra: Sequence[Item] = (),
    kernel: str = KERNEL_PATH,
    initrd: str = INITRD_PATH,
) -> Menu:
    """The menu for an image: live and failsafe entries, then any extra items.

    extra is the hook for later features: an installer adds its Submenu here.
    """
    boot = config.boot
    menu = Menu(
        title=boot.title,
        timeout=boot.timeout,
        default=boot.default,
        serial=boot.serial_console,
        splash=splash,
        items=[
            Entry("live", "Live system", kernel, initrd, live_cmdline(config, LIVE_ARGS)),
            Entry(
                "failsafe",
                "Live system (failsafe)",
                kernel,
                initrd,
                live_cmdline(config, FAILSAFE_ARGS),
            ),
            *extra,
        ],
    )
    menu.validate()
    return menu


# -- rendering ----------------------------------------------------------------


def grub_quote(arg: str) -> str:
    """Quote one kernel argument for a grub script line.

    grub expands $ and splits on ; and spaces; single quotes stop all of it.
    """
    if _GRUB_SAFE_RE.match(arg):
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
    return (
        _environment()
        .get_template(template)
        .render(
            menu=menu,
            serial_unit=SERIAL_UNIT,
            serial_speed=SERIAL_SPEED,
            splash_name=SPLASH_NAME,
            isolinux_timeout=isolinux_timeout(menu.timeout),
            **extra,
        )
    )


def render_isolinux(menu: Menu) -> dict[str, str]:
    """File name (in /isolinux) -> content: isolinux.cfg and the menu it includes.

    The look (isolinux.cfg: serial, UI module, colours) is kept apart from the
    entries (menu.cfg) so an installer can add its own include beside it.
    """
    return {
        "isolinux.cfg": _render("isolinux.cfg.j2", menu),
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
