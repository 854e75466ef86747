"""Steps 4 and 5: the live system, tasks and extras, installed with apt in the chroot.

debootstrap's and mmdebstrap's own include lists skip Recommends; a live image
is expected to carry them (seed point 14), so everything is installed by
apt-get inside the chroot with Recommends on, non-interactively (point 15),
with proc mounted (point 16) and without progress bars (point 17).
Debconf questions that are known to hang (keyboard, tzdata, locales) are
answered from the config before any package is installed.
"""

from __future__ import annotations

from deblive.build import bootdebs, installer, metapackage
from deblive.build.chroot import Chroot, download_packages
from deblive.build.context import BuildContext
from deblive.build.stage import Stage
from deblive.build.stages import sources
from deblive.host import deletion
from deblive.model.config import ImageConfig
from deblive.model.packages import PackageSelection
from deblive.model.text import locale_charset


def debconf_selections(config: ImageConfig) -> list[str]:
    """Answers for the classic hangs, then the config's own lines (which win)."""
    layout = config.keyboard.split("(")[0]
    area, _, zone = config.timezone.partition("/")
    if not zone:
        area, zone = "Etc", config.timezone
    charset = locale_charset(config.locale)
    lines = [
        f"keyboard-configuration keyboard-configuration/xkb-keymap select {layout}",
        f"keyboard-configuration keyboard-configuration/layoutcode string {layout}",
        f"tzdata tzdata/Areas select {area}",
        f"tzdata tzdata/Zones/{area} select {zone}",
    ]
    if PackageSelection.from_config(config).locales:
        lines += [
            f"locales locales/locales_to_be_generated multiselect {config.locale} {charset}",
            f"locales locales/default_environment_locale select {config.locale}",
        ]
    return [*lines, *config.debconf]


def language_locales(config: ImageConfig) -> list[str]:
    """The languages' locales that are not the image's own (that one the users stage makes)."""
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


def download_boot_packages(ctx: BuildContext, chroot: Chroot) -> None:
    """Boot loaders of the target release, fetched (not installed) while apt knows the suite.

    They are unpacked on the host for the medium, so ISOLINUX, its modules and
    isohdpfx.bin all come from one syslinux version, and shim and grub are the
    release's signed binaries. A rebuild from the same indexes and config takes
    the same files from the package cache instead (build.bootdebs).
    """
    names = PackageSelection.from_config(ctx.config).boot
    if not names or not ctx.make_iso:
        return
    deletion.remove_tree(ctx.work.bootdebs)
    assert ctx.archives is not None
    key = (bootdebs.record_key(ctx.plan.indexes, ctx.config, names)
           if ctx.plan is not None and ctx.plan.indexes else None)
    wanted = bootdebs.recorded(ctx.cache, key) if key is not None else None
    debs = bootdebs.from_archives(wanted, ctx.archives, ctx.work.bootdebs) if wanted else None
    if debs is None:
        debs = download_packages(chroot, names, ctx.work.bootdebs,
                                 "downloading the boot loader packages")
        bootdebs.into_archives(debs, ctx.archives)
        if key is not None:
            bootdebs.record(ctx.cache, key, debs)
    else:
        ctx.log.info(f"boot loader packages from the package cache: {len(debs)} files as "
                     "apt fetched them for the same indexes and config")
    ctx.facts.boot_packages = [deb.name for deb in debs]


def install_metapackage(ctx: BuildContext, chroot: Chroot, *, again: bool = False) -> None:
    """<name>-live-task into the image, its dependencies then marked automatic.

    The dependencies are already installed, so apt only adds the package; once
    they are "automatically installed", apt keeps them for the metapackage's
    sake and `apt autoremove` would remove them only with it.
    """
    deb = metapackage.build(ctx.config, ctx.work.root / "metapackage", ctx.runner,
                            ctx.source_date_epoch)
    inside = f"/var/tmp/{deb.name}"
    ctx.tree.copy_in(deb, inside)
    try:
        # again: over a cached base with fewer packages, the same version with new Depends
        chroot.apt_get("install", *(["--reinstall"] if again else []), inside,
                       what=f"installing {deb.name}")
    finally:
        ctx.tree.unlink(inside)
    deps = metapackage.depends(ctx.config)
    chroot.run(["apt-mark", "auto", *deps], what="marking the metapackage's dependencies auto")
    ctx.facts.metapackage = deb.name


def take_prefetched(ctx: BuildContext) -> None:
    """The packages downloaded beside the bootstrap, into the archives apt uses."""
    fetch = ctx.prefetch
    if fetch is None:
        return
    assert ctx.archives is not None
    handed = fetch.hand_over(ctx.archives)
    ctx.prefetch = None
    ctx.facts.prefetched = {"packages": handed.files, "bytes": handed.bytes,
                            "seconds": round(handed.seconds, 1), "problem": handed.problem}
    ctx.log.info(f"prefetch: {handed.files} packages ({handed.bytes / 2**20:.1f} MiB) "
                 f"downloaded in {handed.seconds:.1f} s beside the bootstrap"
                 + (f"; not all of them: {handed.problem} (apt fetches the rest)"
                    if handed.problem else ""))


class Packages(Stage):
    name = "packages"
    in_base = True

    def run(self, ctx: BuildContext) -> None:
        config = ctx.config
        ctx.work.logs.mkdir(parents=True, exist_ok=True)
        chroot = Chroot(ctx.tree, ctx.runner, apt_log=ctx.work.logs / "apt.log")
        chroot.run(
            ["debconf-set-selections"],
            input_data="\n".join(debconf_selections(config)) + "\n",
            what="preseeding debconf",
        )
        take_prefetched(ctx)
        sources.package_lists(ctx)
        if config.bootstrap.backend == "debootstrap":  # it bootstrapped the release alone
            chroot.apt_get("upgrade", what="upgrading the base from -updates and -security")
        selection = PackageSelection.from_config(config).install
        packages = [*selection, *(f"{p.name}={p.version}" for p in ctx.local_packages
                                  if p.name not in selection)]
        ctx.log.info(f"installing {len(packages)} packages with Recommends: {' '.join(packages)}")
        chroot.apt_get("install", *packages, what="installing the live system, tasks and extras")
        if config.metapackage.install:
            install_metapackage(ctx, chroot)
        for locale in language_locales(config):
            chroot.run(localedef_argv(locale), what=f"generating the locale {locale}")
        ctx.facts.language_locales = language_locales(config)


class MediumPackages(Stage):
    """The boot loaders and the installer for the medium, fetched with the image's apt.

    Not part of the image tree, so not of the base: a layered build whose base
    came from the cache fetches them all the same (from the package cache).
    """

    name = "medium-packages"

    def wanted(self, ctx: BuildContext) -> bool:
        return ctx.make_iso

    def run(self, ctx: BuildContext) -> None:
        config = ctx.config
        ctx.work.logs.mkdir(parents=True, exist_ok=True)
        # apt downloads into the build's archives: the image tree stays as it is
        chroot = Chroot(ctx.tree, ctx.runner, apt_log=ctx.work.logs / "apt.log",
                        archives=ctx.archives)
        download_boot_packages(ctx, chroot)
        if config.installer is not None:
            images = installer.obtain(config, chroot, ctx.log, ctx.work.installer)
            ctx.installer_images = images
            ctx.facts.installer_origin = images.origin
            if images.origin.startswith("package "):
                ctx.facts.installer_package = images.origin.removeprefix("package ")
