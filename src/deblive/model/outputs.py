"""What each output format needs from the rest of the config.

One root filesystem and one squashfs make every format, but the disk image
needs its persistence partition and the netboot tree needs the URL it is
served at, and live-boot's fetch= loads exactly one squashfs, so a netboot
tree cannot carry a layered build's stack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from deblive.model.arch import Arch

LAYERED_NETBOOT = ("formats has 'netboot', whose fetch= loads one squashfs: a layered "
                   "build's base and layer cannot be fetched; use layout: flat")


def check_for_formats(key: str, value: Any, data: Mapping[str, Any]) -> Any:
    """value of key (persistence, netboot, squashfs) unchanged if the config's formats
    (and architecture: a netboot tree needs Debian's signed network grub) allow it;
    data: the keys validated before it."""
    formats: Sequence[str] = data.get("formats", ())
    arch: Arch | None = data.get("architecture")
    if key == "persistence" and value is None and "disk" in formats:
        raise ValueError("formats has 'disk', which needs persistence (at least its "
                         "size, e.g. persistence: {size: 1GiB})")
    if key == "netboot" and value is None and "netboot" in formats:
        raise ValueError("formats has 'netboot', which needs netboot.url (where the "
                         "netboot directory is served, e.g. netboot: {url: "
                         "'http://192.0.2.1:8080/'})")
    if key == "netboot" and value is not None and "netboot" not in formats:
        raise ValueError("set, but formats has no 'netboot'")
    if (key == "netboot" and value is not None and arch is not None and arch.boot is not None
            and not arch.boot.signed):
        raise ValueError(f"{arch} has no network boot loader (Debian signs no network grub "
                         "for it): formats iso and disk only")
    if key == "squashfs" and value.layout == "layered" and "netboot" in formats:
        raise ValueError(LAYERED_NETBOOT)
    return value


def check_devicetree(value: str | None, arch: Arch | None) -> str | None:
    """devicetree unchanged if arch's medium can load one (grub's `devicetree`)."""
    if value is not None and arch is not None and not (arch.boot and arch.boot.devicetree):
        takes = ", ".join(a for a in Arch if a.boot and a.boot.devicetree)
        raise ValueError(f"{arch}'s medium loads no devicetree (only {takes})")
    return value
