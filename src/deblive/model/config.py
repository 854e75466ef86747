"""The image config: one YAML file per image type, validated against a schema.

The schema is a set of frozen pydantic models, so the same definition
validates files, documents defaults, and prints as JSON schema (`deblive
schema`). Validation is pure: what it needs to know about the host (its
mirror, release, architecture, Debian's release table) arrives as
HostDefaults in the validation context, gathered once by the caller.

Every free-text value ends up somewhere that interprets text: a boot menu,
a shell-sourced file, /etc/passwd, deb822 sources. Each is either checked
whole against the characters its destination takes (full matches only: a
trailing newline is not "the end") or quoted where it is written; control
characters are refused everywhere. Errors name the file, the key and what
is allowed, and end the run with exit status 2 before anything is touched.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from deblive.model import mirrors, outputs
from deblive.model.arch import Arch
from deblive.model.configerrors import describe
from deblive.model.mirrors import default_security_mirror
from deblive.model.sections import (
    Boot,
    Bootstrap,
    Installer,
    Language,
    Metapackage,
    Model,
    Netboot,
    Persistence,
    Repository,
    Squashfs,
    User,
)
from deblive.model.suites import ReleaseTable, SuiteError
from deblive.model.text import (
    MIRROR_RE,
    SNAPSHOT_RE,
    Component,
    DevicetreePath,
    Format,
    Hostname,
    ImageName,
    Keyboard,
    PackageName,
    SudoPolicy,
    SystemLocale,
    TaskName,
    Timezone,
    VolumeId,
    distinct_choices,
    full,
    plain_text,
)

__all__ = ["ConfigError", "HostDefaults", "ImageConfig", "SudoPolicy", "json_schema", "parse"]


class ConfigError(ValueError):
    """A config problem: names the file and the key (exit status 2)."""

    exit_code = 2


@dataclass(frozen=True)
class HostDefaults:
    """What a config's defaults come from: gathered once from the host by the caller."""

    mirror: str | None
    security_mirror: str | None
    codename: str | None
    architecture: Arch
    releases: ReleaseTable
    today: dt.date | None = None


def _host(info: ValidationInfo) -> HostDefaults:
    host = (info.context or {}).get("host")
    if not isinstance(host, HostDefaults):
        raise TypeError("config validation needs HostDefaults in its context (config.parse)")
    return host


