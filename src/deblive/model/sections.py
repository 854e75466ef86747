"""The config's sections: the live user, squashfs, bootstrap, boot menu, installer,
metapackage, languages and extra repositories, each a frozen model with its own checks."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from deblive.model.sizes import Size
from deblive.model.text import (
    ARCHIVE_NAME_RE,
    GECOS_SEPARATORS,
    HOST_RE,
    LABEL_RE,
    LOCALE_RE,
    MAINTAINER_RE,
    MIRROR_RE,
    NETBOOT_URL_RE,
    SHELL_RE,
    USER_RE,
    VERSION_RE,
    Compression,
    GroupName,
    Keyboard,
    SudoPolicy,
    distinct_choices,
    full,
    plain_text,
)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)


class User(Model):
    """The live user, created at build time the seed's way (vmdebootstrap --user)."""

    name: str = Field("user", description="login name")
    password: SecretStr = Field(
        SecretStr("live"),
        description="password (default: live), hashed into /etc/shadow; never logged or reported",
    )
    groups: tuple[GroupName, ...] = Field(
        ("sudo",), description="supplementary groups (they must exist in the image)"
    )
    sudo: SudoPolicy = Field(
        "nopasswd",
        description="nopasswd: sudo without a password (as Debian's live images); "
        "password: sudo asks for the password; none: no sudo and no polkit admin rights",
    )
    shell: str = Field("/bin/bash", description="login shell: an absolute path in the image")
    fullname: str = Field("Debian Live user", description="GECOS full name")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not USER_RE.fullmatch(v) or v == "root":
            raise ValueError("must be a lower-case login name (a-z, 0-9, _ and -), not root")
        return v

    @field_validator("password")
    @classmethod
    def _password(cls, v: SecretStr) -> SecretStr:
        secret = v.get_secret_value()
        if not secret:
            raise ValueError("must not be empty")
        plain_text(secret, "the password")
        return v

    @field_validator("shell")
    @classmethod
    def _shell(cls, v: str) -> str:
        full(SHELL_RE, v, "must be an absolute path such as /bin/bash")
        if ".." in PurePosixPath(v).parts:
            raise ValueError("must be an absolute path without '..'")
        return v

    @field_validator("fullname")
    @classmethod
    def _fullname(cls, v: str) -> str:
        plain_text(v, "the full name")
        if any(c in v for c in GECOS_SEPARATORS) or len(v) > 100:
            raise ValueError("must be at most 100 characters without ':' or ','")
        return v

    @model_validator(mode="after")
    def _sudo_group(self) -> User:
        if self.sudo == "none" and "sudo" in self.groups:
            raise ValueError("groups holds 'sudo', which gives sudo rights, but sudo is 'none'")
        return self


class Squashfs(Model):
    """How the root filesystem is squashed: xz for releases, zstd or lz4 to iterate."""

    compression: Compression = "xz"
    level: int | None = Field(None, ge=1, le=22, description="compressor level (zstd, gzip)")
    block_size: Literal["128K", "256K", "512K", "1M"] = "1M"
    layout: Literal["flat", "layered"] = Field(
        "flat",
        description="flat: one squashfs, for releases; layered: the cached base tree "
        "(everything before the hook) and a layer with the rest on top, for fast rebuilds",
    )


class Bootstrap(Model):
    """How the base system is made."""

    backend: Literal["mmdebstrap", "debootstrap"] = "mmdebstrap"
    variant: Literal["minbase", "required", "important", "standard"] = Field(
        "minbase",
        description="package set of the base system; tasks and packages add to it",
    )


class Boot(Model):
    """The boot menus (ISOLINUX and grub are written from one model)."""

    title: str = Field("Debian Live", description="menu title")
    cmdline: str = Field("", description="extra kernel command line arguments")
    timeout: int = Field(5, ge=0, le=600, description="seconds before the default entry boots")
    default: Literal["live", "failsafe", "persistence"] = Field(
        "live", description="the entry booted after the timeout (persistence: needs persistence)",
    )
    splash: Path | None = Field(None, description="PNG (640x480), relative to the config file")
    serial_console: bool = Field(
        True,
        description="serial console (115200; ttyS0, on arm64 ttyAMA0) in boot loaders and kernel",
    )

    @field_validator("title")
    @classmethod
    def _title(cls, v: str) -> str:
        plain_text(v, "the title")
        if not v.strip() or len(v) > 80:
            raise ValueError("must be 1 to 80 characters")
        return v

    @field_validator("cmdline")
    @classmethod
    def _cmdline(cls, v: str) -> str:
        plain_text(v, "the command line")
        if any(c in v for c in "\"'\\"):
            raise ValueError("must be one line without quotes or backslashes")
        return " ".join(v.split())


