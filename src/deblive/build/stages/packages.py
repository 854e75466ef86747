"""Steps 4 and 5: the live system, tasks and extras, installed with apt in the chroot.

debootstrap's and mmdebstrap's own include lists skip Recommends; a live image
is expected to carry them (seed point 14), so everything is installed by
apt-get inside the chroot with Recommends on, non-interactively (point 15),
with proc mounted (point 16) and without progress bars (point 17).
Debconf questions that are known to hang (keyboard, tzdata, locales) are
answered from the config before any package is installed.
"""

from __future__ import annotations

import os
import shutil

from deblive.build import bootfiles
from deblive.build.chroot import Chroot
from deblive.build.context import BuildContext
from deblive.model.config import ImageConfig

BOOTDEBS_IN_CHROOT = "var/tmp/deblive-bootdebs"


def wants_locales(config: ImageConfig) -> bool:
    return not config.locale.startswith("C") or bool(config.languages)


def live_packages(config: ImageConfig) -> list[str]:
    """What makes the tree a live system, before tasks and extras."""
    packages = [config.kernel_package, "live-boot", "systemd-sysv", "sudo"]
    if wants_locales(config):
        packages.append("locales")
    return packages


def install_list(config: ImageConfig) -> list[str]:
    """Everything apt installs, in order, without duplicates."""
    seen: dict[str, None] = {}
    for name in [*live_packages(config), *config.tasks, *config.packages]:
        seen.setdefault(name, None)
    return list(seen)


def debconf_selections(config: ImageConfig) -> list[str]:
    """Answers for the classic hangs, then the config's own lines (which win)."""
    layout = config.keyboard.split("(")[0]
    area, _, zone = config.timezone.partition("/")
    if not zone:
        area, zone = "Etc", config.timezone
    charset = config.locale.split(".", 1)[1] if "." in config.locale else "UTF-8"
    lines = [
        f"keyboard-configuration keyboard-configuration/xkb-keymap select {layout}",
        f"keyboard-configuration keyboard-configuration/layoutcode string {layout}",
        f"tzdata tzdata/Areas select {area}",
        f"tzdata tzdata/Zones/{area} select {zone}",
    ]
    if wants_locales(config):
        lines += [
            f"locales locales/locales_to_be_generated multiselect {config.locale} {charset}",
            f"locales locales/default_environment_locale select {config.locale}",
        ]
    return [*lines, *config.debconf]


def run(ctx: BuildContext) -> None:
    config = ctx.config
    apt_log = ctx.work.output / "logs" / "apt.log"
    apt_log.parent.mkdir(parents=True, exist_ok=True)
    chroot = Chroot(ctx.rootfs, ctx.runner, apt_log=apt_log)
    chroot.run(
        ["debconf-set-selections"],
        input_text="\n".join(debconf_selections(config)) + "\n",
        what="preseeding debconf",
    )
    chroot.apt_get("update", what="apt-get update from the build mirror")
    packages = install_list(config)
    ctx.log.info(f"installing {len(packages)} packages with Recommends: {' '.join(packages)}")
    chroot.apt_get("install", *packages, what="installing the live system, tasks and extras")
    download_boot_packages(ctx)
    if config.metapackage.install:
        install_metapackage(ctx, chroot)
    if config.languages:
        generate_language_locales(ctx, chroot)
    if config.installer is not None:
        from deblive.build import installer

        installer.obtain(ctx)


def download_boot_packages(ctx: BuildContext) -> None:
    """Boot loaders of the target release, fetched (not installed) while apt knows the suite.

    They are unpacked on the host for the medium, so ISOLINUX, its modules and
    isohdpfx.bin all come from one syslinux version, and shim and grub are the
    release's signed binaries.
    """
    names = bootfiles.boot_packages(ctx.config.architecture)
    if not names:
        return
    inside = ctx.rootfs / BOOTDEBS_IN_CHROOT
    inside.mkdir(parents=True, exist_ok=True)
    os.chmod(inside, 0o777)  # apt downloads as the _apt user
    chroot = Chroot(ctx.rootfs, ctx.runner)
    chroot.run(
        ["sh", "-c", f'cd /{BOOTDEBS_IN_CHROOT} && exec apt-get -q download "$@"', "sh", *names],
        what="downloading the boot loader packages",
    )
    target = ctx.work.bootdebs
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for deb in inside.glob("*.deb"):
        shutil.move(deb, target / deb.name)
    shutil.rmtree(inside)
    ctx.facts["bootdebs"] = sorted(p.name for p in target.glob("*.deb"))


def language_locales(config: ImageConfig) -> list[str]:
    """The languages' locales that are not the image's own (that one users.py generates)."""
    return [lang.locale for lang in config.languages if lang.locale != config.locale]


def localedef_argv(locale: str) -> list[str]:
    """localedef for one locale into its own directory under /usr/lib/locale.

    --no-archive because the users stage rewrites /etc/locale.gen with the
    image's own locale and runs locale-gen, which deletes and rebuilds
    locale-archive: directories beside the archive survive that, and glibc
    finds a locale in either place. live-config's locales component runs
    `locale-gen --keep-existing` at boot, which keeps them too.
    """
    base, _, modifier = locale.partition("@")
    name, _, charset = base.partition(".")
    source = f"{name}@{modifier}" if modifier else name
    return ["localedef", "--no-archive", "-i", source, "-f", charset or "UTF-8", locale]


def generate_language_locales(ctx: BuildContext, chroot: Chroot) -> None:
    """Compile the boot menu's languages, so choosing one at boot costs nothing."""
    for locale in language_locales(ctx.config):
        chroot.run(localedef_argv(locale), what=f"generating the locale {locale}")
    ctx.facts["language_locales"] = language_locales(ctx.config)


def install_metapackage(ctx: BuildContext, chroot: Chroot) -> None:
    """<name>-live-task into the image, its dependencies then marked automatic.

    The dependencies are already installed, so apt only adds the package; once
    they are "automatically installed", apt keeps them for the metapackage's
    sake and `apt autoremove` would remove them only with it.
    """
    from deblive.build import metapackage

    deb = metapackage.build(ctx.config, ctx.work.root / "metapackage", ctx.source_date_epoch)
    inside = metapackage.copy_into_image(deb, ctx.rootfs)
    try:
        chroot.apt_get("install", str(inside), what=f"installing {deb.name}")
    finally:
        (ctx.rootfs / str(inside).lstrip("/")).unlink(missing_ok=True)
    deps = metapackage.depends(ctx.config)
    chroot.run(["apt-mark", "auto", *deps], what="marking the metapackage's dependencies auto")
    ctx.facts["metapackage"] = deb.name
