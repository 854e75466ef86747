"""One boot-menu model for both boot loaders, and its JSON form for the boot test.

BIOS boots through ISOLINUX and UEFI through Debian's signed grub, so the
medium carries two menus. Both are rendered (build.menus) from the same Menu
so their entries, defaults and kernel command lines can never drift apart (a
classic bug of hand-kept isolinux.cfg/grub.cfg pairs). The build also writes
the Menu as boot-entries.json beside the ISO, so the boot test knows the
medium's entries and architecture from the build, not by parsing the ISO.

Submenus nest to any depth; installer entries and "Languages" are submenus.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from deblive.model.arch import Arch
from deblive.model.config import ImageConfig

# live-boot's normal command line (live-build's LB_BOOTAPPEND_LIVE default).
LIVE_ARGS: Final = ("boot=live", "components", "quiet", "splash")
# live-build's failsafe line: switch off what most often hangs odd hardware.
FAILSAFE_ARGS: Final = (
    "boot=live", "components", "memtest", "noapic", "noapm", "nodma", "nomce",
    "nosmp", "nosplash", "vga=788",
)
SERIAL_SPEED: Final = 115200

# Paths on the medium, shared with the medium and bootloader stages.
KERNEL_PATH: Final = "/live/vmlinuz"
INITRD_PATH: Final = "/live/initrd.img"
DEVICETREE_PATH: Final = "/live/devicetree.dtb"  # a config's DTB (medium, netboot tree)
SPLASH_NAME: Final = "splash.png"
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
ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")


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


@dataclass(frozen=True)
class Menu:
    """The whole menu plus the look and console settings both loaders share."""

    title: str
    timeout: int  # seconds; 0 boots the default at once
    default: str  # id of an Entry
    serial: bool
    splash: bool  # a splash.png lies beside each loader's config
    architecture: Arch  # decides the serial port and how grub reaches it
    items: tuple[Item, ...] = field(default_factory=tuple)
    devicetree: str | None = None  # the medium's DTB every grub entry loads (DEVICETREE_PATH)

    def entries(self) -> Iterator[Entry]:
        """Every Entry, depth first, submenus included."""
        yield from _walk(self.items)

    def entry(self, ident: str) -> Entry:
        for entry in self.entries():
            if entry.id == ident:
                return entry
        raise MenuError(f"no menu entry {ident!r}")

    def validate(self) -> None:
        """Ids must be unique (ISOLINUX labels are global) and the default must exist."""
        seen: set[str] = set()
        for item in _walk_all(self.items):
            if not ID_RE.fullmatch(item.id):
                raise MenuError(f"menu id {item.id!r} must match {ID_RE.pattern}")
            if item.id in seen:
                raise MenuError(f"menu id {item.id!r} is used twice")
            seen.add(item.id)
        if self.default not in {e.id for e in self.entries()}:
            raise MenuError(f"default entry {self.default!r} is not in the menu")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["architecture"] = str(self.architecture)
        data["items"] = [_item_json(item) for item in self.items]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Menu:
        """The inverse of to_json (MenuError for data that is not a menu)."""
        try:
            menu = cls(
                title=str(data["title"]), timeout=int(data["timeout"]),
                default=str(data["default"]), serial=bool(data["serial"]),
                splash=bool(data["splash"]), architecture=Arch(data["architecture"]),
                items=tuple(_item_from_json(item) for item in data["items"]),
                devicetree=str(data["devicetree"]) if data.get("devicetree") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MenuError(f"not a boot menu: {exc}") from None
        menu.validate()
        return menu


def _item_json(item: Item) -> dict[str, Any]:
    if isinstance(item, Entry):
        return {"entry": asdict(item)}
    return {"submenu": {"id": item.id, "label": item.label,
                        "items": [_item_json(i) for i in item.items]}}


def _item_from_json(data: dict[str, Any]) -> Item:
    if "entry" in data:
        e = data["entry"]
        return Entry(str(e["id"]), str(e["label"]), str(e["kernel"]), str(e["initrd"]),
                     tuple(map(str, e["cmdline"])), tuple(map(str, e["extra_initrds"])))
    s = data["submenu"]
    return Submenu(str(s["id"]), str(s["label"]), tuple(_item_from_json(i) for i in s["items"]))


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


def serial_args(arch: Arch) -> tuple[str, ...]:
    """console= for the screen and arch's serial port, the serial port last: the kernel
    makes the last console= /dev/console, where systemd starts the getty a test reads."""
    return ("console=tty0", f"console={arch.serial_tty},{SERIAL_SPEED}n8")


def live_cmdline(config: ImageConfig, base: Sequence[str]) -> tuple[str, ...]:
    """base args, then the config's own, then the serial consoles (which must be last)."""
    args = list(base)
    args.extend(config.boot.cmdline.split())
    if config.boot.serial_console:
        args.extend(serial_args(config.architecture))
    return tuple(args)


