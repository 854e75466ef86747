"""Step 1: the base system, bootstrapped from the build sources.

mmdebstrap by default (about 1.7x faster than debootstrap here, and it handles
foreign architectures through qemu-user binfmt itself); debootstrap as the
classic backend. Signatures are always checked against the Debian archive
keyring. The shared package cache is linked into this build's own archives
directory (apt.pkgcache), which the sandbox binds into the new tree before
mmdebstrap starts (so the bootstrap downloads nothing it has, and no mount is
left to a shell hook), and takes away again when it ends.

mmdebstrap reads the build sources (the release, -updates, -security) on its
standard input, so the base has their fixes as the packages stage would, and
starts from the plan's verified lists instead of its own apt-get update. While
it unpacks and configures with the CPU, the packages stage's downloads run
beside it (apt.prefetch). The base's own packages are mostly in the cache by
then: the plan fetched them while it resolved the rest (apt.basefetch).
"""

from __future__ import annotations

import os
from pathlib import Path

from deblive.apt import prefetch
from deblive.apt.keyring import DEBIAN_ARCHIVE_KEYRING
from deblive.apt.pkgcache import PackageCache
from deblive.apt.sources import build_sources
from deblive.build.context import BuildContext
from deblive.build.stage import Stage
from deblive.build.stages import sources
from deblive.host import sandbox, treeram
from deblive.host.imagetree import ImageTree
from deblive.model.config import ImageConfig
from deblive.model.packages import PackageSelection

ARCHIVES = "var/cache/apt/archives"


def mmdebstrap_argv(config: ImageConfig, rootfs: Path, *, lists_in_tree: bool = False
                    ) -> list[str]:
    """mmdebstrap from the build sources (deb822 on its standard input: the release with
    -updates and -security, so the base has the fixes the packages stage would get).

    lists_in_tree: the plan's verified package lists are already in the tree, and
    mmdebstrap's own apt-get update is skipped.
    """
    assert config.mirror is not None
    selection = PackageSelection.from_config(config)
    argv = [
        "mmdebstrap",
        "--mode=root",
        f"--variant={config.bootstrap.variant}",
        f"--architectures={config.architecture}",
        f"--components={','.join(config.components)}",
        f"--keyring={DEBIAN_ARCHIVE_KEYRING}",
        "--aptopt=Acquire::Retries \"3\"",
        # The package cache is already bound onto the archive directory: keep
        # what is there, and let the target hold that one mount point.
        "--skip=download/empty",
        "--skip=check/empty",
        # mmdebstrap would delete the Essential packages it downloaded once they are
        # installed, and apt-get clean would empty the directory: the next build
        # would fetch the whole base again (about 40 MiB, 5-6 s here), and this
        # build's packages stage the packages linked in from the shared cache. The
        # clean stage takes apt's caches out of the image.
        "--skip=essential/unlink",
        "--skip=cleanup/apt/cache",
        # The tree is scratch until it is squashed: a crash means a new build,
        # so dpkg need not fsync each file it unpacks.
        "--dpkgopt=force-unsafe-io",
    ]
    if config.is_snapshot_uri(config.mirror):
        argv.append("--aptopt=Acquire::Check-Valid-Until \"false\"")
    if selection.bootstrap_extras:
        argv.append(f"--include={','.join(selection.bootstrap_extras)}")
    if lists_in_tree:
        argv.append("--skip=update")
    argv += [config.codename, str(rootfs), "-"]
    return argv


def debootstrap_argv(config: ImageConfig, rootfs: Path, cache: Path) -> list[str]:
    assert config.mirror is not None
    selection = PackageSelection.from_config(config)
    argv = [
        "debootstrap",
        f"--arch={config.architecture}",
        f"--components={','.join(config.components)}",
        f"--keyring={DEBIAN_ARCHIVE_KEYRING}",
        f"--cache-dir={cache}",
    ]
    if config.bootstrap.variant == "minbase":
        argv.append("--variant=minbase")
    if selection.bootstrap_extras:
        argv.append(f"--include={','.join(selection.bootstrap_extras)}")
    argv += [config.codename, str(rootfs), config.mirror]
    return argv


