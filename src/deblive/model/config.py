"""The image config: one YAML file per image type, validated against a schema.

The schema is a set of pydantic models, so the same definition validates
files, documents defaults, and prints as JSON schema (`deblive schema`).
Errors name the file, the key and what is allowed, and end the run with
exit status 2 before anything on the system is touched.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deblive.core.runner import DebliveError
from deblive.host import hostapt
from deblive.model import suites

ARCHITECTURES = (
    "amd64", "arm64", "i386", "armhf", "armel", "ppc64el", "s390x", "riscv64", "mips64el",
)
Architecture = Literal[
    "amd64", "arm64", "i386", "armhf", "armel", "ppc64el", "s390x", "riscv64", "mips64el"
]
Component = Literal["main", "contrib", "non-free", "non-free-firmware"]
Compression = Literal["xz", "zstd", "lz4", "gzip", "lzo"]
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]+$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.+_-]{0,62}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
HOSTNAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
VOLUME_ID_RE = re.compile(r"^[A-Za-z0-9_.+ -]{1,32}$")
LOCALE_RE = re.compile(r"^[a-zA-Z]{2,3}(_[A-Z]{2})?(\.[A-Za-z0-9-]+)?(@[a-z]+)?$|^C(\.UTF-8)?$")
MIRROR_RE = re.compile(r"^(https?|file)://\S+$")
VERSION_RE = re.compile(r"^[0-9][A-Za-z0-9.+~-]*$")
KEYBOARD_RE = re.compile(r"^[a-z]{2,8}(\([a-z0-9_-]+\))?$")


class ConfigError(DebliveError):
    """A config problem: names the file and the key."""

    exit_code = 2


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class User(Model):
    """The live user, created at build time the seed's way (vmdebootstrap --user)."""

    name: str = Field("user", description="login name")
    password: str = Field("live", description="plain password, hashed into /etc/shadow")
    groups: list[str] = Field(
        default_factory=lambda: ["sudo"],
        description="supplementary groups; 'sudo' gives sudo rights (sudo is installed)",
    )
    shell: str = "/bin/bash"
    fullname: str = "Debian Live user"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not USER_RE.match(v) or v == "root":
            raise ValueError("must be a lower-case login name (a-z, 0-9, _ and -), not root")
        return v

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        for group in v:
            if not USER_RE.match(group):
                raise ValueError(f"group {group!r} is not a valid group name")
        return v


class Squashfs(Model):
    """How the root filesystem is squashed: xz for releases, zstd or lz4 to iterate."""

    compression: Compression = "xz"
    level: int | None = Field(None, ge=1, le=22, description="compressor level (zstd, gzip)")
    block_size: Literal["128K", "256K", "512K", "1M"] = "1M"


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
    default: Literal["live", "failsafe"] = "live"
    splash: Path | None = Field(None, description="PNG (640x480), relative to the config file")
    serial_console: bool = Field(
        True,
        description="serial console (115200; ttyS0, on arm64 ttyAMA0) in boot loaders and kernel",
    )

    @field_validator("cmdline")
    @classmethod
    def _cmdline(cls, v: str) -> str:
        if "\n" in v or '"' in v or "'" in v:
            raise ValueError("must be one line without quotes")
        return v.strip()


InstallerSource = Literal["mirror", "package", "directory"]


