"""Step 5b: the live system's identity: hostname, locale, time zone, keyboard,
the live user with sudo, and root locked (seed point 13).

The user is made at build time, so the user, its password hash and its group
membership are in the squashfs. If live-config is installed it would create
its own `user` at boot: it is told the config's user name (its user-setup
component then sees the user exists and leaves it, password included) and
hostname, so the config wins.
"""

from __future__ import annotations

from pathlib import Path

from deblive.build.chroot import Chroot
from deblive.build.context import BuildContext
from deblive.model.config import ConfigError, ImageConfig

LIVE_CONFIG_CONF = "etc/live/config.conf.d/deblive.conf"


def hosts_file(hostname: str) -> str:
    return (
        "127.0.0.1\tlocalhost\n"
        f"127.0.1.1\t{hostname}\n"
        "\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
    )


def keyboard_file(keyboard: str) -> str:
    layout, _, variant = keyboard.partition("(")
    return (
        'XKBMODEL="pc105"\n'
        f'XKBLAYOUT="{layout}"\n'
        f'XKBVARIANT="{variant.rstrip(")")}"\n'
        'XKBOPTIONS=""\n'
        'BACKSPACE="guess"\n'
    )


def live_config_conf(config: ImageConfig) -> str:
    groups = ",".join(config.user.groups)
    return (
        "# Written by deblive: the image's user and hostname win over live-config's defaults.\n"
        f'LIVE_USERNAME="{config.user.name}"\n'
        f'LIVE_USER_FULLNAME="{config.user.fullname}"\n'
        f'LIVE_USER_DEFAULT_GROUPS="{groups}"\n'
        f'LIVE_HOSTNAME="{config.hostname}"\n'
        # Without locales= on the kernel command line live-config would reset
        # LANG and the keyboard to its own defaults; the config's win instead.
        f'LIVE_LOCALES="{config.locale}"\n'
        f'LIVE_KEYBOARD_LAYOUTS="{config.keyboard.split("(")[0]}"\n'
    )


def existing_groups(rootfs: Path) -> set[str]:
    text = (rootfs / "etc/group").read_text(encoding="utf-8")
    return {line.split(":", 1)[0] for line in text.splitlines() if line}


def useradd_argv(config: ImageConfig) -> list[str]:
    user = config.user
    argv = ["useradd", "--create-home", "--shell", user.shell, "--comment", user.fullname]
    if user.groups:
        argv += ["--groups", ",".join(user.groups)]
    return [*argv, user.name]


def configure_system(ctx: BuildContext) -> None:
    """Hostname, locale, time zone and keyboard."""
    config, rootfs = ctx.config, ctx.rootfs
    chroot = Chroot(rootfs, ctx.runner)
    (rootfs / "etc/hostname").write_text(config.hostname + "\n")
    (rootfs / "etc/hosts").write_text(hosts_file(config.hostname))
    # live-boot writes /etc/network/interfaces at boot and complains without the dir.
    (rootfs / "etc/network").mkdir(exist_ok=True)
    if not config.locale.startswith("C"):
        charset = config.locale.split(".", 1)[1] if "." in config.locale else "UTF-8"
        (rootfs / "etc/locale.gen").write_text(f"{config.locale} {charset}\n")
        chroot.run(["locale-gen"], what="generating the locale")
    (rootfs / "etc/default/locale").write_text(f"LANG={config.locale}\n")
    zone = rootfs / "usr/share/zoneinfo" / config.timezone
    if not zone.exists() and config.timezone != "UTC":
        raise ConfigError(
            f"timezone: {config.timezone!r} is not in the image's /usr/share/zoneinfo "
            "(add tzdata to packages, or check the name)"
        )
    localtime = rootfs / "etc/localtime"
    localtime.unlink(missing_ok=True)
    localtime.symlink_to(f"/usr/share/zoneinfo/{config.timezone}")
    (rootfs / "etc/timezone").write_text(config.timezone + "\n")
    (rootfs / "etc/default").mkdir(exist_ok=True)
    (rootfs / "etc/default/keyboard").write_text(keyboard_file(config.keyboard))


def create_user(ctx: BuildContext) -> None:
    """The live user with its password and groups; root locked."""
    config, rootfs = ctx.config, ctx.rootfs
    chroot = Chroot(rootfs, ctx.runner)
    missing = [g for g in config.user.groups if g not in existing_groups(rootfs)]
    if missing:
        where = config.source or "<default config>"
        raise ConfigError(
            f"{where}: user.groups: group(s) {', '.join(missing)} do not exist in the image "
            "(install the package that makes them, or remove them)"
        )
    passwd = (rootfs / "etc/passwd").read_text(encoding="utf-8")
    if any(line.startswith(config.user.name + ":") for line in passwd.splitlines()):
        chroot.run(["usermod", "--append", "--groups", ",".join(config.user.groups),
                    config.user.name], what="updating the live user")
    else:
        chroot.run(useradd_argv(config), what="creating the live user")
    chroot.run(
        ["chpasswd"], input_text=f"{config.user.name}:{config.user.password}\n",
        what="setting the live user's password",
    )
    if config.lock_root:
        chroot.run(["passwd", "--lock", "root"], what="locking root's password")
    if (rootfs / "lib/live/config").is_dir() or (rootfs / "usr/lib/live/config").is_dir():
        conf = rootfs / LIVE_CONFIG_CONF
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(live_config_conf(config))
        ctx.log.info("live-config is installed: told it the image's user and hostname")


def run(ctx: BuildContext) -> None:
    configure_system(ctx)
    create_user(ctx)