class ImageConfig(Model):
    """One image type: what to build, from where, for whom."""

    name: ImageName = Field(description="names the outputs: lower case, digits, . + _ -")
    suite: str = Field(
        description="codename (bullseye ... sid) or stable/testing/unstable; default: host's",
    )
    architecture: Arch = Field(description="Debian architecture; default: the host's")
    mirror: str | None = Field(
        None, description="build mirror; default: the mirror of the host's apt sources"
    )
    apt_mirror: str | None = Field(
        None, description="mirror written into the image; default: mirror"
    )
    security_mirror: str | None = Field(
        None, description="security archive for the image; default: apt_mirror + '-security'"
    )
    snapshot: str | None = Field(
        None, description="a time of Debian's snapshot archive, YYYYMMDDTHHMMSSZ: the build "
        "mirror and the image's sources become snapshot_url/archive/debian/<time>/ (and "
        "debian-security), Check-Valid-Until off for them only; the build's date is this time",
    )
    snapshot_url: str | None = Field(
        None, description="the snapshot service's URL, needed with snapshot: Debian's "
        "public one, or a copy of your own",
    )
    components: tuple[Component, ...] = ("main",)
    security: bool = Field(True, description="add <suite>-security to the image's sources")
    updates: bool = Field(True, description="add <suite>-updates to the image's sources")
    tasks: tuple[TaskName, ...] = Field((), description="task-* packages, Recommends included")
    packages: tuple[PackageName, ...] = Field((), description="extra packages, same way")
    kernel: PackageName | None = Field(
        None, description="kernel package; default: linux-image-<flavour>"
    )
    user: User = Field(default_factory=User)  # type: ignore[arg-type]
    lock_root: bool = True
    hostname: Hostname = "debian"
    locale: SystemLocale = "en_US.UTF-8"
    timezone: Timezone = "UTC"
    keyboard: Keyboard = "us"
    repositories: tuple[Repository, ...] = Field(
        (), description="extra signed apt archives: packages of a distribution's own",
    )
    local_packages: tuple[Path, ...] = Field(
        (), description=".deb files or directories of them, relative to this file: a "
        "temporary local repository during the build; each is installed",
    )
    debconf: tuple[str, ...] = Field(
        (), description="debconf-set-selections lines preseeded before any package is installed",
    )
    hook: Path | None = Field(None, description="customisation script, relative to this file")
    overlay: Path | None = Field(
        None, description="a directory copied onto the image root before the hook (owner "
        "root, modes kept, symlinks copied as symlinks), relative to this file",
    )
    devicetree: DevicetreePath | None = Field(None, description="a DTB grub loads instead of "
                                              "the firmware's: a path in the image or a file "
                                              "relative to this file")
    confine_paths: bool = Field(
        False,
        validation_alias=AliasChoices("confine_paths", "hook_confined"),
        description="refuse a hook, overlay, splash, preseed or installer directory whose "
        "real path (symlinks followed) lies outside this config file's directory: for "
        "configs from a shared tree (hook_confined is the older name)",
    )
    formats: tuple[Format, ...] = Field(
        ("iso",), description="outputs from one root filesystem and squashfs: iso (the "
        "hybrid ISO), disk (<name>-<suite>-<arch>.img: the ISO with a persistence "
        "partition appended, for dd onto a stick; needs persistence), netboot "
        "(OUTDIR/netboot/: a TFTP root for PXE on BIOS and UEFI; needs netboot.url)",
    )
    persistence: Persistence | None = Field(
        None, description="live-boot persistence: boot entries, and the disk image's partition",
    )
    netboot: Netboot | None = Field(
        None, description="network boot: where the netboot directory is served over HTTP",
    )
    squashfs: Squashfs = Field(default_factory=Squashfs)  # type: ignore[arg-type]
    bootstrap: Bootstrap = Field(default_factory=Bootstrap)  # type: ignore[arg-type]
    boot: Boot = Field(default_factory=Boot)  # type: ignore[arg-type]
    volume_id: VolumeId | None = Field(None, description="ISO volume id, at most 32 characters")
    installer: Installer | None = Field(
        None, description="debian-installer entries in both boot menus (none if unset)"
    )
    metapackage: Metapackage = Field(
        default_factory=Metapackage,  # type: ignore[arg-type]
        description="true: install <name>-live-task (Depends: tasks and packages) in the image",
    )
    languages: tuple[Language, ...] = Field(
        (), description="a 'Languages' boot submenu; each locale is generated in the image",
    )

    # Where the file was read from: hook and splash paths are relative to it.
    source: Path | None = Field(None, exclude=True, description="(set by deblive)")

    _codename: str = PrivateAttr("")
    _build_security_mirror: str = PrivateAttr("")

    @model_validator(mode="before")
    @classmethod
    def _host_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        """Suite, architecture and mirrors default to the host's."""
        if not isinstance(data, dict):
            return data
        host = _host(info)
        data = dict(data)
        if data.get("suite") is None:
            data["suite"] = host.codename or "stable"
        if data.get("architecture") is None:
            data["architecture"] = str(host.architecture)
        snapshot, service = data.get("snapshot"), data.get("snapshot_url")
        snapshotted = (isinstance(snapshot, str) and SNAPSHOT_RE.fullmatch(snapshot)
                       and isinstance(service, str))
        if snapshotted and data.get("mirror") is None:
            data["mirror"] = mirrors.snapshot_mirror(service, "debian", snapshot)
        if data.get("mirror") is None:
            data["mirror"] = host.mirror
        mirror = data.get("mirror")
        if data.get("apt_mirror") is None and isinstance(mirror, str):
            data["apt_mirror"] = mirror.rstrip("/")
        apt_mirror = data.get("apt_mirror")
        if data.get("security_mirror") is None and isinstance(apt_mirror, str):
            if snapshotted and apt_mirror.rstrip("/") == mirrors.snapshot_mirror(
                    service, "debian", snapshot):
                data["security_mirror"] = mirrors.snapshot_mirror(
                    service, "debian-security", snapshot)
            else:
                data["security_mirror"] = default_security_mirror(apt_mirror.rstrip("/"))
        return data

    def model_post_init(self, context: Any) -> None:
        host = context["host"]
        assert isinstance(host, HostDefaults)
        self._codename = host.releases.resolve(self.suite, host.today)
        assert self.mirror is not None
        # The build's security archive: the host's, when building from the host's mirror;
        # the snapshot's, when building from a snapshot.
        snapshot_security = self.snapshot_mirror("debian-security")
        if snapshot_security and self.mirror == self.snapshot_mirror("debian"):
            self._build_security_mirror = snapshot_security
        elif host.security_mirror and self.mirror == (host.mirror or "").rstrip("/"):
            self._build_security_mirror = host.security_mirror.rstrip("/")
        else:
            self._build_security_mirror = default_security_mirror(self.mirror)

    @field_validator("suite")
    @classmethod
    def _suite(cls, v: str, info: ValidationInfo) -> str:
        host = _host(info)
        try:
            host.releases.resolve(v, host.today)
        except SuiteError as exc:
            allowed = ", ".join(host.releases.supported_names(host.today))
            raise ValueError(f"{exc}; allowed: {allowed}") from None
        return v

    @field_validator("snapshot")
    @classmethod
    def _snapshot(cls, v: str | None) -> str | None:
        return None if v is None else mirrors.check_snapshot(v)

    @field_validator("snapshot_url")
    @classmethod
    def _snapshot_url(cls, v: str | None, info: ValidationInfo) -> str | None:
        return mirrors.check_snapshot_service(v, info.data.get("snapshot"))

    @field_validator("mirror")
    @classmethod
    def _mirror(cls, v: str | None) -> str:
        if v is None:
            raise ValueError("not set, and the host's apt sources name no Debian mirror to use")
        return cls._url(v)

    @field_validator("apt_mirror", "security_mirror")
    @classmethod
    def _url(cls, v: str | None) -> str:
        assert v is not None  # filled from mirror before
        full(MIRROR_RE, v, "must be an http://, https:// or file:// URL without spaces")
        return v.rstrip("/")

    @field_validator("debconf")
    @classmethod
    def _debconf(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for line in v:
            plain_text(line, "a debconf line")
            if len(line.split(None, 3)) < 4:
                raise ValueError(f"{line!r} is not 'owner question type value'")
        return v

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return outputs.check_formats(distinct_choices(v, "iso, disk, netboot", "format"), info.data)

    @field_validator("persistence", "netboot", "squashfs")
    @classmethod
    def _by_format(cls, v: Any, info: ValidationInfo) -> Any:
        return outputs.check_for_formats(str(info.field_name), v, info.data)

    @field_validator("devicetree")
    @classmethod
    def _devicetree(cls, v: str | None, info: ValidationInfo) -> str | None:
        return outputs.check_devicetree(v, info.data.get("architecture"))

    @field_validator("boot")
    @classmethod
    def _boot(cls, v: Boot, info: ValidationInfo) -> Boot:
        if v.default == "persistence" and info.data.get("persistence") is None:
            raise ValueError("default: 'persistence' needs persistence to be set")
        return v

    @field_validator("languages")
    @classmethod
    def _languages(cls, v: tuple[Language, ...]) -> tuple[Language, ...]:
        locales = [lang.locale for lang in v]
        for locale in locales:
            if locales.count(locale) > 1:
                raise ValueError(f"locale {locale!r} is listed twice")
        return v

    # -- derived values ------------------------------------------------------

    @property
    def codename(self) -> str:
        """The suite's codename, resolved once when the config was read."""
        return self._codename

    def snapshot_mirror(self, archive: str) -> str | None:
        """snapshot_url/archive/<archive>/<time> with a snapshot, else None."""
        if self.snapshot is None or self.snapshot_url is None:
            return None
        return mirrors.snapshot_mirror(self.snapshot_url, archive, self.snapshot)

    @property
    def snapshot_epoch(self) -> int | None:
        """The snapshot's time as seconds since the epoch (the build's date)."""
        return None if self.snapshot is None else mirrors.snapshot_epoch(self.snapshot)

    def is_snapshot_uri(self, uri: str) -> bool:
        return (self.snapshot is not None and self.snapshot_url is not None
                and uri.startswith(f"{self.snapshot_url}/archive/"))

    @property
    def build_security_mirror(self) -> str:
        """The security archive the build uses (the image gets security_mirror)."""
        return self._build_security_mirror

    @property
    def where(self) -> str:
        """The config file, for messages."""
        return str(self.source) if self.source else "<default config>"

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    def _relative(self, path: Path | None) -> Path | None:
        return None if path is None else self.base_dir / path

    @property
    def hook_path(self) -> Path | None:
        return self._relative(self.hook)

    @property
    def overlay_path(self) -> Path | None:
        return self._relative(self.overlay)

    @property
    def splash_path(self) -> Path | None:
        return self._relative(self.boot.splash)

    @property
    def devicetree_file(self) -> Path | None:
        """A devicetree next to the config (None for one inside the image, or none)."""
        dtb = self.devicetree
        return None if dtb is None or dtb.startswith("/") else self._relative(Path(dtb))

    @property
    def installer_directory(self) -> Path | None:
        return self._relative(self.installer.directory if self.installer else None)

    @property
    def preseed_path(self) -> Path | None:
        return self._relative(self.installer.preseed if self.installer else None)

    def referenced_paths(self) -> dict[str, Path]:
        """Every file or directory the config names, by key (for checks and VM shares)."""
        found = {
            "hook": self.hook_path, "overlay": self.overlay_path, "boot.splash": self.splash_path,
            "installer.preseed": self.preseed_path,
            "installer.directory": self.installer_directory,
            "devicetree": self.devicetree_file,
        }
        for index, repo in enumerate(self.repositories):
            found[f"repositories[{index}].key"] = self._relative(repo.key)
        for index, path in enumerate(self.local_packages):
            found[f"local_packages[{index}]"] = self._relative(path)
        return {key: path for key, path in found.items() if path is not None}

    def repository_suites(self, repo: Repository) -> tuple[str, ...]:
        return repo.suites or (self.codename,)

    @property
    def metapackage_name(self) -> str:
        """<name>-live-task, made a valid package name (no underscores, lower case)."""
        return f"{self.name.replace('_', '-')}-live-task"

    @property
    def kernel_package(self) -> str:
        return self.kernel or self.architecture.kernel_package

    @property
    def iso_volume_id(self) -> str:
        if self.volume_id:
            return self.volume_id
        return f"{self.name} {self.codename} {self.architecture}"[:32]

    @property
    def image_basename(self) -> str:
        return f"{self.name}-{self.codename}-{self.architecture}"

    def public_dump(self) -> dict[str, Any]:
        """The config as JSON data, the password masked (for reports and --show)."""
        return self.model_dump(mode="json")


def parse(data: Any, source: Path | None, host: HostDefaults,
          overrides: dict[str, Any] | None = None) -> ImageConfig:
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
        return ImageConfig.model_validate(merged, context={"host": host})
    except ValidationError as exc:
        raise ConfigError(describe(exc, where, ImageConfig)) from None


def json_schema() -> dict[str, Any]:
    schema = ImageConfig.model_json_schema(mode="validation")
    schema.get("properties", {}).pop("source", None)
    schema["title"] = "deblive image config"
    return schema
