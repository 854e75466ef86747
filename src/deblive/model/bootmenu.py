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

from deblive.model.config import ImageConfig

# live-boot's normal command line (live-build's LB_BOOTAPPEND_LIVE default).
LIVE_ARGS: Final = ("boot=live", "components", "quiet", "splash")
# live-build's failsafe line: switch off what most often hangs odd hardware.
FAILSAFE_ARGS: Final = (
    "boot=live", "components", "memtest", "noapic", "noapm", "nodma", "nomce",
    "nosmp", "nosplash", "vga=788",
)
# The serial console comes last: the kernel makes the last console= /dev/console,
# and systemd starts its serial getty there, which is what a headless test reads.
SERIAL_ARGS: Final = ("console=tty0", "console=ttyS0,115200n8")  # amd64's, see serial_args()
SERIAL_UNIT: Final = 0
SERIAL_SPEED: Final = 115200
# The first serial port's kernel name: the PC's 8250 UART, or the PL011 of ARM
# machines (qemu's virt, most arm64 servers and boards).
SERIAL_TTYS: Final = {"amd64": "ttyS0", "i386": "ttyS0", "arm64": "ttyAMA0", "armhf": "ttyAMA0"}
# Architectures whose grub drives the PC's UART directly (`serial --unit=0`, the
# terminal "serial"); elsewhere grub is EFI-only and reaches the port through
# the firmware's Serial I/O protocol (`serial efi0`, the terminal "serial_efi0").
GRUB_NS8250_ARCHES: Final = frozenset({"amd64", "i386"})

# Paths on the medium, shared with the medium and bootloader stages.
KERNEL_PATH: Final = "/live/vmlinuz"
INITRD_PATH: Final = "/live/initrd.img"
SPLASH_NAME: Final = "splash.png"
# debian-installer on the medium, in debian-cd's layout (install.amd/, gtk/ below it).
INSTALLER_DIRS: Final = {"amd64": "/install.amd", "arm64": "/install.a64", "i386": "/install.386"}
PRESEED_NAME: Final = "preseed.cfg"  # on the medium's top, for people to read
PRESEED_INITRD: Final = "preseed.cpio.gz"  # the same file as an initramfs d-i reads
# debian-cd's installer command lines: vga=788 for the framebuffer, "---" ends the
# installer's own arguments (what follows is copied to the installed system's kernel).
INSTALL_ARGS: Final = ("vga=788", "---", "quiet")
EXPERT_ARGS: Final = ("priority=low", "vga=788", "---")
AUTO_ARGS: Final = ("auto=true", "priority=critical", "vga=788", "---", "quiet")
RESCUE_ARGS: Final = ("vga=788", "rescue/enable=true", "---", "quiet")
SPEECH_ARGS: Final = ("speakup.synth=soft",)

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
    # Loaded after initrd, into the same initramfs (a preseed for d-i).
    extra_initrds: tuple[str, ...] = ()

    @property
    def cmdline_text(self) -> str:
        return " ".join(self.cmdline)

    @property
    def initrds(self) -> tuple[str, ...]:
        return (self.initrd, *self.extra_initrds)


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
    architecture: str = "amd64"  # decides how grub reaches the serial port

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


def serial_tty(arch: str) -> str:
    """The kernel's name of the first serial port on arch (ttyS0 when unknown)."""
    return SERIAL_TTYS.get(arch, "ttyS0")


def serial_args(arch: str) -> tuple[str, ...]:
    """console= arguments for the screen and arch's serial port, the serial port last."""
    return ("console=tty0", f"console={serial_tty(arch)},{SERIAL_SPEED}n8")


def live_cmdline(config: ImageConfig, base: Sequence[str]) -> tuple[str, ...]:
    """base args, then the config's own, then the serial consoles (which must be last)."""
    args = list(base)
    args.extend(config.boot.cmdline.split())
    if config.boot.serial_console:
        args.extend(serial_args(config.architecture))
    return tuple(args)


def installer_dir(arch: str) -> str:
    """Where d-i's kernel and initrds lie on the medium (debian-cd's names)."""
    return INSTALLER_DIRS.get(arch, "/install")


