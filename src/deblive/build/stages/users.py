"""Step 5b: the live system's identity: hostname, locale, time zone, keyboard,
the live user with its sudo rights, and root locked (seed point 13).

The user is made at build time, so the user, its password hash and its group
membership are in the squashfs. If live-config is installed it would create
its own `user` at boot: it is told the config's user name (its user-setup
component then sees the user exists and leaves it, password included) and
hostname, so the config wins. Its configuration is a shell file live-config
sources as root at every boot, so every value in it is shell-quoted.

Sudo, as Debian's live images have it (live-config's sudo component): the
live user may use sudo without a password, through /etc/sudoers.d/live
(0440), checked with visudo at build time; live-config then leaves that file
alone. user.sudo "password" makes sudo ask for the password; "none" gives no
sudo and tells live-config (LIVE_CONFIG_NOROOT) to grant no root access by
any of its means (sudo, polkit).
"""

from __future__ import annotations

import hashlib
import re
import shlex

from deblive.build.chroot import Chroot
from deblive.build.context import BuildContext
from deblive.build.stage import Stage
from deblive.core.errors import BadInputError
from deblive.host.imagetree import ImageTree
from deblive.model.config import ImageConfig
from deblive.model.text import locale_charset

LIVE_CONFIG_CONF = "/etc/live/config.conf.d/deblive.conf"
SUDOERS = "/etc/sudoers.d/live"
LOCALE_GEN = "/etc/locale.gen"
LOCALE_ARCHIVE = "/usr/lib/locale/locale-archive"
# The hash schemes crypt(5) names by their prefix.
HASH_SCHEMES = {"$y$": "yescrypt", "$gy$": "gost-yescrypt", "$7$": "scrypt", "$6$": "sha512crypt",
                "$5$": "sha256crypt", "$2b$": "bcrypt", "$1$": "md5crypt"}
CRYPT64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# crypt(3) in the image's own perl (perl-base is Essential): the password and
# the setting on standard input, never on a command line.
CRYPT_SCRIPT = ('my $p = <STDIN>; chomp $p; my $s = <STDIN>; chomp $s; '
                'my $h = crypt($p, $s); defined $h or exit 1; print $h;')
HASH_RE = re.compile(r"\$(y\$j9T|6)\$[./0-9A-Za-z]+\$[./0-9A-Za-z]+")


class ImageConfigError(BadInputError):
    """A config value the image cannot honour (found once the packages are in)."""


def hosts_file(hostname: str) -> str:
    return (
        "127.0.0.1\tlocalhost\n"
        f"127.0.1.1\t{hostname}\n"
        "\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
    )


def shell_assignments(values: dict[str, str]) -> str:
    """NAME='value' lines a POSIX shell sources without running any of the values."""
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())


def keyboard_file(keyboard: str) -> str:
    layout, _, variant = keyboard.partition("(")
    return shell_assignments({
        "XKBMODEL": "pc105", "XKBLAYOUT": layout, "XKBVARIANT": variant.rstrip(")"),
        "XKBOPTIONS": "", "BACKSPACE": "guess",
    })


def live_config_conf(config: ImageConfig) -> str:
    values = {
        "LIVE_USERNAME": config.user.name,
        "LIVE_USER_FULLNAME": config.user.fullname,
        "LIVE_USER_DEFAULT_GROUPS": ",".join(config.user.groups),
        "LIVE_HOSTNAME": config.hostname,
        # Without locales= on the kernel command line live-config would reset
        # LANG and the keyboard to its own defaults; the config's win instead.
        "LIVE_LOCALES": config.locale,
        "LIVE_KEYBOARD_LAYOUTS": config.keyboard.split("(")[0],
    }
    if config.user.sudo == "none":
        values["LIVE_CONFIG_NOROOT"] = "true"
    return ("# Written by deblive: the image's user and hostname win over live-config's "
            "defaults.\n" + shell_assignments(values))


def sudoers_line(config: ImageConfig) -> str | None:
    """The live user's rule in /etc/sudoers.d/live, None for no sudo at all."""
    policy = config.user.sudo
    if policy == "none":
        return None
    tag = "NOPASSWD: " if policy == "nopasswd" else ""
    return f"{config.user.name} ALL=(ALL) {tag}ALL\n"


def existing_groups(tree: ImageTree) -> set[str]:
    text = tree.read_text("/etc/group")
    return {line.split(":", 1)[0] for line in text.splitlines() if line}


def useradd_argv(config: ImageConfig) -> list[str]:
    user = config.user
    argv = ["useradd", "--create-home", "--shell", user.shell, "--comment", user.fullname]
    if user.groups:
        argv += ["--groups", ",".join(user.groups)]
    return [*argv, user.name]


def hash_scheme(shadow: str, user: str) -> str | None:
    """The crypt scheme of user's hash in /etc/shadow text (never the hash itself)."""
    for line in shadow.splitlines():
        fields = line.split(":")
        if len(fields) > 1 and fields[0] == user:
            for prefix, name in HASH_SCHEMES.items():
                if fields[1].startswith(prefix):
                    return name
            return "unknown"
    return None


def password_settings(config: ImageConfig) -> tuple[str, str]:
    """crypt(3) settings (yescrypt, then sha512crypt where the image lacks it) with a
    salt derived from what the image shows anyway (its name, release, architecture
    and user, never the password): the same config gives the same /etc/shadow (a
    reproducible image), another image or user another salt, and the salt tells
    nothing of the password."""
    seed = hashlib.sha256("\0".join(["deblive-salt", config.name, config.codename,
                                      str(config.architecture), config.user.name]).encode())
    # 24 characters: 18 whole bytes (yescrypt refuses a salt that ends mid-byte).
    salt = "".join(CRYPT64[b % 64] for b in seed.digest()[:24])
    return f"$y$j9T${salt}", f"$6${salt[:16]}"


