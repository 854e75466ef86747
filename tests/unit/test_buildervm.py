"""Unit tests for the builder VM: its shares, qemu command, control files and image recipe.

No VM is started; the real builds in a VM are in tests/integration/test_buildervm.py.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from deblive.buildervm import image as builderimage
from deblive.buildervm import run as buildervm
from deblive.buildervm.run import InnerCommand, Share
from deblive.core.log import BuildLog
from deblive.model import config


def make_config(tmp_path: Path, **extra: object) -> config.ImageConfig:
    directory = tmp_path / "images"
    directory.mkdir(exist_ok=True)
    (directory / "hook.sh").write_text("#!/bin/sh\n")
    path = directory / "live.yaml"
    path.write_text("name: live\nsuite: bookworm\nhook: hook.sh\n")
    return config.load(path, {k: v for k, v in extra.items()})


def test_shares_cover_config_output_and_cache_at_their_own_paths(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    shares = buildervm.plan_shares(cfg, tmp_path / "out", tmp_path / "cache")
    by_path = {s.path: s for s in shares}
    assert set(by_path) == {tmp_path / "images", tmp_path / "out", tmp_path / "cache"}
    assert not by_path[tmp_path / "images"].writable  # the hook's directory is inside it
    assert by_path[tmp_path / "out"].writable and by_path[tmp_path / "cache"].writable
    assert len({s.tag for s in shares}) == len(shares)


def test_a_hook_outside_the_config_directory_is_shared_read_only(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    other = tmp_path / "hooks"
    other.mkdir()
    (other / "extra.sh").write_text("#!/bin/sh\n")
    shares = buildervm.plan_shares(cfg, tmp_path / "out", tmp_path / "cache",
                                   hook_override=other / "extra.sh")
    share = next(s for s in shares if s.path == other)
    assert not share.writable


def test_output_inside_the_config_directory_is_its_own_writable_share(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    shares = buildervm.plan_shares(cfg, tmp_path / "images" / "out", tmp_path / "cache")
    paths = [s.path for s in shares]
    # Parents first: the guest mounts them in this order.
    assert paths.index(tmp_path / "images") < paths.index(tmp_path / "images" / "out")
    assert next(s for s in shares if s.path == tmp_path / "images" / "out").writable


@pytest.mark.parametrize("directory", ["/", "/usr", "/etc/deblive", "/var", "/run/x"])
def test_shares_that_would_hide_the_builders_system_are_refused(
    tmp_path: Path, directory: str
) -> None:
    cfg = make_config(tmp_path)
    with pytest.raises(buildervm.ShareError, match="hide the builder's own system") as info:
        buildervm.plan_shares(cfg, Path(directory), tmp_path / "cache")
    assert info.value.exit_code == 2


def test_inner_command_forwards_options() -> None:
    inner = InnerCommand(Path("/srv/images/live.yaml"),
                         {"suite": "trixie", "arch": "arm64"}, make_iso=False, force=True)
    argv = inner.argv(Path("/srv/out"), Path("/var/cache/deblive"))
    assert argv[:3] == ["deblive", "build", "/srv/images/live.yaml"]
    assert argv[argv.index("--suite") + 1] == "trixie"
    assert argv[argv.index("--arch") + 1] == "arm64"
    assert argv[argv.index("-o") + 1] == "/srv/out"
    assert argv[argv.index("--workdir") + 1] == buildervm.GUEST_WORK
    assert "--no-iso" in argv and "--force" in argv and "--verbose" not in argv


def test_control_files_name_shares_env_and_command(tmp_path: Path, fake_host_apt: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    ctl = tmp_path / "ctl"
    shares = [Share("dl0", Path("/srv/images"), False), Share("dl1", Path("/srv/out"), True)]
    inner = InnerCommand(Path("/srv/images/live.yaml"), {"suite": "bookworm"})
    buildervm.write_control(ctl, shares, inner, Path("/srv/out"), Path("/var/cache/deblive"))
    assert (ctl / "mounts").read_text() == "dl0 /srv/images ro\ndl1 /srv/out rw\n"
    env = dict(line.split("=", 1) for line in (ctl / "env").read_text().splitlines())
    assert env["DEBLIVE_APT_ETC"] == f"{buildervm.GUEST_CTL}/apt"
    assert env["SOURCE_DATE_EPOCH"] == "1700000000"
    # The host's apt sources travel along, so the guest resolves the same mirror.
    assert (ctl / "apt" / "sources.list.d" / "debian.sources").read_text() == (
        fake_host_apt / "sources.list.d" / "debian.sources").read_text()
    run = shlex.split((ctl / "run").read_text())
    assert run[:4] == ["exec", "deblive", "build", "/srv/images/live.yaml"]


def image(tmp_path: Path, arch: str = "amd64") -> builderimage.BuilderImage:
    return builderimage.BuilderImage(tmp_path / "img", "bookworm", arch)


def test_qemu_command_boots_the_builder_directly_and_throws_its_changes_away(
    tmp_path: Path
) -> None:
    shares = [Share("dl0", Path("/srv/a,b"), False), Share("dl1", Path("/srv/out"), True)]
    argv = buildervm.qemu_argv(image(tmp_path), tmp_path / "work.img", tmp_path / "ctl",
                               shares, "tcg", 4096, 2)
    text = " ".join(argv)
    assert argv[0] == "qemu-system-x86_64"
    assert f"file={tmp_path / 'img' / 'rootfs.img'},if=virtio,format=raw,snapshot=on" in text
    assert f"init={builderimage.INIT_PATH}" in argv[argv.index("-append") + 1]
    assert "-cpu" not in argv  # TCG: qemu's default model, the fastest to emulate
    assert "path=/srv/a,,b,security_model=none,readonly=on" in text  # commas escaped
    assert "path=/srv/out,security_model=passthrough" in text
    assert "mount_tag=dlctl" in text and "user,id=net0" in text
    assert "-no-reboot" in argv
    kvm = buildervm.qemu_argv(image(tmp_path), tmp_path / "work.img", tmp_path / "ctl",
                              shares, "kvm", 4096, 2)
    assert kvm[kvm.index("-cpu") + 1] == "host"


def test_console_lines_of_the_build_are_shown_the_rest_logged(tmp_path: Path) -> None:
    log = BuildLog()
    log.open(tmp_path / "log")
    console = buildervm._Console(log)
    text = "[    1.0] kernel line\r\ndeblive: stage bootstrap: start\r\nhalf"
    console.feed(text)
    console.feed(text + " line\n")
    console.flush()
    log.close()
    written = (tmp_path / "log").read_text()
    assert "| [    1.0] kernel line" in written
    assert "vm | deblive: stage bootstrap: start" in written
    assert "| half line" in written and written.count("kernel line") == 1


def test_builder_release_is_the_targets_unless_its_python_is_too_old() -> None:
    assert builderimage.builder_codename("trixie") == "trixie"
    assert builderimage.builder_codename("bookworm") == "bookworm"
    assert builderimage.builder_codename("bullseye") == builderimage.OLDEST_BUILDER
    assert builderimage.builder_codename("sid") == "sid"


def test_guest_python_is_read_from_the_tree(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/python3").symlink_to("python3.13")
    assert builderimage.guest_python(tmp_path) == (3, 13)
    with pytest.raises(builderimage.BuilderImageError, match="no python3"):
        builderimage.guest_python(tmp_path / "missing")


def test_pip_installs_wheels_for_the_guests_python_not_the_hosts(tmp_path: Path) -> None:
    argv = builderimage.pip_target_argv(tmp_path, (3, 13), "x86_64", ["pydantic>=2.5,<3"])
    assert argv[argv.index("--python-version") + 1] == "3.13"
    assert "--only-binary=:all:" in argv and "cp313" in argv
    assert "manylinux2014_x86_64" in argv and argv[-1] == "pydantic>=2.5,<3"


def test_builder_bootstrap_has_the_build_tools_a_kernel_and_uses_the_cache(tmp_path: Path
                                                                           ) -> None:
    argv = builderimage.mmdebstrap_argv("trixie", "amd64", tmp_path / "tree",
                                        "http://mirror.invalid/debian", tmp_path / "arch")
    include = next(a for a in argv if a.startswith("--include=")).split("=", 1)[1].split(",")
    assert {"mmdebstrap", "squashfs-tools", "xorriso", "python3", "linux-image-amd64",
            "qemu-user-static"} <= set(include)
    assert argv[-3:] == ["trixie", str(tmp_path / "tree"), "http://mirror.invalid/debian"]
    assert any(str(tmp_path / "arch") in a for a in argv if a.startswith("--setup-hook"))


def test_cache_key_follows_release_and_code() -> None:
    assert builderimage.cache_key("bookworm", "amd64") == builderimage.cache_key(
        "bookworm", "amd64")
    assert builderimage.cache_key("bookworm", "amd64") != builderimage.cache_key(
        "trixie", "amd64")


def test_initramfs_is_made_for_each_kernel_with_modules_and_image(tmp_path: Path) -> None:
    from deblive.build.chroot import InitramfsDeferral
    from deblive.core.runner import Runner

    for version in ("6.1.0-1-amd64", "6.1.0-2-amd64", "6.1.0-3-amd64"):
        (tmp_path / "lib/modules" / version).mkdir(parents=True)
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot/vmlinuz-6.1.0-1-amd64").write_text("")
    (tmp_path / "boot/vmlinuz-6.1.0-3-amd64").write_text("")
    deferral = InitramfsDeferral(tmp_path, Runner(BuildLog()))
    assert deferral.kernels() == ["6.1.0-1-amd64", "6.1.0-3-amd64"]
    # Not diverted and no initramfs-tools: nothing to restore, nothing to make.
    assert deferral.generate() == []
