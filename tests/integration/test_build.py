"""The root filesystem as the seed describes it, checked inside the squashfs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from debian import deb822

from deblive.host import treeram

from .conftest import APT_MIRROR, Build, Sentinels, run_deblive, unsquash


def shadow_field(tree: Path, user: str) -> str:
    for line in (tree / "etc/shadow").read_text().splitlines():
        if line.startswith(user + ":"):
            return line.split(":")[1]
    raise AssertionError(f"{user} not in /etc/shadow")


def test_outputs_and_report(default_build: Build) -> None:
    out = default_build.outdir
    for name in ("filesystem.squashfs", "filesystem.packages", "build.log", "report.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*partial")) and not list(out.glob("*.broken"))
    report = json.loads((out / "report.json").read_text())
    assert report["result"] == "success"
    assert len(report["config_digest"]) == 64
    stages = [s["name"] for s in report["stages"]]
    for stage in ("bootstrap", "packages", "users", "hook", "initramfs", "sources", "clean",
                  "squash"):
        assert stage in stages
    assert all(s["ok"] and s["seconds"] >= 0 for s in report["stages"])
    assert report["packages"]["count"] > 100
    assert isinstance(report["downloaded_bytes"], int)
    sq = {o["name"]: o for o in report["outputs"]}["filesystem.squashfs"]
    assert sq["bytes"] == (out / "filesystem.squashfs").stat().st_size
    assert len(sq["sha256"]) == 64
    log = (out / "build.log").read_text()
    assert "stage squash: done" in log and "$ mmdebstrap" in log
    # One initramfs, made after the hook, not one per kernel postinst and trigger.
    assert log.count("update-initramfs: Generating") == 1, log.count("update-initramfs: Gen")
    assert "update-initramfs deferred" in log
    if len(os.sched_getaffinity(0)) > 1:  # its zstd escaped the one CPU of mkinitramfs
        assert "zstd given them back from the pin" in log


def test_default_image_has_live_user_and_locked_root(
    default_build: Build, tmp_path: Path
) -> None:
    tree = unsquash(default_build.path("filesystem.squashfs"), tmp_path / "t",
                    "etc/shadow", "etc/group", "etc/passwd", "boot", "usr/sbin")
    assert shadow_field(tree, "root").startswith(("!", "*"))
    assert shadow_field(tree, "user").startswith("$")
    sudo = [line for line in (tree / "etc/group").read_text().splitlines()
            if line.startswith("sudo:")]
    assert sudo and "user" in sudo[0].split(":")[3].split(",")
    assert list((tree / "boot").glob("vmlinuz-*")) and list((tree / "boot").glob("initrd.img-*"))
    assert (tree / "usr/sbin/useradd").exists()  # the extraction worked
    assert not (tree / "usr/sbin/policy-rc.d").exists()


def test_recommends_of_tasks_are_installed(custom_build: Build) -> None:
    names = {line.split("\t")[0] for line in
             custom_build.path("filesystem.packages").read_text().splitlines()}
    # task-english Recommends these; task-ssh-server Depends on openssh-server
    assert {"task-english", "task-ssh-server", "openssh-server", "wpasupplicant"} <= names
    assert {"iamerican", "ibritish", "util-linux-locales"} <= names, "Recommends missing"
    assert "hello" in names  # installed by the hook


def test_packages_list_matches_dpkg_status(custom_build: Build, custom_tree: Path) -> None:
    listed = dict(line.split("\t") for line in
                  custom_build.path("filesystem.packages").read_text().splitlines())
    status = {}
    with (custom_tree / "var/lib/dpkg/status").open() as f:
        for para in deb822.Packages.iter_paragraphs(f, use_apt_pkg=False):
            if para["Status"].endswith(" installed"):
                status[para["Package"]] = para["Version"]
    assert listed == status


def test_user_groups_and_root(custom_tree: Path) -> None:
    assert shadow_field(custom_tree, "root").startswith(("!", "*"))
    groups = {line.split(":")[0]: line.split(":")[3].split(",")
              for line in (custom_tree / "etc/group").read_text().splitlines()}
    assert "alice" in groups["sudo"] and "alice" in groups["audio"]
    assert (custom_tree / "home/alice").is_dir()
    assert (custom_tree / "etc/hostname").read_text() == "itest-host\n"
    assert Path((custom_tree / "etc/localtime").readlink()).name == "Berlin"


def test_image_locale_is_made_once(custom_build: Build, custom_tree: Path) -> None:
    """The locales package's postinst made the archive of the preseeded locale; the users
    stage wrote the same single line to locale.gen and did not make it again."""
    assert (custom_tree / "etc/locale.gen").read_text() == "en_US.UTF-8 UTF-8\n"
    archive = custom_tree / "usr/lib/locale/locale-archive"
    listed = subprocess.run(["localedef", "--list-archive", str(archive)], capture_output=True,
                            text=True, check=True).stdout.split()
    assert listed == ["en_US.utf8"]
    log = custom_build.path("build.log").read_text()
    assert "locale en_US.UTF-8: generated by the locales package already" in log
    assert " locale-gen\n" not in log


def test_apt_sources_name_the_apt_mirror_and_no_build_lists(custom_tree: Path) -> None:
    sources = custom_tree / "etc/apt/sources.list.d/debian.sources"
    paras = list(deb822.Deb822.iter_paragraphs(sources.read_text().splitlines()))
    assert paras[0]["URIs"] == APT_MIRROR
    assert paras[1]["URIs"] == APT_MIRROR + "-security"
    assert not (custom_tree / "etc/apt/sources.list").exists()
    others = sorted(p.name for p in (custom_tree / "etc/apt/sources.list.d").iterdir())
    assert others == ["debian.sources", "deblive-1-127.0.0.1.sources"]  # the shipped repository
    lists = [p.name for p in (custom_tree / "var/lib/apt/lists").iterdir()
             if p.is_file() and p.name != "lock"]
    assert lists == []
    assert not list((custom_tree / "var/cache/apt/archives").glob("*.deb"))


def test_tree_is_clean(custom_tree: Path) -> None:
    assert not (custom_tree / "usr/sbin/policy-rc.d").exists()
    assert not (custom_tree / "usr/sbin/policy-rc.d.deblive-saved").exists()
    ssd = custom_tree / "usr/sbin/start-stop-daemon"
    if not ssd.exists():
        ssd = custom_tree / "sbin/start-stop-daemon"
    assert b"deblive" not in ssd.read_bytes()  # the real one is back
    # The deferred update-initramfs is gone again, and the initramfs is there.
    assert not (custom_tree / "usr/local/sbin/update-initramfs").exists()
    assert not (custom_tree / "etc/apt/apt.conf.d/00deblive-dpkg-path").exists()
    assert list((custom_tree / "boot").glob("initrd.img-*"))
    assert (custom_tree / "etc/machine-id").read_text() == ""
    assert not list((custom_tree / "etc/ssh").glob("ssh_host_*"))
    assert (custom_tree / "etc/systemd/system/deblive-ssh-hostkeys.service").is_file()
    assert not list((custom_tree / "tmp").iterdir())
    assert not [p for p in (custom_tree / "var/log").rglob("*") if p.is_file()]
    resolv = custom_tree / "etc/resolv.conf"
    host = Path("/etc/resolv.conf").read_bytes()
    assert not (resolv.is_file() and resolv.read_bytes() == host), "host resolv.conf shipped"
    assert not list(custom_tree.glob("etc/*.deblive-saved"))
    assert not list((custom_tree / "proc").iterdir())
    assert not list((custom_tree / "sys").iterdir())


def test_overlay_is_copied_as_root_with_its_modes_and_links(
        custom_build: Build, custom_tree: Path, sentinels: Sentinels) -> None:
    overlay = custom_tree / "etc/deblive-overlay"
    expected = {"settings.conf": 0o640, "private": 0o700, "private/secret": 0o600}
    for rel, mode in expected.items():
        st = (overlay / rel).lstat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, 0, 0), rel
    tool = (custom_tree / "usr/local/bin/overlay-tool").lstat()
    assert (stat.S_IMODE(tool.st_mode), tool.st_uid) == (0o755, 0)
    assert stat.S_IMODE((custom_tree / "etc").lstat().st_mode) == 0o755  # the image's own
    assert os.readlink(overlay / "hostname-link") == "/etc/hostname"
    assert os.readlink(overlay / "host-link") == str(sentinels.base / "file")  # not followed
    assert sentinels.intact()
    assert "overlay: 3 files from " in custom_build.path("build.log").read_text()


def test_hook_ran_with_its_environment(custom_build: Build, custom_tree: Path) -> None:
    marker = dict(line.split("=", 1) for line in
                  (custom_tree / "etc/deblive-marker").read_text().splitlines())
    assert marker["name"] == "itest"
    assert marker["requested"] == "stable" and marker["suite"] not in ("stable", "")
    assert marker["arch"] == "amd64"
    assert marker["apt_mirror"] == APT_MIRROR
    assert marker["user"] == "alice"
    report = json.loads(custom_build.path("report.json").read_text())
    assert marker["build_id"] == report["build_id"]
    assert "hook finished" in custom_build.path("build.log").read_text()


def test_apt_log_kept_without_progress_bars(custom_build: Build, default_build: Build) -> None:
    logs = custom_build.outdir / "logs"
    text = (logs / "apt.log").read_text(errors="replace")
    assert "Setting up openssh-server" in text
    assert "Unpacking task-english" in text
    assert "Progress: [" not in text and "\x1b[" not in text and "\r" not in text
    # The custom image's hook replaced dpkg.log by a link to a host file: not kept, and said.
    assert not (logs / "dpkg.log").exists()
    assert "/var/log/dpkg.log in the image is not a regular file" in custom_build.output
    dpkg = (default_build.outdir / "logs" / "dpkg.log").read_text()
    assert " status installed sudo:" in dpkg


def test_failing_hook_fails_the_build_and_cleans_up(failing_hook_build: Build) -> None:
    b = failing_hook_build
    assert b.returncode == 1, b.output[-2000:]
    assert "customisation hook" in b.output and "exit status 7" in b.output
    assert "about to fail on purpose" in b.output
    assert "full log:" in b.output
    assert not (b.outdir / "report.json").exists()
    assert not (b.outdir / "filesystem.squashfs").exists()
    rootfs = b.workdir / "rootfs"
    assert rootfs.is_dir(), "the tree is kept for debugging"
    # It was built in RAM (--tree ram) and copied to the work tree before the tmpfs went.
    log = (b.workdir / "build.log").read_text()
    assert f"image tree copied from RAM to {rootfs} for inspection" in log
    assert (rootfs / "etc/os-release").is_file() and (rootfs / "usr/bin/sudo").is_file()
    assert (rootfs / "usr/bin/sudo").stat().st_mode & 0o4000, "setuid kept by the copy"
    assert not os.path.ismount(rootfs)
    assert not (b.workdir / "rootfs.saving").exists()
    # Seen from inside the build's namespace, after teardown:
    assert "mounts below the work tree after teardown: 0" in log
    assert not list((rootfs / "proc").iterdir()), "proc still mounted"
    assert not (rootfs / "dev/pts/ptmx").exists(), "devpts still mounted"
    assert not (rootfs / "usr/sbin/policy-rc.d").exists()
    assert not (rootfs / "usr/local/sbin/update-initramfs").exists()
    failed = json.loads((b.workdir / "report.json").read_text())
    assert failed["result"] == "failed"
    assert failed["image_tree"]["place"] == "ram" and failed["image_tree"]["cap_mib"] > 0
    mounts = Path("/proc/self/mounts").read_text()
    assert str(b.workdir) not in mounts


def test_the_tree_is_built_where_the_report_says(default_build: Build,
                                                 custom_build: Build) -> None:
    """auto builds the default image's tree in RAM on a host with memory to spare (a
    cold build here: 54 s against 60 s on disk); the custom image asked for the disk."""
    tree = json.loads(default_build.path("report.json").read_text())["image_tree"]
    assert tree["place"] in ("ram", "disk"), tree
    if treeram.mem_available() >= 8 * 2**30:
        assert tree["place"] == "ram", tree
        log = (default_build.outdir / "build.log").read_text()
        assert f"image tree in RAM (tmpfs, at most {tree['cap_mib']} MiB): about " in log
    custom = json.loads(custom_build.path("report.json").read_text())["image_tree"]
    assert custom == {"place": "disk", "why": "asked for (--tree disk)", "cap_mib": None}
    log = (custom_build.outdir / "build.log").read_text()
    assert "image tree on disk: asked for (--tree disk)" in log


def test_unreachable_mirror_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_deblive("build", "--mirror", "http://127.0.0.1:9/debian", "-o", tmp_path / "o",
                       "--workdir", tmp_path / "w", timeout=120)
    assert proc.returncode == 2
    assert "mirror http://127.0.0.1:9/debian is unreachable" in proc.stderr
    assert not (tmp_path / "w").exists()


def test_unknown_suite_is_exit_2(tmp_path: Path) -> None:
    proc = run_deblive("build", "--suite", "nonesuch", "-o", tmp_path / "o")
    assert proc.returncode == 2 and "suite: unknown suite 'nonesuch'" in proc.stderr


def test_no_leftover_loop_devices() -> None:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert "deblive" not in out and "/tmp/pytest" not in out
