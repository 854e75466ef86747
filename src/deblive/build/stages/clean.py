"""Step 7: clean the tree for shipping and write its package list.

What a live system regenerates or must not carry goes: apt caches and lists,
logs (kept in the output first), temporary files, the machine id (emptied, so
systemd makes a new one per boot), ssh host keys (made at first boot instead).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from debian import deb822

from deblive.build.context import BuildContext

SSH_KEYGEN_UNIT = """\
[Unit]
Description=Create SSH host keys for this live session (deblive)
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
"""


def installed_packages(rootfs: Path) -> list[tuple[str, str, str]]:
    """(package, version, architecture) of every installed package, from dpkg's status."""
    status = rootfs / "var/lib/dpkg/status"
    out = []
    with status.open(encoding="utf-8") as f:
        for para in deb822.Packages.iter_paragraphs(f, use_apt_pkg=False):
            if para.get("Status", "").split()[-1:] == ["installed"]:
                out.append((para["Package"], para["Version"], para.get("Architecture", "")))
    return sorted(out)


def packages_list(rootfs: Path) -> str:
    """filesystem.packages in live-build's format: name, tab, version."""
    return "".join(f"{name}\t{version}\n" for name, version, _ in installed_packages(rootfs))


def _empty_dir(path: Path) -> None:
    if not path.is_dir() or path.is_symlink():
        return
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _truncate_logs(logdir: Path) -> None:
    """Remove log files but keep directories (packages expect them to exist)."""
    if not logdir.is_dir():
        return
    for entry in sorted(logdir.rglob("*"), reverse=True):
        if entry.is_file() or entry.is_symlink():
            entry.unlink()


def keep_build_logs(rootfs: Path, dest: Path) -> None:
    """apt's and dpkg's logs of the build go to the output, not the image."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in ("var/log/apt/term.log", "var/log/apt/history.log", "var/log/dpkg.log"):
        src = rootfs / rel
        if src.is_file():
            shutil.copyfile(src, dest / src.name)


def run(ctx: BuildContext) -> None:
    rootfs = ctx.rootfs
    keep_build_logs(rootfs, ctx.work.output / "logs")
    for rel in ("var/cache/apt/archives/partial", "var/lib/apt/lists/partial"):
        _empty_dir(rootfs / rel)
    for pattern in ("var/cache/apt/*.bin", "var/cache/apt/archives/*.deb"):
        for entry in rootfs.glob(pattern):
            entry.unlink()
    for rel in ("tmp", "var/tmp", "var/cache/debconf/tmp"):
        _empty_dir(rootfs / rel)
    for old in rootfs.glob("var/cache/debconf/*-old"):
        old.unlink()
    _truncate_logs(rootfs / "var/log")
    machine_id = rootfs / "etc/machine-id"
    if machine_id.exists():
        machine_id.write_text("")
    dbus_id = rootfs / "var/lib/dbus/machine-id"
    if dbus_id.is_file() and not dbus_id.is_symlink():
        dbus_id.unlink()
    keys = list(rootfs.glob("etc/ssh/ssh_host_*"))
    for key in keys:
        key.unlink()
    if keys or (rootfs / "usr/sbin/sshd").exists():
        unit = rootfs / "etc/systemd/system/deblive-ssh-hostkeys.service"
        unit.write_text(SSH_KEYGEN_UNIT)
        wants = rootfs / "etc/systemd/system/ssh.service.wants"
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / unit.name
        link.unlink(missing_ok=True)
        link.symlink_to(f"/etc/systemd/system/{unit.name}")
    manifest = ctx.work.output / "filesystem.packages"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(packages_list(rootfs))
    ctx.facts["package_count"] = len(manifest.read_text().splitlines())
    kernels = sorted(p.name.removeprefix("vmlinuz-") for p in rootfs.glob("boot/vmlinuz-*"))
    ctx.facts["kernels"] = kernels
