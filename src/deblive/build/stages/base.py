"""Step 5b (layered builds): the base tree as one squashfs, and an overlay for the rest.

Everything before the hook (bootstrap, packages, users) is the base. On a
cache miss the stages before this one built it in rootfs/ and base-clean
ended the chroot session (so none of its temporary changes is in the base)
and cleaned the tree as an image is cleaned; it is squashed once into the
base cache (build.basecache) and rootfs/ becomes the lower layer of an
overlay mounted on itself. On a hit those stages were
skipped and the cached squashfs is mounted as the lower layer instead (with
the package layers it carries, if the entry is one: each its own lower
directory, the topmost first). Either
way the later stages (hook, initramfs, sources, clean) write only into the
overlay's upper directory, which the squash stage turns into the top layer,
and a new chroot session is opened on the overlay.

Deletions and replacements in the upper directory are overlayfs whiteouts and
opaque directories; live-boot stacks the layers with overlayfs at boot, which
honours them the same way, so the booted system is the tree the stages saw.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from deblive.build import basecache
from deblive.build.context import BuildContext, SquashfsFacts
from deblive.build.stage import Stage
from deblive.build.stages import sources
from deblive.build.stages.chrootsetup import ChrootSetup
from deblive.build.stages.clean import clean_tree, keep_build_logs
from deblive.build.stages.squash import FLAT, check_space, squash_tree
from deblive.host import sandbox


def base_facts(ctx: BuildContext) -> dict[str, object]:
    """What the base stages learned that a hit must still report."""
    facts = ctx.facts
    return {"password_hash": facts.password_hash, "metapackage": facts.metapackage,
            "source_date_epoch": ctx.source_date_epoch,
            "language_locales": facts.language_locales,
            "squashfs": None if facts.squashfs is None else vars(facts.squashfs)}


def restore_facts(ctx: BuildContext, entry: basecache.Entry) -> None:
    saved = entry.facts
    ctx.facts.password_hash = saved.get("password_hash")
    ctx.facts.metapackage = saved.get("metapackage")
    ctx.facts.language_locales = list(saved.get("language_locales") or [])
    squashfs = saved.get("squashfs")
    if isinstance(squashfs, dict):
        ctx.facts.squashfs = SquashfsFacts(**squashfs)


def mount_chain(ctx: BuildContext) -> list[Path]:
    """The base chain's squashfs images mounted (those not mounted yet) under lower/;
    returns their mounts the topmost first, as overlayfs takes its lower directories."""
    ctx.work.lower.mkdir(mode=0o700, exist_ok=True)
    for index, entry in enumerate(ctx.base_chain):
        if entry.key not in ctx.layer_mounts:
            target = ctx.work.lower / str(index)
            ctx.teardown.enter_context(sandbox.squashfs_image(entry.squashfs, target,
                                                              ctx.runner))
            ctx.layer_mounts[entry.key] = target
    return [ctx.layer_mounts[e.key] for e in reversed(ctx.base_chain)]


def open_overlay_session(ctx: BuildContext, lowers: list[Path], upper: Path, work: Path,
                         stack: contextlib.ExitStack) -> None:
    """An overlay of upper over lowers on rootfs, the image tree opened on it and a chroot
    session with the build mirror's lists: where the stages over a base work (the
    package layer's, then the build's own). All of it ends with stack, the session
    first, then the tree, then the overlay, whether the stages failed or not."""
    stack.enter_context(sandbox.overlay(lowers, upper, work, ctx.rootfs))
    ctx.open_tree(stack)
    ctx.session = stack.enter_context(contextlib.ExitStack())
    ChrootSetup().run(ctx)
    ctx.work.logs.mkdir(parents=True, exist_ok=True)
    sources.package_lists(ctx)


class BaseClean(Stage):
    """End the chroot session and clean the base as the clean stage cleans an image.

    The base squashfs ships on the medium under the layer: it must not carry
    what a flat image never does (the build mirror's sources and package
    lists, apt's caches, the build's logs, a machine id, ssh host keys). The
    logs are kept as logs/base-*.log first; the base stage fetches the lists again.
    """

    name = "base-clean"
    in_base = True

    def wanted(self, ctx: BuildContext) -> bool:
        return ctx.layered

    def run(self, ctx: BuildContext) -> None:
        end_and_clean(ctx, "base-")


def end_and_clean(ctx: BuildContext, logs_prefix: str) -> None:
    """End the chroot session and clean the tree for the cache (the base, or a
    package layer over it), its apt and dpkg logs kept as logs/<prefix>*.log."""
    ctx.session.close()
    ctx.initramfs = None
    tree = ctx.tree
    for path in keep_build_logs(tree, ctx.work.logs, prefix=logs_prefix):
        ctx.log.warn(f"{path} in the image is not a regular file: not kept in logs/")
    tree.unlink(sources.BUILD_SOURCES)
    sources.remove_build_archives(ctx)
    sources.clear_lists(tree)
    clean_tree(tree)


class Base(Stage):
    name = "base"

    def wanted(self, ctx: BuildContext) -> bool:
        return ctx.layered

    def check(self, ctx: BuildContext) -> None:
        if ctx.base_hit is None:
            out_dir = ctx.base_cache.root if ctx.base_cache else ctx.work.output
            ctx.base_stats = check_space(ctx, ctx.rootfs, out_dir)

    def run(self, ctx: BuildContext) -> None:
        if ctx.base_hit is None:
            self._squash_base(ctx)
            lowers = [ctx.rootfs]  # the tree just built, covered by the overlay in place
        else:
            # after a package layer (build.stages.packagelayer), the entry it stored
            entry = ctx.base_entry or ctx.base_hit
            ctx.base_entry = entry
            restore_facts(ctx, entry)
            ctx.base_squashfs = [e.squashfs for e in ctx.base_chain]
            ctx.log.info(f"base from the cache: {entry.key} ({entry.size / 2**20:.0f} MiB, "
                         f"made {entry.meta.get('created', '?')})"
                         + (f", a layer over {' '.join(e.key for e in ctx.base_chain[:-1])}"
                            if len(ctx.base_chain) > 1 else ""))
            lowers = mount_chain(ctx)
            ctx.rootfs.mkdir(mode=0o755, exist_ok=True)
        open_overlay_session(ctx, lowers, ctx.work.upper, ctx.work.overlay_work, ctx.teardown)

    @staticmethod
    def _squash_base(ctx: BuildContext) -> None:
        """Squash the cleaned tree once, and keep it in the cache."""
        assert ctx.base_stats is not None
        cache, inputs = ctx.base_cache, ctx.base_inputs
        if cache is None or inputs is None:
            ctx.facts.squashfs = squash_tree(ctx, ctx.rootfs, ctx.work.output / FLAT,
                                             ctx.base_stats)
            ctx.base_squashfs = [ctx.work.output / FLAT]
            return
        staging = cache.root / f".{inputs.key}.{os.getpid()}.squashfs"
        try:
            ctx.facts.squashfs = squash_tree(ctx, ctx.rootfs, staging, ctx.base_stats)
            try:
                entry = cache.store(inputs, staging, ctx.config.name, base_facts(ctx))
            except basecache.KeyTakenError as exc:  # meanwhile a package layer, by another build
                own = ctx.work.output / FLAT
                shutil.move(staging, own)
                ctx.base_squashfs = [own]
                ctx.log.warn(f"base not stored: {exc}; this build uses its own")
                return
        finally:
            staging.unlink(missing_ok=True)
        ctx.base_entry = entry  # held since choose_base: the key is inputs.key
        ctx.base_chain = [entry]
        ctx.base_squashfs = [entry.squashfs]
        ctx.log.info(f"base stored in the cache: {entry.key}")

