"""The netboot format: its menus, the boot packages it asks for, the PXE test network,
the file server (`deblive serve`, the PXE tests' HTTP) and how a tree is published."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deblive.boottest import netboot
from deblive.boottest.medium import BootEntries, read_entries
from deblive.boottest.modes import BadInput, BootMode
from deblive.build import menus, publish, report
from deblive.host.fileserver import FileServer
from deblive.model.arch import Arch
from deblive.model.bootmenu import build_menu
from deblive.model.config import ImageConfig
from deblive.model.packages import PackageSelection
from deblive.vm.command import UserNetwork

from . import conftest

URL = "http://192.0.2.7:8080/live-lab/"


def cfg(**data: object) -> ImageConfig:
    return conftest.parse({"name": "demo", "formats": ["iso", "netboot"],
                           "netboot": {"url": URL}, **data}, Path("/cfg/demo.yaml"))


def test_the_url_is_kept_with_one_trailing_slash() -> None:
    assert cfg(netboot={"url": "http://192.0.2.7:8080/live-lab"}).netboot.url == URL  # type: ignore[union-attr]
    assert cfg().netboot.squashfs_url == URL + "live/filesystem.squashfs"  # type: ignore[union-attr]


def test_the_netboot_menu_fetches_the_squashfs_and_leaves_the_installer_out() -> None:
    config = cfg(installer={"sources": ["directory"], "directory": "."},
                 persistence={"size": "64MiB"}, languages=[{"locale": "de_DE.UTF-8",
                                                            "keyboard": "de", "label": "Deutsch"}])
    medium = build_menu(config)
    net = build_menu(config, netboot=True)
    assert "install" in {e.id for e in medium.entries()}
    assert {e.id for e in net.entries()} == {"live", "persistence", "failsafe", "lang-de-de-utf-8"}
    fetch = f"fetch={URL}live/filesystem.squashfs"
    for entry in net.entries():
        assert entry.cmdline[:2] == ("boot=live", fetch), entry
        # The serial console stays last: systemd's getty is on the last console=.
        assert entry.cmdline[-1].startswith("console=ttyS0")
    assert not any(fetch in e.cmdline for e in medium.entries())


def test_pxelinux_reads_its_menu_and_splash_from_pxelinux_cfg() -> None:
    rendered = menus.render_isolinux(build_menu(cfg(), netboot=True), loader_dir="/pxelinux.cfg")
    assert "INCLUDE /pxelinux.cfg/menu.cfg" in rendered["isolinux.cfg"]
    assert "MENU BACKGROUND /pxelinux.cfg/splash.png" in rendered["isolinux.cfg"]
    assert "/isolinux" not in rendered["isolinux.cfg"]
    assert "INCLUDE /isolinux/menu.cfg" in menus.render_isolinux(build_menu(cfg()))["isolinux.cfg"]


def test_pxelinux_is_downloaded_only_for_netboot() -> None:
    assert "pxelinux" in PackageSelection.from_config(cfg()).boot
    plain = conftest.parse({"name": "demo"}, Path("/cfg/demo.yaml"))
    assert "pxelinux" not in PackageSelection.from_config(plain).boot
    arm = cfg(architecture="arm64")
    assert "pxelinux" not in PackageSelection.from_config(arm).boot


def test_the_pxe_network_names_each_firmware_s_boot_file(tmp_path: Path) -> None:
    entries = BootEntries(Arch.AMD64, "user", "nopasswd", True, True, None,
                          "http://10.0.2.2:8780/", (("bios", "pxelinux.0"),
                                                    ("uefi", "shimx64.efi")))
    bios = netboot.pxe_network(tmp_path, entries, BootMode.PXE_BIOS)
    assert (bios.bootfile, bios.pxe_rom) == ("pxelinux.0", True)
    sb = netboot.pxe_network(tmp_path, entries, BootMode.PXE_SECUREBOOT)
    assert (sb.bootfile, sb.pxe_rom) == ("shimx64.efi", False)
    args = sb.args()
    assert f"tftp={tmp_path}" in args[1] and "bootfile=shimx64.efi" in args[1]
    # OVMF boots from the NIC with its own network stack: no iPXE ROM, first in the order.
    assert args[3] == "virtio-net-pci,netdev=net0,romfile=,bootindex=1"
    assert UserNetwork().args()[3] == "virtio-net-pci,netdev=net0,romfile="
    assert netboot.url_port(tmp_path, entries) == ("/", 8780)
    for url in ("http://192.0.2.7/", "https://10.0.2.2/"):
        other = BootEntries(Arch.AMD64, "user", "nopasswd", True, True, None, url, ())
        with pytest.raises(BadInput, match=r"10\.0\.2\.2"):
            netboot.url_port(tmp_path, other)


def test_a_netboot_tree_s_entries_are_read_from_inside_it(tmp_path: Path) -> None:
    tree = tmp_path / "netboot"
    tree.mkdir()
    data = {"image": "demo-bookworm-amd64", "architecture": "amd64", "bios": True,
            "live_user": {"name": "user", "sudo": "nopasswd"}, "root_locked": True,
            "menu": build_menu(cfg(), netboot=True).to_json(),
            "netboot": {"url": URL, "boot_files": {"uefi": "shimx64.efi"}}}
    (tree / "boot-entries.json").write_text(json.dumps(data))
    entries = read_entries(tree)
    assert entries is not None and entries.netboot_url == URL
    assert entries.boot_file("secureboot") == "shimx64.efi" and entries.boot_file("bios") is None


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "live").mkdir(parents=True)
    (root / "live" / "filesystem.squashfs").write_bytes(b"s" * 3_000_000)
    (tmp_path / "secret").write_text("host file")
    (root / "live" / "escape").symlink_to(tmp_path / "secret")
    (root / "live" / "inside").symlink_to("filesystem.squashfs")
    return root


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    answer = conn.getresponse()
    return answer.status, answer.read()


def test_the_file_server_serves_the_tree_and_nothing_else(tree: Path) -> None:
    with FileServer(tree, prefix="/lab/") as server:
        status, body = _get(server.port, "/lab/live/filesystem.squashfs")
        assert (status, len(body)) == (200, 3_000_000)
        assert _get(server.port, "/lab/live/inside")[0] == 200
        for path in ("/live/filesystem.squashfs", "/lab/live/escape", "/lab/../secret",
                     "/lab/%2e%2e/secret", "/lab/live/", "/lab/live/missing"):
            assert _get(server.port, path)[0] == 404, path
        assert server.bytes_served("/lab/live/filesystem.squashfs") == 3_000_000
        assert {s.status for s in server.served} == {200, 404}


def test_deblive_serve_serves_a_tree_until_interrupted(tree: Path) -> None:
    data = {"image": "demo", "architecture": "amd64", "bios": True,
            "live_user": {"name": "user", "sudo": "nopasswd"}, "root_locked": True,
            "menu": build_menu(cfg(), netboot=True).to_json(),
            "netboot": {"url": URL, "boot_files": {"uefi": "shimx64.efi"}}}
    (tree / "boot-entries.json").write_text(json.dumps(data))
    with FileServer(tree) as probe:  # a port free a moment ago
        port = probe.port
    proc = subprocess.Popen([sys.executable, "-m", "deblive", "serve", str(tree), "--port",
                             str(port), "--bind", "127.0.0.1"], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            try:
                status, body = _get(port, "/live-lab/live/filesystem.squashfs")
                break
            except OSError:
                time.sleep(0.1)
        assert (status, len(body)) == (200, 3_000_000)
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    # Ctrl-C ends it, with deblive's status for an interrupt.
    assert proc.returncode == 130, err
    said = " ".join(err.split())
    assert f"serving {tree} at http://127.0.0.1:{port}/live-lab/" in said
    assert '"GET /live-lab/live/filesystem.squashfs HTTP/1.1" 200' in said


def test_deblive_serve_refuses_what_is_not_a_netboot_tree(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "deblive", "serve", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a netboot tree" in " ".join(proc.stderr.split())


def test_a_tree_is_published_whole_replacing_the_old_one(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    new = work / "netboot"
    (new / "live").mkdir(parents=True)
    (new / "live" / "vmlinuz").write_text("new")
    (out / "netboot").mkdir(parents=True)
    (out / "netboot" / "stale").write_text("old")
    publish.publish_tree(new, out / "netboot")
    assert sorted(os.listdir(out)) == ["netboot"]
    assert os.listdir(out / "netboot") == ["live"] and not new.exists()
    files = report.output_files([out / "netboot"])
    assert [report.output_name(f, out) for f in files] == ["netboot/live/vmlinuz"]
    report.sha256sums(files, out / "SHA256SUMS")
    assert (out / "SHA256SUMS").read_text().endswith("  netboot/live/vmlinuz\n")


def test_the_tree_names_carry_the_devicetree_only_when_configured() -> None:
    from deblive.build.stages.netboot import tree_names

    assert "live/devicetree.dtb" not in tree_names(Arch.ARM64)
    with_dtb = tree_names(Arch.ARM64, devicetree=True)
    assert "live/devicetree.dtb" in with_dtb and "shimaa64.efi" in with_dtb
    assert "pxelinux.0" not in with_dtb and "pxelinux.0" in tree_names(Arch.I386)