def language_items(
    config: ImageConfig, kernel: str = KERNEL_PATH, initrd: str = INITRD_PATH
) -> list[Item]:
    """A "Languages" submenu: the live entry with live-config's locales= and keyboard-layouts=.

    live-config (components locales and keyboard-configuration) reads both at
    boot; the locales are generated in the image, so nothing is compiled then.
    """
    if not config.languages:
        return []
    entries: list[Item] = []
    for lang in config.languages:
        args = (*LIVE_ARGS, f"locales={lang.locale}", f"keyboard-layouts={lang.keyboard}")
        ident = "lang-" + re.sub(r"[^a-z0-9]+", "-", lang.locale.lower()).strip("-")
        entries.append(
            Entry(ident, f"Live system ({lang.label})", kernel, initrd, live_cmdline(config, args))
        )
    return [Submenu("languages", "Languages", tuple(entries))]


def installer_items(config: ImageConfig) -> list[Item]:
    """debian-cd's installer entries: Graphical install, Install, and "Advanced options".

    No serial console here: d-i runs its interface on the last console=, and
    on a PC that must stay the screen. (Tests add console=ttyS0 themselves.)
    The preseed, if any, is a second initrd (see deblive.build.installer).
    """
    if config.installer is None:
        return []
    top = installer_dir(config.architecture)
    extra = (f"{top}/{PRESEED_INITRD}",) if config.installer.preseed is not None else ()
    text = (f"{top}/vmlinuz", f"{top}/initrd.gz")
    gtk = (f"{top}/gtk/vmlinuz", f"{top}/gtk/initrd.gz")
    graphical = config.installer.graphical
    speech = gtk if graphical else text

    def entry(ident: str, label: str, files: tuple[str, str], args: Sequence[str]) -> Entry:
        return Entry(ident, label, files[0], files[1], tuple(args), extra)

    top_items: list[Item] = []
    advanced: list[Item] = []
    if graphical:
        top_items.append(entry("installgui", "Graphical install", gtk, INSTALL_ARGS))
        advanced += [
            entry("expertgui", "Graphical expert install", gtk, EXPERT_ARGS),
            entry("autogui", "Graphical automated install", gtk, AUTO_ARGS),
            entry("rescuegui", "Graphical rescue mode", gtk, RESCUE_ARGS),
        ]
    top_items.append(entry("install", "Install", text, INSTALL_ARGS))
    advanced += [
        entry("expert", "Expert install", text, EXPERT_ARGS),
        entry("auto", "Automated install", text, AUTO_ARGS),
        entry("rescue", "Rescue mode", text, RESCUE_ARGS),
        entry("speech", "Install with speech synthesis", speech, (*SPEECH_ARGS, *INSTALL_ARGS)),
        entry("expertspeech", "Expert install with speech synthesis", speech,
              (*SPEECH_ARGS, *EXPERT_ARGS)),
    ]
    return [*top_items, Submenu("advanced", "Advanced options", tuple(advanced))]


def build_menu(
    config: ImageConfig,
    *,
    splash: bool = True,
    extra: Sequence[Item] = (),
    kernel: str = KERNEL_PATH,
    initrd: str = INITRD_PATH,
) -> Menu:
    """The menu for an image: live and failsafe entries, then any extra items.

    extra is the hook for later features. The config's languages (a
    "Languages" submenu) and installer (its entries and "Advanced options")
    come before extra.
    """
    boot = config.boot
    menu = Menu(
        title=boot.title,
        timeout=boot.timeout,
        default=boot.default,
        serial=boot.serial_console,
        splash=splash,
        architecture=config.architecture,
        items=[
            Entry("live", "Live system", kernel, initrd, live_cmdline(config, LIVE_ARGS)),
            Entry(
                "failsafe",
                "Live system (failsafe)",
                kernel,
                initrd,
                live_cmdline(config, FAILSAFE_ARGS),
            ),
            *language_items(config, kernel, initrd),
            *installer_items(config),
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
            serial_efi=menu.architecture not in GRUB_NS8250_ARCHES,
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