class Installer(Model):
    """debian-installer on the medium: "Install" and "Graphical install" in both menus.

    The netboot d-i installs from the network mirror, not from the live
    squashfs, so the installed system gets neither the live user nor the
    locked root: it asks for users (or reads them from the preseed) as usual.
    """

    sources: list[InstallerSource] = Field(
        default_factory=lambda: ["mirror", "package"],  # type: ignore[arg-type]
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
    def _sources(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one of mirror, package, directory")
        if len(set(v)) != len(v):
            raise ValueError("each source at most once")
        return v

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
        if v is not None and not VERSION_RE.match(v):
            raise ValueError(f"{v!r} is not a Debian version (digits first; a-z 0-9 . + ~)")
        return v

    @field_validator("maintainer")
    @classmethod
    def _maintainer(cls, v: str) -> str:
        if not re.match(r"^[^<>\n]+ <[^<>@\s]+@[^<>@\s]+>$", v):
            raise ValueError("must be 'Name <address>'")
        return v


class Language(Model):
    """One entry of the boot menu's "Languages" submenu (live-config reads both values)."""

    locale: str = Field(description="locale, e.g. de_DE.UTF-8 (live-config's locales=)")
    keyboard: str = Field(description="XKB layout, e.g. de (live-config's keyboard-layouts=)")
    label: str = Field(description="menu label, e.g. Deutsch")

    @field_validator("locale")
    @classmethod
    def _locale(cls, v: str) -> str:
        if not LOCALE_RE.match(v) or v.startswith("C") or "." not in v:
            raise ValueError("must look like de_DE.UTF-8 (language, country and charset)")
        return v

    @field_validator("keyboard")
    @classmethod
    def _keyboard(cls, v: str) -> str:
        if not KEYBOARD_RE.match(v):
            raise ValueError("must be an XKB layout such as us, de or fr")
        return v

    @field_validator("label")
    @classmethod
    def _label(cls, v: str) -> str:
        v = " ".join(v.split())
        if not v or len(v) > 40 or any(c in v for c in "\"'$^\\{}"):
            raise ValueError("must be 1 to 40 characters without quotes, $, ^, \\ or braces")
        return v


class ImageConfig(Model):
    """One image type: what to build, from where, for whom."""

    name: str = Field(description="names the outputs: lower case, digits, . + _ -")
    suite: str = Field(
        default_factory=lambda: hostapt.host_codename() or "stable",
        description="codename (bullseye ... sid) or stable/testing/unstable; default: host's",
    )
    architecture: Architecture = Field(
        default_factory=lambda: hostapt.host_architecture(),  # type: ignore[arg-type]
        description="Debian architecture; default: the host's",
    )
    mirror: str | None = Field(
        None, description="build mirror; default: the mirror of the host's apt sources"
    )
    apt_mirror: str | None = Field(
        None, description="mirror written into the image; default: mirror"
    )
    security_mirror: str | None = Field(
        None, description="security archive for the image; default: apt_mirror + '-security'"
    )
    components: list[Component] = Field(default_factory=lambda: ["main"])  # type: ignore[arg-type]
    security: bool = Field(True, description="add <suite>-security to the image's sources")
    updates: bool = Field(True, description="add <suite>-updates to the image's sources")
    tasks: list[str] = Field(
        default_factory=list, description="task-* packages, Recommends included"
    )
    packages: list[str] = Field(default_factory=list, description="extra packages, same way")
    kernel: str | None = Field(None, description="kernel package; default: linux-image-<flavour>")
    user: User = Field(default_factory=User)  # type: ignore[arg-type]
    lock_root: bool = True
    hostname: str = "debian"
    locale: str = "en_US.UTF-8"
    timezone: str = "UTC"
    keyboard: str = "us"
    debconf: list[str] = Field(
        default_factory=list,
        description="debconf-set-selections lines preseeded before any package is installed",
    )
    hook: Path | None = Field(None, description="customisation script, relative to this file")
    hook_confined: bool = Field(
        False,
        description="refuse a hook that lies (after following symlinks) outside the directory "
        "of this config file: for configs from a shared tree that must not run other scripts",
    )
    squashfs: Squashfs = Field(default_factory=Squashfs)  # type: ignore[arg-type]
    bootstrap: Bootstrap = Field(default_factory=Bootstrap)  # type: ignore[arg-type]
    boot: Boot = Field(default_factory=Boot)  # type: ignore[arg-type]
    volume_id: str | None = Field(None, description="ISO volume id, at most 32 characters")
    installer: Installer | None = Field(
        None, description="debian-installer entries in both boot menus (none if unset)"
    )
    metapackage: Metapackage = Field(
        default_factory=Metapackage,  # type: ignore[arg-type]
        description="true: install <name>-live-task (Depends: tasks and packages) in the image",
    )
    languages: list[Language] = Field(
        default_factory=list,
        description="a 'Languages' boot submenu; each locale is generated in the image",
    )

    # Where the file was read from: hook and splash paths are relative to it.
    source: Path | None = Field(None, exclude=True, description="(set by deblive)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                "must start with a lower-case letter or digit and hold only a-z 0-9 . + _ -"
            )
        return v

    @field_validator("suite")
    @classmethod
    def _suite(cls, v: str) -> str:
        try:
            suites.resolve(v)
        except suites.SuiteError as exc:
            raise ValueError(f"{exc}; allowed: {', '.join(suites.supported_names())}") from None
        return v

    @field_validator("mirror", "apt_mirror", "security_mirror")
    @classmethod
    def _mirror(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not MIRROR_RE.match(v):
            raise ValueError("must be an http://, https:// or file:// URL")
        return v.rstrip("/")

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: list[str]) -> list[str]:
        for task in v:
            if not task.startswith(("task-", "live-task-")) or not PACKAGE_RE.match(task):
                raise ValueError(f"{task!r} is not a task package (task-* or live-task-*)")
        return v

    @field_validator("packages")
    @classmethod
    def _packages(cls, v: list[str]) -> list[str]:
        for package in v:
            if not PACKAGE_RE.match(package):
                raise ValueError(f"{package!r} is not a Debian package name")
        return v

    @field_validator("kernel")
    @classmethod
    def _kernel(cls, v: str | None) -> str | None:
        if v is not None and not PACKAGE_RE.match(v):
            raise ValueError(f"{v!r} is not a Debian package name")
        return v

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str) -> str:
        if not HOSTNAME_RE.match(v):
            raise ValueError("must be a host name label (letters, digits, -; at most 63)")
        return v

    @field_validator("locale")
    @classmethod
    def _locale(cls, v: str) -> str:
        if not LOCALE_RE.match(v):
            raise ValueError("must look like en_US.UTF-8 or C.UTF-8")
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$", v) or ".." in v:
            raise ValueError("must be a tz database name such as UTC or Europe/Berlin")
        return v

    @field_validator("keyboard")
    @classmethod
    def _keyboard(cls, v: str) -> str:
        if not re.match(r"^[a-z]{2,8}(\([a-z0-9_-]+\))?$", v):
            raise ValueError("must be an XKB layout such as us, de or fr")
        return v

    @field_validator("debconf")
    @classmethod
    def _debconf(cls, v: list[str]) -> list[str]:
        for line in v:
            if len(line.split(None, 3)) < 4 or "\n" in line:
                raise ValueError(f"{line!r} is not 'owner question type value'")
        return v

    @field_validator("volume_id")
    @classmethod
    def _volume_id(cls, v: str | None) -> str | None:
        if v is not None and not VOLUME_ID_RE.match(v):
            raise ValueError("must be 1 to 32 characters of A-Z a-z 0-9 _ . + - and space")
        return v

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: list[Language]) -> list[Language]:
        locales = [lang.locale for lang in v]
        for locale in locales:
            if locales.count(locale) > 1:
                raise ValueError(f"locale {locale!r} is listed twice")
        return v

    @model_validator(mode="after")
    def _fill_from_host(self) -> ImageConfig:
        if self.mirror is None:
            self.mirror = hostapt.host_mirror()
            if self.mirror is None:
                raise ValueError(
                    "mirror: not set, and the host's apt sources name no Debian mirror to use"
                )
        if self.apt_mirror is None:
            self.apt_mirror = self.mirror
        if self.security_mirror is None:
            self.security_mirror = default_security_mirror(self.apt_mirror)
        return self

    @model_validator(mode="after")
    def _installer_files(self) -> ImageConfig:
        """A named preseed or installer directory must exist: found now, not mid-build."""
        preseed, directory = self.preseed_path, self.installer_directory
        if preseed is not None and not preseed.is_file():
            raise ValueError(f"installer.preseed: {preseed} is not a file")
        if directory is not None and not directory.is_dir():
            raise ValueError(f"installer.directory: {directory} is not a directory")
        return self

    # -- derived values ------------------------------------------------------

    @property
    def codename(self) -> str:
        return suites.resolve(self.suite)

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    @property
    def hook_path(self) -> Path | None:
        if self.hook is None:
            return None
        return (self.base_dir / self.hook).resolve()

    @property
    def splash_path(self) -> Path | None:
        if self.boot.splash is None:
            return None
        return (self.base_dir / self.boot.splash).resolve()

    @property
    def installer_directory(self) -> Path | None:
        if self.installer is None or self.installer.directory is None:
            return None
        return (self.base_dir / self.installer.directory).resolve()

    @property
    def preseed_path(self) -> Path | None:
        if self.installer is None or self.installer.preseed is None:
            return None
        return (self.base_dir / self.installer.preseed).resolve()

    @property
    def metapackage_name(self) -> str:
        """<name>-live-task, made a valid package name (no underscores, lower case)."""
        return f"{self.name.replace('_', '-')}-live-task"

    @property
    def kernel_package(self) -> str:
        if self.kernel:
            return self.kernel
        flavour = {
            "amd64": "amd64", "arm64": "arm64", "i386": "686-pae", "armhf": "armmp",
            "armel": "rpi", "ppc64el": "powerpc64le", "s390x": "s390x", "riscv64": "riscv64",
            "mips64el": "5kc-malta",
        }[self.architecture]
        return f"linux-image-{flavour}"

    @property
    def iso_volume_id(self) -> str:
        if self.volume_id:
            return self.volume_id
        return f"{self.name} {self.codename} {self.architecture}"[:32]

    def digest(self) -> str:
        """sha256 of the resolved config and the hook's content: what made this image."""
        data = self.model_dump(mode="json")
        data["codename"] = self.codename
        hook = self.hook_path
        if hook is not None and hook.is_file():
            data["hook_sha256"] = hashlib.sha256(hook.read_bytes()).hexdigest()
        preseed = self.preseed_path
        if preseed is not None and preseed.is_file():
            data["preseed_sha256"] = hashlib.sha256(preseed.read_bytes()).hexdigest()
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def default_security_mirror(apt_mirror: str) -> str:
    """Debian's layout puts the security archive beside the main one: .../debian-security."""
    if apt_mirror.endswith("/debian"):
        return apt_mirror + "-security"
    return apt_mirror.rsplit("/", 1)[0] + "/debian-security"


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts) or "(top level)"