def password_hash(config: ImageConfig, chroot: Chroot) -> str:
    """The live user's password hashed by the image's own libcrypt."""
    password = config.user.password.get_secret_value()
    for setting in password_settings(config):
        result = chroot.run(["perl", "-e", CRYPT_SCRIPT], input_data=f"{password}\n{setting}\n",
                            capture=True, quiet=True, check=False,
                            what="hashing the live user's password")
        hashed = result.output.strip()
        if result.returncode == 0 and HASH_RE.fullmatch(hashed):
            return hashed
    raise ImageConfigError("the image's crypt(3) made neither a yescrypt nor a sha512crypt "
                           "hash of the live user's password")


def locale_generated(tree: ImageTree, line: str) -> bool:
    """Whether locale-gen has made the archive of exactly this locale.gen line.

    The packages stage tells debconf the image's locale, and the locales
    package's postinst writes it as the one active line of /etc/locale.gen and
    runs locale-gen (2-3 s of localedef here). locale-gen makes the archive
    from the active lines alone, so a second run would make the same archive.
    """
    if not tree.is_file(LOCALE_ARCHIVE) or not tree.is_file(LOCALE_GEN):
        return False
    active = [" ".join(text.split()) for text in tree.read_text(LOCALE_GEN).splitlines()
              if text.strip() and not text.lstrip().startswith("#")]
    return active == [line]


def configure_system(ctx: BuildContext) -> None:
    """Hostname, locale, time zone and keyboard."""
    config, tree = ctx.config, ctx.tree
    chroot = Chroot(tree, ctx.runner)
    tree.write("/etc/hostname", config.hostname + "\n")
    tree.write("/etc/hosts", hosts_file(config.hostname))
    # live-boot writes /etc/network/interfaces at boot and complains without the dir.
    tree.mkdir("/etc/network")
    if not config.locale.startswith("C"):
        charset = locale_charset(config.locale)
        line = f"{config.locale} {charset}"
        made = locale_generated(tree, line)
        tree.write(LOCALE_GEN, line + "\n")
        if made:
            ctx.log.info(f"locale {config.locale}: generated by the locales package already")
        else:
            chroot.run(["locale-gen"], what="generating the locale")
    tree.mkdir("/etc/default")
    tree.write("/etc/default/locale", f"LANG={config.locale}\n")
    zone = f"/usr/share/zoneinfo/{config.timezone}"
    if not tree.exists(zone) and config.timezone != "UTC":
        raise ImageConfigError(
            f"{config.where}: timezone: {config.timezone!r} is not in the image's "
            "/usr/share/zoneinfo (add tzdata to packages, or check the name)"
        )
    tree.symlink(zone, "/etc/localtime")
    tree.write("/etc/timezone", config.timezone + "\n")
    tree.write("/etc/default/keyboard", keyboard_file(config.keyboard))


def check_user(config: ImageConfig, tree: ImageTree) -> None:
    """The groups and the shell the config names exist in the image."""
    missing = [g for g in config.user.groups if g not in existing_groups(tree)]
    if missing:
        raise ImageConfigError(
            f"{config.where}: user.groups: group(s) {', '.join(missing)} do not exist in the "
            "image (install the package that makes them, or remove them)"
        )
    st = tree.stat(config.user.shell)
    if st is None or not tree.is_file(config.user.shell) or not st.st_mode & 0o111:
        raise ImageConfigError(
            f"{config.where}: user.shell: {config.user.shell} is not an executable file in the "
            "image (install the shell's package, or name another)"
        )


def create_user(ctx: BuildContext) -> None:
    """The live user with its password, groups and sudo rights; root locked."""
    config, tree = ctx.config, ctx.tree
    chroot = Chroot(tree, ctx.runner)
    check_user(config, tree)
    passwd = tree.read_text("/etc/passwd")
    if any(line.split(":", 1)[0] == config.user.name for line in passwd.splitlines()):
        chroot.run(["usermod", "--append", "--groups", ",".join(config.user.groups),
                    config.user.name], what="updating the live user")
    else:
        chroot.run(useradd_argv(config), what="creating the live user")
    # On standard input, never on a command line or in the log.
    hashed = password_hash(config, chroot)
    chroot.run(["chpasswd", "--encrypted"], input_data=f"{config.user.name}:{hashed}\n",
               what="setting the live user's password")
    ctx.facts.password_hash = hash_scheme(tree.read_text("/etc/shadow"), config.user.name)
    if config.lock_root:
        chroot.run(["passwd", "--lock", "root"], what="locking root's password")
    rule = sudoers_line(config)
    if rule is not None:
        tree.mkdir("/etc/sudoers.d")
        tree.write(SUDOERS, rule, 0o440)
        chroot.run(["visudo", "-c", "-f", SUDOERS], what="checking the live user's sudo rule")
    else:
        tree.unlink(SUDOERS)
    if tree.is_dir("/lib/live/config") or tree.is_dir("/usr/lib/live/config"):
        tree.mkdir("/etc/live/config.conf.d")
        tree.write(LIVE_CONFIG_CONF, live_config_conf(config))
        ctx.log.info("live-config is installed: told it the image's user and hostname")


class Users(Stage):
    name = "users"
    in_base = True

    def run(self, ctx: BuildContext) -> None:
        configure_system(ctx)
        create_user(ctx)