InstallerSource = Literal["mirror", "package", "directory"]


class Installer(Model):
    """debian-installer on the medium: "Install" and "Graphical install" in both menus.

    The netboot d-i installs from the network mirror, not from the live
    squashfs, so the installed system gets neither the live user nor the
    locked root: it asks for users (or reads them from the preseed) as usual.
    """

    sources: tuple[InstallerSource, ...] = Field(
        ("mirror", "package"),
        description="where d-i's kernel and initrds come from, tried in this order: "
        "mirror (dists/<suite>/main/installer-<arch>/current/images, checked against "
        "the signed Release), package (debian-installer-<version>-netboot-<arch> of the "
        "suite), directory (a local tree, see 'directory')",
    )
    directory: Path | None = Field(
        None,
        description="local d-i images, relative to the config file: text/linux, "
        "text/initrd.gz, gtk/linux, gtk/initrd.gz",
    )
    preseed: Path | None = Field(
        None, description="preseed file, relative to the config file; placed on the medium"
    )
    graphical: bool = Field(True, description="also the gtk installer (Graphical install)")

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return distinct_choices(v, "mirror, package, directory", "source")

    @model_validator(mode="after")
    def _directory_given(self) -> Installer:
        if "directory" in self.sources and self.directory is None:
            raise ValueError("sources names 'directory' but 'directory' is not set")
        return self


class Metapackage(Model):
    """<name>-live-task: one package whose Depends are the image's tasks and extras.

    `metapackage: true` is short for `{install: true}`.
    """

    install: bool = Field(False, description="install the metapackage in the image")
    version: str | None = Field(
        None, description="package version; default: the build date (YYYYMMDD.HHMM)"
    )
    maintainer: str = Field(
        "deblive <deblive@example.org>", description="Maintainer field: 'Name <address>'"
    )

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, data: Any) -> Any:
        if isinstance(data, bool):
            return {"install": data}
        return data

    @field_validator("version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        if v is not None and not VERSION_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a Debian version (digits first; a-z 0-9 . + ~)")
        return v

    @field_validator("maintainer")
    @classmethod
    def _maintainer(cls, v: str) -> str:
        plain_text(v, "the maintainer")
        return full(MAINTAINER_RE, v, "must be 'Name <address>'")


class Language(Model):
    """One entry of the boot menu's "Languages" submenu (live-config reads both values)."""

    locale: str = Field(description="locale, e.g. de_DE.UTF-8 (live-config's locales=)")
    keyboard: Keyboard = Field(description="XKB layout, e.g. de (live-config's keyboard-layouts=)")
    label: str = Field(description="menu label, e.g. Deutsch")

    @field_validator("locale")
    @classmethod
    def _locale(cls, v: str) -> str:
        if not LOCALE_RE.fullmatch(v) or v.startswith("C") or "." not in v:
            raise ValueError("must look like de_DE.UTF-8 (language, country and charset)")
        return v

    @field_validator("label")
    @classmethod
    def _label(cls, v: str) -> str:
        plain_text(v, "the label")
        v = " ".join(v.split())
        if not v or len(v) > 40 or any(c in v for c in "\"'$^\\{}"):
            raise ValueError("must be 1 to 40 characters without quotes, $, ^, \\ or braces")
        return v


