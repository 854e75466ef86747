"""Which packages make an image: decided once, from the config, for every user.

The plan resolves this selection against the mirror, the bootstrap makes the
base from it, the packages stage installs it, the metapackage depends on it
and the installer and boot stages fetch their packages by it, so all of them
agree on what the image holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from deblive.model.config import ImageConfig

# apt pattern for a bootstrap variant's base: what mmdebstrap (and debootstrap) install.
VARIANT_PATTERNS = {
    "minbase": "?or(?priority(required),?essential)",
    "required": "?or(?priority(required),?essential)",
    "important": "?or(?priority(required),?priority(important),?essential)",
    "standard": "?or(?priority(required),?priority(important),?priority(standard),?essential)",
}


def _unique(names: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class PackageSelection:
    """The image's packages, in the order they are installed."""

    variant: str
    bootstrap_extras: tuple[str, ...]  # beyond the variant, at bootstrap time
    live: tuple[str, ...]  # what makes the tree a live system
    tasks: tuple[str, ...]
    extras: tuple[str, ...]
    boot: tuple[str, ...]  # boot loader packages: downloaded and unpacked, never installed
    netboot_installer: bool  # debian-installer-<n>-netboot-<arch> is fetched for the medium
    locales: bool  # the locales package (a non-C locale or a Languages menu)

    @classmethod
    def from_config(cls, config: ImageConfig) -> PackageSelection:
        locales = not config.locale.startswith("C") or bool(config.languages)
        live = [config.kernel_package, "live-boot", "systemd-sysv", "sudo"]
        if locales:
            live.append("locales")
        if config.persistence is not None and config.persistence.encrypted:
            # live-boot opens a LUKS persistence volume with these, from the
            # initramfs; without them it silently ignores persistence-encryption.
            live += ["cryptsetup", "cryptsetup-initramfs"]
        boot = config.architecture.boot
        installer = config.installer
        return cls(
            variant=config.bootstrap.variant,
            # An https mirror needs CA certificates before apt can use it.
            bootstrap_extras=("ca-certificates",) if (config.mirror or "").startswith(
                "https://") else (),
            live=tuple(live),
            tasks=config.tasks,
            extras=config.packages,
            boot=() if boot is None else (
                *boot.packages, *(boot.netboot_packages if "netboot" in config.formats else ())),
            netboot_installer=installer is not None and "package" in installer.sources,
            locales=locales,
        )

    @property
    def base_request(self) -> tuple[str, ...]:
        """What apt resolves for the base: the variant's pattern, apt, and the extras."""
        return (VARIANT_PATTERNS[self.variant], "apt", *self.bootstrap_extras)

    @property
    def install(self) -> tuple[str, ...]:
        """Everything apt installs in the chroot, in order, each once."""
        return _unique([*self.live, *self.tasks, *self.extras])

    @property
    def metapackage_depends(self) -> tuple[str, ...]:
        """The tasks, then the extras, each once."""
        return _unique([*self.tasks, *self.extras])
