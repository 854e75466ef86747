from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deblive.build.report import config_digest
from deblive.host import configfile, preflight
from deblive.model import config
from deblive.model.arch import Arch
from deblive.model.config import ConfigError

from . import conftest
from .conftest import FAKE_MIRROR, load


def parse(data: dict[str, Any], source: Path | None = None) -> config.ImageConfig:
    return conftest.parse({"name": "demo", **data}, source or Path("/cfg/demo.yaml"))


def test_defaults_come_from_the_host() -> None:
    cfg = parse({})
    assert cfg.suite == "bookworm"
    assert cfg.architecture is Arch.AMD64
    assert cfg.mirror == FAKE_MIRROR
    assert cfg.apt_mirror == FAKE_MIRROR
    assert cfg.security_mirror == FAKE_MIRROR + "-security"
    assert cfg.user.name == "user" and cfg.user.password.get_secret_value() == "live"
    assert cfg.user.groups == ("sudo",) and cfg.user.sudo == "nopasswd"
    assert cfg.lock_root is True
    assert cfg.squashfs.compression == "xz"
    assert cfg.boot.serial_console is True
    assert cfg.kernel_package == "linux-image-amd64"


def test_full_config_round_trip() -> None:
    cfg = parse(
        {
            "suite": "trixie",
            "architecture": "arm64",
            "mirror": "http://build.invalid/debian/",
            "apt_mirror": "https://apt.invalid/debian",
            "components": ["main", "contrib", "non-free-firmware"],
            "security": False,
            "updates": False,
            "tasks": ["task-ssh-server", "live-task-standard"],
            "packages": ["wpasupplicant", "g++"],
            "user": {"name": "alice", "password": "pw", "groups": ["sudo", "audio"]},
            "lock_root": False,
            "hostname": "live-1",
            "locale": "de_DE.UTF-8",
            "timezone": "Europe/Berlin",
            "keyboard": "de",
            "hook": "hooks/customise.sh",
            "squashfs": {"compression": "zstd", "level": 3},
            "boot": {"title": "T", "timeout": 0, "serial_console": False},
            "volume_id": "MY LIVE",
        }
    )
    assert cfg.mirror == "http://build.invalid/debian"  # trailing slash gone
    assert cfg.security_mirror == "https://apt.invalid/debian-security"
    assert cfg.kernel_package == "linux-image-arm64"
    assert cfg.hook_path == Path("/cfg/hooks/customise.sh")
    assert cfg.iso_volume_id == "MY LIVE"


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"name": "Bad Name"}, "name", "lower-case"),
        ({"suite": "nonesuch"}, "suite", "unknown suite"),
        ({"suite": "buster"}, "suite", "older than bullseye"),
        ({"architecture": "vax"}, "architecture", "'amd64'"),
        ({"mirror": "ftp://x/debian"}, "mirror", "http"),
        ({"apt_mirror": "deb.invalid"}, "apt_mirror", "URL"),
        ({"components": ["main", "universe"]}, "components[1]", "non-free-firmware"),
        ({"tasks": ["openssh-server"]}, "tasks[0]", "task package"),
        ({"packages": ["Bad_Pkg"]}, "packages[0]", "not a Debian package name"),
        ({"user": {"name": "root"}}, "user.name", "not root"),
        ({"user": {"name": "Alice"}}, "user.name", "lower-case"),
        ({"user": {"groups": ["bad group"]}}, "user.groups[0]", "not a valid group"),
        ({"user": {"nmae": "x"}}, "user.nmae", "allowed keys here: name, password"),
        ({"lock_root": "maybe"}, "lock_root", "bool"),
        ({"hostname": "bad_host"}, "hostname", "host name"),
        ({"locale": "english"}, "locale", "en_US.UTF-8"),
        ({"timezone": "../etc/passwd"}, "timezone", "tz database"),
        ({"keyboard": "US keyboard"}, "keyboard", "XKB"),
        ({"debconf": ["incomplete line"]}, "debconf", "owner question type value"),
        ({"squashfs": {"compression": "bzip2"}}, "squashfs.compression", "'zstd'"),
        ({"squashfs": {"level": 99}}, "squashfs.level", "less than or equal to 22"),
        ({"bootstrap": {"backend": "cdebootstrap"}}, "bootstrap.backend", "mmdebstrap"),
        ({"bootstrap": {"variant": "buildd"}}, "bootstrap.variant", "minbase"),
        ({"boot": {"timeout": -1}}, "boot.timeout", "greater than or equal to 0"),
        ({"boot": {"cmdline": "a\nb"}}, "boot.cmdline", "control characters"),
        ({"boot": {"cmdline": "a=\"b\""}}, "boot.cmdline", "without quotes"),
        ({"boot": {"default": "install"}}, "boot.default", "'live'"),
        ({"volume_id": "X" * 33}, "volume_id", "32 characters"),
        ({"squash": {}}, "squash", "unknown key; allowed keys here: name, suite"),
        ({"tasks": "task-english"}, "tasks", "tuple"),
        # Full matches only: a trailing newline is not the end of a value.
        ({"hostname": "debian\n"}, "hostname", "host name"),
        ({"locale": "en_US.UTF-8\n"}, "locale", "en_US.UTF-8"),
        ({"mirror": "http://x/debian\nURIs: http://evil"}, "mirror", "URL"),
        ({"user": {"name": "user\n"}}, "user.name", "lower-case"),
        ({"timezone": "UTC\n"}, "timezone", "tz database"),
        ({"packages": ["vim\n"]}, "packages[0]", "not a Debian package name"),
        ({"volume_id": "LIVE\n"}, "volume_id", "32 characters"),
        # Control characters in free text, wherever it goes.
        ({"boot": {"title": "Live\nmenuentry evil {"}}, "boot.title", "control characters"),
        ({"boot": {"title": "Live\u2028x"}}, "boot.title", "control characters"),
        ({"user": {"fullname": "Ann\nroot::0:0"}}, "user.fullname", "control characters"),
        ({"user": {"fullname": "a:b"}}, "user.fullname", "':' or ','"),
        ({"user": {"password": "pw\nroot:x"}}, "user.password", "control characters"),
        ({"user": {"password": ""}}, "user.password", "must not be empty"),
        ({"user": {"shell": "bash"}}, "user.shell", "absolute path"),
        ({"user": {"shell": "/bin/../tmp/x"}}, "user.shell", "without '..'"),
        ({"user": {"sudo": "always"}}, "user.sudo", "'nopasswd'"),
        ({"user": {"sudo": "none"}}, "user", "groups holds 'sudo'"),
        ({"debconf": ["a b c d\re"]}, "debconf", "control characters"),
        ({"metapackage": {"maintainer": "A <a@b>\n"}}, "metapackage.maintainer", "control"),
        ({"languages": [{"locale": "de_DE.UTF-8", "keyboard": "de", "label": "De\tutsch"}]},
         "languages[0].label", "control characters"),
    ],
)
def test_bad_values_name_file_key_and_allowed(data: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(data)
    message = str(info.value)
    assert message.startswith(f"/cfg/demo.yaml: {key}: "), message
    assert words in message
    assert info.value.exit_code == 2


def test_missing_name() -> None:
    with pytest.raises(ConfigError, match=r"demo.yaml: name: Field required"):
        conftest.parse({}, Path("/cfg/demo.yaml"))


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load(path)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load(tmp_path / "nope.yaml")


def test_no_host_mirror(fake_host_apt: Path) -> None:
    (fake_host_apt / "sources.list.d" / "debian.sources").unlink()
    with pytest.raises(ConfigError, match="mirror: not set"):
        parse({})


def test_overrides_are_validated_too() -> None:
    with pytest.raises(ConfigError, match="suite: unknown suite 'nonesuch'"):
        conftest.parse({"name": "x"}, Path("/c.yaml"), {"suite": "nonesuch"})
    cfg = conftest.parse({"name": "x"}, Path("/c.yaml"), {"suite": "sid", "mirror": None})
    assert cfg.codename == "sid"


def test_aliases_resolve() -> None:
    assert parse({"suite": "unstable"}).codename == "sid"
    assert parse({"suite": "stable"}).codename not in ("stable", "sid")


def test_digest_changes_with_content() -> None:
    a = config_digest(parse({"tasks": ["task-english"]}))
    b = config_digest(parse({"tasks": ["task-german"]}))
    assert a != b and len(a) == 64
    assert a == config_digest(parse({"tasks": ["task-english"]}))


def test_default_config_and_examples_are_valid() -> None:
    assert configfile.load_default().name == "deblive"
    examples = Path(__file__).parents[2] / "examples"
    files = sorted(examples.glob("*.yaml"))
    assert files, "examples/ must hold configs"
    for path in files:
        load(path)


def test_schema_is_json_and_complete() -> None:
    schema = config.json_schema()
    json.dumps(schema)
    props = schema["properties"]
    for key in ("name", "suite", "architecture", "mirror", "apt_mirror", "tasks", "packages",
                "user", "lock_root", "hook", "squashfs", "boot", "volume_id"):
        assert key in props
    assert "source" not in props


@pytest.mark.parametrize("fullname", ["O'Brien", 'Anne "Nan" Smith', "Zoë Ørsted"])
def test_full_names_with_quotes_are_valid_and_kept(fullname: str) -> None:
    assert parse({"user": {"fullname": fullname}}).user.fullname == fullname


def test_the_password_is_masked_wherever_the_config_is_shown() -> None:
    cfg = parse({"user": {"password": "s3cret-pw"}})
    assert cfg.user.password.get_secret_value() == "s3cret-pw"
    shown = json.dumps(cfg.public_dump())
    assert "s3cret-pw" not in shown and "s3cret-pw" not in repr(cfg)
    assert "s3cret-pw" not in config_digest(cfg)


def test_sudo_none_with_other_groups_is_valid() -> None:
    cfg = parse({"user": {"sudo": "none", "groups": ["audio"]}})
    assert cfg.user.sudo == "none" and cfg.user.groups == ("audio",)


def test_confined_paths_are_checked_after_following_symlinks(tmp_path: Path) -> None:
    tree = tmp_path / "configs"
    tree.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "splash.png").write_bytes(b"x")
    (tree / "link.png").symlink_to(outside / "splash.png")
    (tree / "c.yaml").write_text("name: c\nconfine_paths: true\nboot: {splash: link.png}\n")
    cfg = load(tree / "c.yaml")
    with pytest.raises(preflight.PreflightError, match=r"boot\.splash: .* outside the config"):
        preflight.check_paths(cfg)
    (tree / "c.yaml").write_text("name: c\nhook_confined: true\nboot: {splash: link.png}\n")
    with pytest.raises(preflight.PreflightError, match="outside the config"):
        preflight.check_paths(load(tree / "c.yaml"))