class Repository(Model):
    """An extra signed apt archive (a distribution's own packages), checked like the mirror.

    Its Release must verify with `key` before anything is touched; nothing is
    ever trusted without a signature. ship: the image's sources keep it (a
    deb822 entry whose Signed-By names the key under /etc/apt/keyrings/), or it
    serves the build only and leaves no trace in the image.
    """

    uri: str = Field(description="http://, https:// or file:// URL of the archive")
    suites: tuple[str, ...] | None = Field(None, description="default: the image's codename")
    components: tuple[str, ...] = ("main",)
    key: Path = Field(description="OpenPGP public key (armoured or binary), relative to the "
                      "config file, that signs the archive's Release")
    ship: bool = Field(True, description="keep the repository in the image's apt sources")
    priority: int | None = Field(
        None, ge=-32768, le=32767,
        description="apt pin priority for the repository's packages (apt_preferences(5))",
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        full(MIRROR_RE, v, "must be an http:// or https:// URL without spaces")
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL (a directory of .deb "
                             "files goes into local_packages)")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold a user or password (it would ship in the "
                             "image's sources and show in the log; use apt's auth.conf "
                             "in the hook)")
        if not HOST_RE.fullmatch(parts.hostname or ""):
            raise ValueError("must name a host (letters, digits, . and -, or an IP address)")
        return v.rstrip("/")

    @field_validator("suites", "components")
    @classmethod
    def _names(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for name in v or ():
            full(ARCHIVE_NAME_RE, name, f"{name!r} is not a suite or component name "
                 "(letters, digits, . _ - and /)")
            if ".." in name.split("/"):
                raise ValueError(f"{name!r} must not hold '..'")
        if v is not None and not v:
            raise ValueError("name at least one")
        return v


class Persistence(Model):
    """live-boot persistence: a partition of the disk image labelled `label` holding
    persistence.conf (`/ union`), and "Live system (persistence)" boot entries.

    encryption luks: the partition is a LUKS2 volume holding that file system,
    opened at boot with the passphrase (live-boot asks on the console), and
    the image gets cryptsetup in its initramfs.
    """

    size: Size = Field(description="the persistence partition of the disk image, e.g. 1GiB")
    label: str = Field("persistence", description="its file system label (live-boot looks "
                       "for it; persistence-label= when not the default)")
    encryption: Literal["none", "luks"] = Field(
        "none", description="none, or luks: a LUKS2 volume opened with passphrase at boot "
        "(its 16MiB header is part of size; the image then holds the whole partition)",
    )
    passphrase: SecretStr | None = Field(
        None, description="the LUKS passphrase (with encryption: luks, at least 8 "
        "characters); never logged or reported",
    )

    @field_validator("size")
    @classmethod
    def _size(cls, v: int) -> int:
        if v < 16 * 2**20 or v > 2**40:
            raise ValueError("must be between 16MiB and 1TiB")
        if v % 2**20:
            raise ValueError("must be a whole number of MiB")
        return v

    @field_validator("label")
    @classmethod
    def _label(cls, v: str) -> str:
        return full(LABEL_RE, v, "must be 1 to 16 of A-Z a-z 0-9 _ - (an ext4 label)")

    @field_validator("passphrase")
    @classmethod
    def _passphrase(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        luks = info.data.get("encryption") == "luks"
        if v is None and luks:
            raise ValueError("encryption: luks needs a passphrase")
        if v is not None and not luks:
            raise ValueError("set, but encryption is not luks")
        if v is not None:
            secret = v.get_secret_value()
            if len(secret) < 8:
                raise ValueError("must be at least 8 characters")
            plain_text(secret, "the passphrase")  # typed at a prompt: one line
        if luks and info.data.get("size", LUKS_MIN_SIZE) < LUKS_MIN_SIZE:
            raise ValueError("with encryption: luks, size must be at least 32MiB "
                             "(16MiB of it are the LUKS2 header)")
        return v

    @property
    def encrypted(self) -> bool:
        return self.encryption == "luks"


# A LUKS2 volume's header (cryptsetup's default metadata and keyslot area), and
# the smallest encrypted partition: the header and a 16MiB file system.
LUKS_HEADER = 16 * 2**20
LUKS_MIN_SIZE = 32 * 2**20


# Where a netboot tree holds its squashfs, relative to the tree (and to netboot.url).
NETBOOT_SQUASHFS = "live/filesystem.squashfs"


class Netboot(Model):
    """Network boot: the TFTP tree's menus give live-boot fetch=<url>live/filesystem.squashfs,
    so the tree must be served over HTTP at url (`deblive serve`, or the site's server)."""

    url: str = Field(description="http:// or https:// URL of the netboot directory as the "
                     "booting machines reach it, e.g. http://192.0.2.1:8080/ (live-boot's "
                     "busybox wget does not check https certificates)")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        full(NETBOOT_URL_RE, v, "must be an http:// or https:// URL: host[:port]/path of "
             "letters, digits and . _ ~ % + - (it becomes fetch= on the kernel command line)")
        return v.rstrip("/") + "/"

    @property
    def squashfs_url(self) -> str:
        return f"{self.url}{NETBOOT_SQUASHFS}"