def _describe(exc: ValidationError, where: str) -> str:
    lines = []
    for err in exc.errors():
        key = _key_path(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key; allowed keys here: {', '.join(_allowed_keys(err['loc']))}"
        elif err["type"] == "literal_error" and "expected" in err.get("ctx", {}):
            msg = f"{err['input']!r} is not allowed; allowed: {err['ctx']['expected']}"
        lines.append(f"{where}: {key}: {msg}")
    return "\n".join(lines)


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] = ImageConfig
    for item in loc[:-1]:
        field = model.model_fields.get(str(item))
        annotation = field.annotation if field else None
        # `Installer | None`: the model inside the optional.
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            annotation = inner[0]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return [k for k in model.model_fields if k != "source"]


def parse(data: Any, source: Path | None, overrides: dict[str, Any] | None = None) -> ImageConfig:
    """Validate a mapping (from YAML) into an ImageConfig; ConfigError on any problem."""
    where = str(source) if source else "<config>"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{where}: the file must hold a mapping of keys, not {kind}")
    merged = dict(data)
    for key, value in (overrides or {}).items():
        if value is not None:
            merged[key] = value
    merged["source"] = source
    try:
        config = ImageConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where)) from None
    check_hook_confined(config, where)
    return config


def check_hook_confined(config: ImageConfig, where: str) -> None:
    """With hook_confined, the hook's real path must lie inside the config's directory."""
    hook = config.hook_path
    if not config.hook_confined or hook is None:
        return
    tree = config.base_dir.resolve()
    if not hook.is_relative_to(tree):
        raise ConfigError(
            f"{where}: hook: {hook} is outside the config's directory {tree} "
            "(hook_confined is true; symlinks are followed)"
        )


def load(path: Path, overrides: dict[str, Any] | None = None) -> ImageConfig:
    """Read and validate a config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse(data, path.resolve(), overrides)


def default_config_text() -> str:
    return resources.files("deblive").joinpath("data/default.yaml").read_text(encoding="utf-8")


def load_default(overrides: dict[str, Any] | None = None) -> ImageConfig:
    """The embedded default image: a minimal live system of the host's release and arch."""
    data = yaml.safe_load(default_config_text())
    return parse(data, None, overrides)


def json_schema() -> dict[str, Any]:
    schema = ImageConfig.model_json_schema(mode="validation")
    schema.get("properties", {}).pop("source", None)
    schema["title"] = "deblive image config"
    return schema