def drop_host_copies(tree: ImageTree) -> None:
    """mmdebstrap copies the host's resolv.conf and hostname in; the image must not ship them."""
    for rel in ("etc/resolv.conf", "etc/hostname"):
        host = Path("/") / rel
        try:
            same = (tree.is_file(rel) and not tree.is_symlink(rel)
                    and tree.read_bytes(rel) == host.read_bytes())
        except OSError:
            same = False
        if same:
            tree.unlink(rel)


class PackageCacheIn(Stage):
    """This build's archives directory, linked from the shared package cache."""

    name = "package-cache"

    def run(self, ctx: BuildContext) -> None:
        cache = PackageCache(ctx.cache / "archives", ctx.work.archives, ctx.log)
        cache.stage_in()
        # Even a failed build keeps what it downloaded for the next try.
        ctx.teardown.callback(self._stage_out, ctx, cache)
        ctx.archives = cache.archives

    @staticmethod
    def _stage_out(ctx: BuildContext, cache: PackageCache) -> None:
        # The base the plan fetched into the shared cache counts as this build's download.
        fetched = ctx.plan.base_fetch if ctx.plan is not None else None
        ctx.facts.downloaded_bytes = cache.stage_out() + (fetched.bytes if fetched else 0)


def start_prefetch(ctx: BuildContext) -> None:
    """The packages stage's downloads, started to run beside the bootstrap (apt.prefetch)."""
    plan = ctx.plan
    if plan is None or plan.lists is None:
        return
    assert ctx.archives is not None
    local = {p.name for p in ctx.local_packages}
    packages = prefetch.missing(plan, ctx.archives, skip=local)
    if not packages:
        return
    fetch = prefetch.Prefetch(plan, packages, ctx.work.prefetch, ctx.runner, ctx.log)
    fetch.start()
    ctx.teardown.callback(fetch.stop)  # a failed bootstrap ends it
    ctx.prefetch = fetch
    ctx.log.info(f"prefetch: downloading {len(packages)} packages beside the bootstrap")


def put_tree(ctx: BuildContext) -> None:
    """The tree in RAM if the build chose so (host.treeram): a tmpfs on the empty rootfs,
    before anything opens or mounts inside it, so it is unmounted after all of that."""
    choice = ctx.tree_choice
    if choice is None:
        return
    ctx.facts.image_tree = choice.report()
    if not choice.in_ram:
        ctx.log.info(f"image tree on disk: {choice.why}")
        return
    ctx.tree_ram = ctx.teardown.enter_context(treeram.tree_in_ram(
        ctx.rootfs, choice, ctx.runner, ctx.log,
        keep=lambda failed: ctx.keep_tree or (failed and ctx.keep_failed_tree)))


class Bootstrap(Stage):
    name = "bootstrap"
    in_base = True

    def run(self, ctx: BuildContext) -> None:
        config = ctx.config
        assert ctx.archives is not None
        os.mkdir(ctx.rootfs, 0o755)
        put_tree(ctx)
        what = f"bootstrapping {config.codename}/{config.architecture}"
        if config.bootstrap.backend == "debootstrap":
            start_prefetch(ctx)
            ctx.runner.run(debootstrap_argv(config, ctx.rootfs, ctx.archives), what=what)
            tree = ctx.open_tree()
        else:
            tree = ctx.open_tree()
            seeded = sources.copy_plan_lists(ctx)  # before the prefetch holds them
            start_prefetch(ctx)
            argv = mmdebstrap_argv(config, ctx.rootfs, lists_in_tree=seeded)
            try:
                with sandbox.bind_into(tree, ctx.archives, ARCHIVES):
                    ctx.runner.run(argv, input_data=build_sources(config), what=what)
            finally:
                # An interrupted or failed mmdebstrap can leave its own /proc
                # and /dev mounts behind: the stage undoes them itself.
                sandbox.unmount_below(ctx.rootfs)
        drop_host_copies(tree)
