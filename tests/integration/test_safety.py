"""CI tier: what the image tree, the config and other users plant never reaches the host.

The custom build's hook plants absolute links to host sentinel files where the
later stages read, write, empty and delete; the build must leave the
sentinels as they were and copy nothing of them anywhere. The same image
carries text that must survive quoting (a full name with both quotes), a
password that must appear nowhere, and sudo that asks for it. Then a work
base another user prepared, and deletion across a bind mount of the same
file system.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CUSTOM_PASSWORD, SENTINEL_TEXT, Build, Sentinels, run_deblive, unsquash


def files_below(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and not p.is_symlink()]


def test_links_the_hook_planted_reached_no_host_file(custom_build: Build,
                                                     sentinels: Sentinels) -> None:
    assert sentinels.intact(), "a host file the image linked to was changed or deleted"
    leaked = [str(p) for p in files_below(custom_build.outdir)
              if SENTINEL_TEXT.encode() in p.read_bytes()]
    assert leaked == [], "host file content copied into the outputs"
    assert not list(Path("/var/cache/deblive/archives").glob("planted_*"))


def test_planted_links_are_removed_or_replaced_in_the_image(custom_build: Build,
                                                            tmp_path: Path) -> None:
    tree = unsquash(custom_build.path("filesystem.squashfs"), tmp_path / "t",
                    "etc", "tmp", "var/tmp", "var/lib/apt/lists", "var/log")
    for rel in ("etc/ssh/ssh_host_planted_key", "etc/apt/sources.list",
                "var/lib/apt/lists/planted_InRelease", "tmp/planted", "var/tmp/planted-dir",
                "var/log/dpkg.log"):
        assert not os.path.lexists(tree / rel), rel
    machine_id = tree / "etc/machine-id"
    assert machine_id.is_file() and not machine_id.is_symlink()
    assert machine_id.read_text() == ""
    link = tree / "etc/deblive-link"
    assert not link.is_symlink() and link.read_text() == "written by dl_write\n"


def test_quoted_text_survives_and_sudo_asks_for_the_password(custom_build: Build,
                                                             tmp_path: Path) -> None:
    tree = unsquash(custom_build.path("filesystem.squashfs"), tmp_path / "t", "etc")
    passwd = (tree / "etc/passwd").read_text().splitlines()
    alice = next(line for line in passwd if line.startswith("alice:"))
    assert alice.split(":")[4] == 'Anne "Nan" O\'Brien'
    sudoers = tree / "etc/sudoers.d/live"
    assert sudoers.read_text() == "alice ALL=(ALL) ALL\n"
    assert sudoers.stat().st_mode & 0o777 == 0o440
    report = json.loads(custom_build.path("report.json").read_text())
    assert report["live_user"] == {"name": "alice", "password": "set",
                                   "password_hash": "yescrypt", "sudo": "password"}


def test_the_password_is_in_no_output(custom_build: Build) -> None:
    hits = [str(p) for p in files_below(custom_build.outdir)
            if CUSTOM_PASSWORD.encode() in p.read_bytes()]
    assert hits == []
    proc = run_deblive("validate", custom_build.config, "--show")
    assert proc.returncode == 0 and CUSTOM_PASSWORD not in proc.stdout
    assert '"password": "**********"' in proc.stdout


def test_a_work_base_another_user_prepared_is_refused(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    base = tmp_path / "shared-tmp" / "deblive"
    base.mkdir(parents=True)
    os.chmod(base.parent, 0o1777)
    victim = tmp_path / "victim"
    victim.write_text("host data\n")
    # What the other user prepared: the base, a lock that is a link to a host
    # file, and a work tree that is a link to a host directory.
    os.chown(base, nobody.pw_uid, nobody.pw_gid)
    os.chmod(base, 0o777)
    (base / ".deblive-bookworm-amd64.lock").symlink_to(victim)
    (base / "deblive-bookworm-amd64").symlink_to(tmp_path)
    env = {**os.environ, "DEBLIVE_WORKDIR": str(base)}
    for argv in (["build", "--no-iso", "-o", str(tmp_path / "out")], ["clean"]):
        proc = subprocess.run([sys.executable, "-m", "deblive", *argv],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"work base {base} is owned by uid {nobody.pw_uid}" in proc.stderr, proc.stderr
    assert victim.read_text() == "host data\n"
    assert (tmp_path / "shared-tmp").is_dir()
    # A base of ours that others can write to is refused too.
    os.chown(base, 0, 0)
    proc = subprocess.run([sys.executable, "-m", "deblive", "clean"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "writable by group or others" in proc.stderr


def test_deletion_does_not_cross_a_bind_mount_of_the_same_file_system(tmp_path: Path) -> None:
    """rm --one-file-system empties a bind source; deblive's deletion refuses it."""
    source = tmp_path / "precious"
    source.mkdir()
    (source / "data").write_text("keep me\n")
    tree = tmp_path / "work"
    (tree / "rootfs/mnt").mkdir(parents=True)
    script = (
        f"mount --bind {source} {tree}/rootfs/mnt && "
        f"{sys.executable} -c "
        "'import sys; from pathlib import Path; from deblive.host import deletion; "
        "deletion.remove_tree(Path(sys.argv[1]))' "
        f"{tree}"
    )
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert re.search(r"refusing to delete across a mount point: .*rootfs/mnt", proc.stderr), \
        proc.stderr
    assert (source / "data").read_text() == "keep me\n"


@pytest.mark.parametrize("key", ["boot.title", "user.fullname", "user.password"])
def test_injections_are_refused_by_the_cli(tmp_path: Path, key: str) -> None:
    text = {
        "boot.title": 'boot: {title: "Live\\nmenuentry evil {"}',
        "user.fullname": "user: {fullname: 'x:0:0:root'}",
        "user.password": 'user: {password: "pw\\nroot:x"}',
    }[key]
    config = tmp_path / "c.yaml"
    config.write_text(f"name: x\n{text}\n")
    proc = run_deblive("build", config, "-o", tmp_path / "out", "--workdir", tmp_path / "w")
    assert proc.returncode == 2 and f"{config}: {key}: " in proc.stderr, proc.stderr
    assert not (tmp_path / "w").exists()
