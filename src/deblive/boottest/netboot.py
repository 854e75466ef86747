"""PXE boot tests of a netboot tree: qemu's user network plays the site's servers.

qemu's user network has a DHCP server that names a boot file and a TFTP
server for a directory: the tree's pxelinux.0 (BIOS, through the NIC's iPXE
ROM) or shim (UEFI, through OVMF's own network stack). The guest reaches the
host's 127.0.0.1 at 10.0.2.2, so a tree built with netboot.url
http://10.0.2.2:PORT/ is served to it by a FileServer on 127.0.0.1:PORT;
the server's record of what it sent proves the squashfs came over HTTP.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from deblive.boottest.checks import Check
from deblive.boottest.medium import BootEntries
from deblive.boottest.modes import BadInput, BootMode
from deblive.host.fileserver import FileServer
from deblive.model.sections import NETBOOT_SQUASHFS
from deblive.vm.command import UserNetwork

QEMU_HOST = "10.0.2.2"  # the host's loopback as qemu's user network shows it


@dataclass(frozen=True)
class ServedTree:
    """The tree being served: where, and under which URL path."""

    server: FileServer
    squashfs_path: str  # the URL path live-boot asks for
    squashfs_bytes: int

    def fetches(self) -> int:
        """How many complete downloads of the squashfs the server has made so far."""
        return sum(1 for s in self.server.served
                   if s.path == self.squashfs_path and s.status == 200
                   and s.bytes == self.squashfs_bytes)

    def check(self, before: int) -> Check:
        now = self.fetches()
        return Check("http-fetch", now > before,
                     f"{self.squashfs_path} sent whole ({self.squashfs_bytes} bytes) by the "
                     "test's HTTP server" if now > before else
                     f"the test's HTTP server never sent {self.squashfs_path} whole")


def url_port(tree: Path, entries: BootEntries) -> tuple[str, int]:
    """The URL path prefix and port the tree must be served at; BadInput unless the
    guest can reach it (netboot.url on qemu's host address)."""
    url = entries.netboot_url
    if url is None:
        raise BadInput(f"{tree}: its boot-entries.json has no netboot URL")
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname != QEMU_HOST:
        raise BadInput(
            f"{tree} fetches its squashfs from {url}: a PXE test serves the tree itself "
            f"and the guest reaches it only at http://{QEMU_HOST}:PORT/ (qemu's address "
            "of the host); build a tree for testing with such a netboot.url")
    return parts.path or "/", parts.port or 80


@contextlib.contextmanager
def serving(tree: Path, entries: BootEntries) -> Iterator[ServedTree]:
    """The tree served on 127.0.0.1 at the port of its URL while in the block."""
    prefix, port = url_port(tree, entries)
    squashfs = tree / NETBOOT_SQUASHFS
    if not squashfs.is_file():
        raise BadInput(f"{tree}: no {NETBOOT_SQUASHFS} in it")
    try:
        server = FileServer(tree, "127.0.0.1", port, prefix=prefix)
    except OSError as exc:
        raise BadInput(f"cannot serve {tree} on 127.0.0.1:{port} (the port of its "
                       f"netboot.url): {exc.strerror}") from None
    with server:
        yield ServedTree(server, prefix + NETBOOT_SQUASHFS, squashfs.stat().st_size)


def pxe_network(tree: Path, entries: BootEntries, mode: BootMode) -> UserNetwork:
    """The user network for one PXE mode: TFTP of the tree, its firmware's boot file."""
    bootfile = entries.boot_file(mode.firmware)
    if bootfile is None:
        raise BadInput(f"{mode}: the netboot tree has no boot file for {mode.firmware}")
    return UserNetwork(tftp=tree, bootfile=bootfile, pxe_rom=not mode.uefi)
