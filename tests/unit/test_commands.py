"""The exact command lines and files each stage produces, without running them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from debian import deb822

from deblive.apt import sources
from deblive.build import chroot
from deblive.build.stages import bootstrap, packages, squash, users
from deblive.host import cpus
from deblive.host.imagetree import ImageTree
from deblive.model import config
from deblive.model.packages import PackageSelection

from . import conftest


def cfg(**data: object) -> config.ImageConfig:
    return conftest.parse({"name": "demo", **data}, Path("/cfg/demo.yaml"))


def test_mmdebstrap_argv() -> None:
    argv = bootstrap.mmdebstrap_argv(cfg(components=["main", "contrib"]), Path("/w/rootfs"))
    assert argv[0] == "mmdebstrap"
    assert "--mode=root" in argv
    assert "--variant=minbase" in argv
    assert "--architectures=amd64" in argv
    assert "--components=main,contrib" in argv
    assert "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg" in argv
    assert "--skip=download/empty" in argv
    # The cache is bound in by the sandbox beforehand: no shell hook mounts anything.
    assert "--skip=check/empty" in argv
    # The packages it linked in and downloaded stay for the packages stage and the cache.
    assert "--skip=cleanup/apt/cache" in argv and "--skip=essential/unlink" in argv
    assert "--dpkgopt=force-unsafe-io" in argv
    assert not any(a.startswith(("--setup-hook", "--customize-hook")) for a in argv)
    # The build sources come on standard input: the release with -updates and
    # -security, so the base gets the fixes too.
    assert argv[-3:] == ["bookworm", "/w/rootfs", "-"]
    assert "--skip=update" not in argv
    # never with signature checks off
    assert not any("trusted=yes" in a or "check-gpg" in a or "AllowInsecure" in a for a in argv)
    seeded = bootstrap.mmdebstrap_argv(cfg(), Path("/w/rootfs"), lists_in_tree=True)
    assert "--skip=update" in seeded  # the plan's verified lists are in the tree already


def test_locale_generated_only_for_exactly_that_line(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "usr/lib/locale").mkdir(parents=True)
    line = "en_US.UTF-8 UTF-8"
    with ImageTree(tmp_path) as tree:
        assert not users.locale_generated(tree, line)  # no locale.gen, no archive
        tree.write("/etc/locale.gen", "# de_DE.UTF-8 UTF-8\n  en_US.UTF-8   UTF-8\n\n")
        assert not users.locale_generated(tree, line)  # no archive yet
        tree.write("/usr/lib/locale/locale-archive", "made")
        assert users.locale_generated(tree, line)  # the postinst's: commented lines aside
        tree.write("/etc/locale.gen", f"{line}\nde_DE.UTF-8 UTF-8\n")
        assert not users.locale_generated(tree, line)  # an archive of two locales
        tree.write("/etc/locale.gen", "fr_FR.UTF-8 UTF-8\n")
        assert not users.locale_generated(tree, line)


def test_https_mirror_brings_ca_certificates() -> None:
    argv = bootstrap.mmdebstrap_argv(cfg(mirror="https://m.invalid/debian"), Path("/r"))
    assert "--include=ca-certificates" in argv


def test_debootstrap_argv() -> None:
    c = cfg(bootstrap={"backend": "debootstrap", "variant": "minbase"}, architecture="arm64")
    argv = bootstrap.debootstrap_argv(c, Path("/r"), Path("/c"))
    assert argv[:2] == ["debootstrap", "--arch=arm64"]
    assert "--variant=minbase" in argv and "--cache-dir=/c" in argv
    argv = bootstrap.debootstrap_argv(cfg(bootstrap={"backend": "debootstrap",
                                                     "variant": "important"}), Path("/r"),
                                      Path("/c"))
    assert not any(a.startswith("--variant") for a in argv)


def test_apt_argv_has_no_progress_and_recommends() -> None:
    argv = chroot.apt_get_argv(Path("/r"), ["install", "task-english"])
    assert argv[:3] == ["chroot", "/r", "apt-get"]
    text = " ".join(argv)
    assert "Dpkg::Use-Pty=0" in text and "APT::Color=0" in text
    assert "APT::Install-Recommends=true" in text
    assert "--no-install-recommends" not in text
    assert argv[-2:] == ["install", "task-english"]


def test_chroot_env_is_clean_and_noninteractive() -> None:
    env = chroot.chroot_env()
    assert env["DEBIAN_FRONTEND"] == "noninteractive"
    assert env["DEBCONF_NONINTERACTIVE_SEEN"] == "true"
    assert env["LC_ALL"] == "C.UTF-8"
    assert set(env) >= {"PATH", "HOME"}


def test_a_proxy_reaches_the_chroot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://10.0.2.100:3128/")
    monkeypatch.setenv("SECRET_OF_THE_HOST", "x")
    env = chroot.chroot_env()
    assert env["http_proxy"] == "http://10.0.2.100:3128/"
    assert "SECRET_OF_THE_HOST" not in env


def test_install_list_order_and_dedup() -> None:
    c = cfg(tasks=["task-ssh-server"], packages=["sudo", "wpasupplicant"])
    assert list(PackageSelection.from_config(c).install) == [
        "linux-image-amd64", "live-boot", "systemd-sysv", "sudo", "locales",
        "task-ssh-server", "wpasupplicant",
    ]
    assert "locales" not in list(PackageSelection.from_config(cfg(locale="C.UTF-8")).install)


def test_debconf_selections() -> None:
    lines = packages.debconf_selections(
        cfg(keyboard="de", timezone="Europe/Berlin", locale="de_DE.UTF-8",
            debconf=["foo foo/bar string baz"])
    )
    assert "keyboard-configuration keyboard-configuration/xkb-keymap select de" in lines
    assert "tzdata tzdata/Zones/Europe select Berlin" in lines
    assert "locales locales/default_environment_locale select de_DE.UTF-8" in lines
    assert lines[-1] == "foo foo/bar string baz"
    utc = packages.debconf_selections(cfg())
    assert "tzdata tzdata/Zones/Etc select UTC" in utc


def test_sources_for_the_apt_mirror() -> None:
    c = cfg(apt_mirror="http://apt.invalid/debian", components=["main", "non-free-firmware"])
    text = sources.render_sources(c, "http://apt.invalid/debian", "http://apt.invalid/sec")
    assert text == sources.render_sources(c, c.apt_mirror or "", c.security_mirror or "") \
        .replace("http://apt.invalid/debian-security", "http://apt.invalid/sec")
    paras = list(deb822.Deb822.iter_paragraphs(text.splitlines()))
    assert paras[0]["URIs"] == "http://apt.invalid/debian"
    assert paras[0]["Suites"] == "bookworm bookworm-updates"
    assert paras[0]["Components"] == "main non-free-firmware"
    assert paras[1]["Suites"] == "bookworm-security"
    assert paras[1]["URIs"] == "http://apt.invalid/sec"
    assert all(p["Signed-By"].endswith("debian-archive-keyring.gpg") for p in paras)


def test_sources_without_security_and_updates_and_for_sid() -> None:
    text = sources.render_sources(cfg(security=False, updates=False), "http://a/debian", "x")
    paras = list(deb822.Deb822.iter_paragraphs(text.splitlines()))
    assert len(paras) == 1 and paras[0]["Suites"] == "bookworm"
    text = sources.render_sources(cfg(suite="sid"), "http://a/debian", "x")
    paras = list(deb822.Deb822.iter_paragraphs(text.splitlines()))
    assert len(paras) == 1 and paras[0]["Suites"] == "sid"


def test_build_security_mirror_follows_host_only_for_host_mirror() -> None:
    # The faked host's apt sources name mirror.invalid's security archive.
    assert cfg().build_security_mirror == "http://mirror.invalid/debian-security"
    other = cfg(mirror="http://other.invalid/debian")
    assert other.build_security_mirror == "http://other.invalid/debian-security"
    assert "other.invalid/debian-security" in sources.build_sources(other)


def test_useradd_and_files() -> None:
    c = cfg(user={"name": "alice", "groups": ["sudo", "audio"]}, hostname="box")
    assert users.useradd_argv(c) == [
        "useradd", "--create-home", "--shell", "/bin/bash", "--comment", "Debian Live user",
        "--groups", "sudo,audio", "alice",
    ]
    assert "127.0.1.1\tbox\n" in users.hosts_file("box")
    assert "XKBLAYOUT=de\n" in users.keyboard_file("de")
    assert "XKBVARIANT=nodeadkeys\n" in users.keyboard_file("de(nodeadkeys)")
    conf = users.live_config_conf(c)
    assert "LIVE_USERNAME=alice\n" in conf and "LIVE_HOSTNAME=box\n" in conf
    assert "LIVE_LOCALES=en_US.UTF-8\n" in conf and "LIVE_KEYBOARD_LAYOUTS=us\n" in conf
    assert "LIVE_CONFIG_NOROOT" not in conf


@pytest.mark.parametrize("fullname", ["O'Brien", 'Anne "Nan" Smith', "$(reboot) `id` ;x"])
def test_live_config_file_is_shell_that_runs_nothing(tmp_path: Path, fullname: str) -> None:
    conf = tmp_path / "deblive.conf"
    conf.write_text(users.live_config_conf(cfg(user={"fullname": fullname})))
    out = subprocess.run(["sh", "-c", '. "$1"; printf %s "$LIVE_USER_FULLNAME"', "sh", str(conf)],
                         capture_output=True, text=True, check=True)
    assert out.stdout == fullname and out.stderr == ""


def test_sudo_policies() -> None:
    assert users.sudoers_line(cfg()) == "user ALL=(ALL) NOPASSWD: ALL\n"
    assert users.sudoers_line(cfg(user={"sudo": "password"})) == "user ALL=(ALL) ALL\n"
    none = cfg(user={"sudo": "none", "groups": []})
    assert users.sudoers_line(none) is None
    assert "LIVE_CONFIG_NOROOT=true\n" in users.live_config_conf(none)


def test_only_the_hash_scheme_is_read_from_shadow() -> None:
    shadow = "root:!:19000:0:99999:7:::\nuser:$y$j9T$salt$hash:19000:0:99999:7:::\n"
    assert users.hash_scheme(shadow, "user") == "yescrypt"
    assert users.hash_scheme(shadow, "bob") is None


def test_mksquashfs_argv() -> None:
    argv = squash.mksquashfs_argv(cfg(squashfs={"compression": "zstd", "level": 15}),
                                  Path("/r"), Path("/o.sqfs"))
    assert argv[:3] == ["mksquashfs", "/r", "/o.sqfs"]
    assert argv[argv.index("-comp") + 1] == "zstd"
    assert argv[argv.index("-Xcompression-level") + 1] == "15"
    assert "-noappend" in argv and "-b" in argv
    # mksquashfs reads every argument after -e as a path to exclude: it comes last.
    assert argv[argv.index("-e"):] == ["-e", "proc/*", "sys/*", "dev/*", "run/*"]
    xz = squash.mksquashfs_argv(cfg(), Path("/r"), Path("/o"))
    assert xz[xz.index("-comp") + 1] == "xz" and "-Xcompression-level" not in xz


def test_the_squashfs_must_record_the_configured_level() -> None:
    made_at_3 = "Compression zstd\n\tcompression-level 3\nBlock size 1048576\n"
    squash.check_level(made_at_3, "zstd", 3)
    squash.check_level("Compression zstd\nBlock size 1048576\n", "zstd", 15)  # the default
    squash.check_level("Compression xz\n", "xz", None)
    with pytest.raises(squash.SquashfsError, match="compression-level 3"):
        squash.check_level("Compression zstd\nBlock size 1048576\n", "zstd", 3)
    with pytest.raises(squash.SquashfsError, match="compression-level 19"):
        squash.check_level(made_at_3, "zstd", 19)


def test_inode_parser() -> None:
    text = "Found a valid SQUASHFS 4:0 superblock\nNumber of inodes 16757\nNumber of ids 3\n"
    assert squash.parse_inode_count(text) == 16757


def test_tree_stats_count_hard_links_once(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x" * 100)
    (tmp_path / "d" / "b").hardlink_to(tmp_path / "d" / "a")
    (tmp_path / "l").symlink_to("d/a")
    stats = squash.tree_stats(tmp_path)
    assert stats.inodes == 4  # root, d, a(=b), l
    assert stats.bytes >= 100


def test_password_settings_are_stable_per_image_and_never_from_the_password() -> None:
    yes, sha = users.password_settings(cfg())
    assert (yes, sha) == users.password_settings(cfg())
    assert yes.startswith("$y$j9T$") and len(yes) == 7 + 24 and sha.startswith("$6$")
    assert users.password_settings(cfg(name="other"))[0] != yes
    assert users.password_settings(cfg(user={"name": "bob"}))[0] != yes
    # The salt is in /etc/shadow for all to read: it must tell nothing of the password.
    assert users.password_settings(cfg(user={"password": "other"}))[0] == yes
    # The host's libcrypt (perl's crypt) takes the settings: the image's does the same.
    for setting in (yes, sha):
        out = subprocess.run(["perl", "-e", users.CRYPT_SCRIPT], input=f"live\n{setting}\n",
                             capture_output=True, text=True, check=True).stdout
        assert users.HASH_RE.fullmatch(out) and out.startswith(setting)


def test_the_initramfs_is_made_in_the_c_locale_on_one_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mkinitramfs starts some 19,000 programs: C spares each the locale's files, and one
    CPU the crossings between CPUs (host.cpus)."""
    monkeypatch.setattr(cpus, "quietest_cpu", lambda: 1)
    version = "6.1.0-57-amd64"
    (tmp_path / "lib/modules" / version).mkdir(parents=True)
    (tmp_path / "boot").mkdir()
    (tmp_path / f"boot/vmlinuz-{version}").write_text("")
    (tmp_path / "usr/sbin").mkdir(parents=True)
    (tmp_path / "usr/sbin/update-initramfs").write_text("#!/bin/sh\n")
    runner = conftest.RecordingRunner()
    with ImageTree(tmp_path) as tree:
        assert chroot.InitramfsDeferral(tree, runner).generate() == [version]
    [argv], [env] = runner.argvs, runner.envs
    assert argv[-4:] == ["update-initramfs", "-c", "-k", version]
    assert argv[:5] == ["taskset", "--cpu-list", "1", "chroot", str(tmp_path)]
    assert (env["LC_ALL"], env["LANG"]) == ("C", "C")
    # ...and zstd at its end with a worker per CPU (host.cpus gives it the CPUs back)
    assert env["ZSTD_NBTHREADS"] == str(len(os.sched_getaffinity(0)))
    # ...and its scratch on the session's /dev/shm: nothing of it touches the tree's /var/tmp
    assert env["TMPDIR"] == "/dev/shm"
    assert env["PATH"] == chroot.CHROOT_PATH  # otherwise the chroot's clean environment
    assert chroot.chroot_env()["LC_ALL"] == "C.UTF-8"  # every other command's