def persistence_args(config: ImageConfig) -> tuple[str, ...]:
    """live-boot's persistence, with its label when it is not live-boot's default."""
    assert config.persistence is not None
    label = config.persistence.label
    return ("persistence", *(() if label == "persistence" else (f"persistence-label={label}",)),
            *(("persistence-encryption=luks",) if config.persistence.encrypted else ()))


def persistence_items(config: ImageConfig) -> list[Item]:
    """"Live system (persistence)": changes kept on the partition labelled for it."""
    if config.persistence is None:
        return []
    return [Entry("persistence", "Live system (persistence)", KERNEL_PATH, INITRD_PATH,
                  live_cmdline(config, (*LIVE_ARGS, *persistence_args(config))))]


def installer_dir(arch: Arch) -> str:
    """Where d-i's kernel and initrds lie on the medium (debian-cd's names)."""
    return arch.boot.installer_dir if arch.boot is not None else "/install"


def language_items(config: ImageConfig) -> list[Item]:
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
        entries.append(Entry(ident, f"Live system ({lang.label})", KERNEL_PATH, INITRD_PATH,
                             live_cmdline(config, args)))
    return [Submenu("languages", "Languages", tuple(entries))]


def installer_items(config: ImageConfig) -> list[Item]:
    """debian-cd's installer entries: Graphical install, Install, and "Advanced options".

    No serial console here: d-i runs its interface on the last console=, and
    on a PC that must stay the screen. (Tests add console=ttyS0 themselves.)
    The preseed, if any, is a second initrd (see build.installer).
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


def build_menu(config: ImageConfig, *, splash: bool = True, extra: Sequence[Item] = (),
               netboot: bool = False) -> Menu:
    """The menu for an image: live and failsafe entries, languages, installer, then extra.

    netboot: the network tree's menu: no installer (its initrd looks for a CD),
    and every live-boot entry fetches the squashfs from netboot.url.
    """
    boot = config.boot
    menu = Menu(
        title=boot.title,
        timeout=boot.timeout,
        default=boot.default,
        serial=boot.serial_console,
        splash=splash,
        architecture=config.architecture,
        items=(
            Entry("live", "Live system", KERNEL_PATH, INITRD_PATH,
                  live_cmdline(config, LIVE_ARGS)),
            *persistence_items(config),
            Entry("failsafe", "Live system (failsafe)", KERNEL_PATH, INITRD_PATH,
                  live_cmdline(config, FAILSAFE_ARGS)),
            *language_items(config),
            *(() if netboot else installer_items(config)),
            *extra,
        ),
        devicetree=DEVICETREE_PATH if config.devicetree else None,
    )
    if netboot:
        assert config.netboot is not None
        menu = dataclasses.replace(menu, items=_fetching(menu.items, config.netboot.squashfs_url))
    menu.validate()
    return menu


def _fetching(items: Iterable[Item], url: str) -> tuple[Item, ...]:
    """items with fetch=url after every boot=live: live-boot loads the squashfs over the
    network into RAM instead of looking for a medium."""
    def one(item: Item) -> Item:
        if isinstance(item, Submenu):
            return dataclasses.replace(item, items=_fetching(item.items, url))
        if "boot=live" not in item.cmdline:
            return item
        at = item.cmdline.index("boot=live") + 1
        return dataclasses.replace(
            item, cmdline=(*item.cmdline[:at], f"fetch={url}", *item.cmdline[at:]))
    return tuple(one(item) for item in items)
