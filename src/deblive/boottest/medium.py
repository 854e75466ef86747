"""What the boot test knows of a medium: the build's boot-entries.json, never the ISO's configs.

The build writes boot-entries.json beside the ISO: the architecture, the menu
model both boot loaders were written from, the live user's name and sudo
policy, whether root is locked. The boot test reads it (or takes --arch and
defaults for an ISO without one), so it checks the medium against what the
build meant, and boots a menu entry directly (kernel, initrds, command line
taken from the model, files extracted from the ISO with xorriso: no mount,
no loop device) when a test needs one entry without a keyboard.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deblive.core.runner import Runner
from deblive.model.arch import Arch
from deblive.model.bootmenu import Entry, Menu, MenuError
from deblive.model.config import SudoPolicy
from deblive.vm.command import DirectKernel

BOOT_ENTRIES = "boot-entries.json"
MAX_BYTES = 1 << 20


class EntriesError(ValueError):
    """boot-entries.json is missing, for another image, or not what the build writes."""


@dataclass(frozen=True)
class BootEntries:
    architecture: Arch
    user: str
    sudo: SudoPolicy
    root_locked: bool
    bios: bool
    menu: Menu | None
    # A netboot tree's: the URL its menus fetch the squashfs from, and the boot file
    # DHCP names per firmware (bios: pxelinux.0, uefi: shimx64.efi).
    netboot_url: str | None = None
    boot_files: tuple[tuple[str, str], ...] = ()

    def boot_file(self, firmware: str) -> str | None:
        return dict(self.boot_files).get("uefi" if firmware == "secureboot" else firmware)

    @classmethod
    def from_json(cls, data: Any) -> BootEntries:
        try:
            user = data["live_user"]
            sudo = str(user["sudo"])
            if sudo not in ("nopasswd", "password", "none"):
                raise ValueError(f"unknown sudo policy {sudo!r}")
            net = data.get("netboot") or {}
            return cls(
                architecture=Arch(data["architecture"]), user=str(user["name"]),
                sudo=sudo,  # type: ignore[arg-type]
                root_locked=bool(data["root_locked"]), bios=bool(data["bios"]),
                menu=Menu.from_json(data["menu"]),
                netboot_url=str(net["url"]) if net else None,
                boot_files=tuple((str(k), str(v)) for k, v in net.get("boot_files", {}).items()),
            )
        except (KeyError, TypeError, ValueError, MenuError) as exc:
            raise EntriesError(f"not deblive's boot entries: {exc}") from None

    @classmethod
    def defaults(cls, arch: Arch, user: str) -> BootEntries:
        """For an ISO without boot-entries.json: what deblive's default image has."""
        return cls(arch, user, "nopasswd", True, arch.qemu is not None and arch.qemu.bios, None)


def entries_path(iso: Path) -> Path:
    """Beside an image file; inside a netboot directory."""
    return iso / BOOT_ENTRIES if iso.is_dir() else iso.parent / BOOT_ENTRIES


def read_entries(iso: Path) -> BootEntries | None:
    """The boot entries beside iso (in a netboot directory), None if there are none;
    EntriesError if they are not deblive's or belong to another image."""
    path = entries_path(iso)
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_BYTES:
        raise EntriesError(f"{path}: larger than {MAX_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EntriesError(f"{path}: {exc}") from None
    if iso.is_dir():
        if not isinstance(data, dict) or not isinstance(data.get("netboot"), dict):
            raise EntriesError(f"{path} does not describe a netboot tree")
        return BootEntries.from_json(data)
    if not isinstance(data, dict) or data.get("image") != iso.stem:
        image = data.get("image") if isinstance(data, dict) else "?"
        raise EntriesError(f"{path} describes {image}, not {iso.name}")
    return BootEntries.from_json(data)


def extract(runner: Runner, iso: Path, paths: list[str], dest: Path) -> None:
    """Copy files out of the ISO with xorriso (no mount, no loop device)."""
    argv = ["xorriso", "-osirrox", "on", "-indev", str(iso)]
    for path in paths:
        target = dest / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        argv += ["-extract", path, str(target)]
    runner.run(argv, quiet=True, what=f"extracting {', '.join(paths)} from {iso.name}")


def direct_kernel_for(runner: Runner, iso: Path, entry: Entry, workdir: Path,
                      extra_args: str) -> DirectKernel:
    """The entry's kernel, its initrds joined into one (what both boot loaders do in
    memory), and its command line plus extra_args."""
    extract(runner, iso, [entry.kernel, *entry.initrds], workdir)
    joined = workdir / "initrd-joined"
    with joined.open("wb") as out:
        for initrd in entry.initrds:
            with (workdir / initrd.lstrip("/")).open("rb") as part:
                shutil.copyfileobj(part, out)
    append = f"{entry.cmdline_text} {extra_args}".strip()
    return DirectKernel(workdir / entry.kernel.lstrip("/"), joined, append)
