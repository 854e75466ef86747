"""What each output format needs from the rest of the config.

One root filesystem and one squashfs make every format, but the disk image
needs its persistence partition and the netboot tree needs the URL it is
served at, and live-boot's fetch= loads exactly one squashfs, so a netboot
tree cannot carry a layered build's stack. An architecture's boot layout
may have no network boot loader (no signed network grub; Open Firmware) or
no disk image (Open Firmware's CHRP medium is one partition).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from deblive.model.arch import Arch

LAYERED_NETBOOT = ("formats has 'netboot', whose fetch= loads one squashfs: a layered "
                   "build's base and layer cannot be fetched; use layout: flat")


def _made_for(arch: Arch) -> str:
    """The formats arch's boot layout makes, for a refusal's message."""
    layout = arch.boot
    assert layout is not None
    made = ["iso", *(["disk"] if layout.disk_refusal() is None else []),
            *(["netboot"] if layout.netboot_refusal() is None else [])]
    return " and ".join(made) + " only"


def check_formats(formats: tuple[str, ...], data: Mapping[str, Any]) -> tuple[str, ...]:
    """formats unchanged if the architecture (validated before them) makes each one:
    a disk image needs room after the ISO for its persistence partition."""
    arch: Arch | None = data.get("architecture")
    why = arch.boot.disk_refusal() if arch is not None and arch.boot is not None else None
    if "disk" in formats and why is not None:
        assert arch is not None
        raise ValueError(f"'disk': {arch} has no disk image ({why}): formats {_made_for(arch)}")
    return formats


def check_for_formats(key: str, value: Any, data: Mapping[str, Any]) -> Any:
    """value of key (persistence, netboot, squashfs) unchanged if the config's formats
    (and architecture: a netboot tree needs a network boot loader) allow it;
    data: the keys validated before it."""
    formats: Sequence[str] = data.get("formats", ())
    arch: Arch | None = data.get("architecture")
    if key == "persistence" and value is None and "disk" in formats:
        raise ValueError("formats has 'disk', which needs persistence (at least its "
                         "size, e.g. persistence: {size: 1GiB})")
    why = arch.boot.netboot_refusal() if arch is not None and arch.boot is not None else None
    if key == "netboot" and (value is not None or "netboot" in formats) and why is not None:
        assert arch is not None
        raise ValueError(f"{arch} has no network boot loader ({why}): formats "
                         f"{_made_for(arch)}")
    if key == "netboot" and value is None and "netboot" in formats:
        raise ValueError("formats has 'netboot', which needs netboot.url (where the "
                         "netboot directory is served, e.g. netboot: {url: "
                         "'http://192.0.2.1:8080/'})")
    if key == "netboot" and value is not None and "netboot" not in formats:
        raise ValueError("set, but formats has no 'netboot'")
    if key == "squashfs" and value.layout == "layered" and "netboot" in formats:
        raise ValueError(LAYERED_NETBOOT)
    return value


def check_devicetree(value: str | None, arch: Arch | None) -> str | None:
    """devicetree unchanged if arch's medium can load one (grub's `devicetree`)."""
    if value is not None and arch is not None and not (arch.boot and arch.boot.devicetree):
        takes = ", ".join(a for a in Arch if a.boot and a.boot.devicetree)
        raise ValueError(f"{arch}'s medium loads no devicetree (only {takes})")
    return value
