"""Step 5a (layered builds): the packages a cached base lacks, as a cached layer of their own.

choose_base may find no entry for the build's inputs but one that differs only
in having fewer packages (build.basecache.BaseCache.parent_for). This stage
stacks an overlay on that entry's tree, lets apt install the missing packages
(with Recommends) and the metapackage again, ends the chroot session and
cleans the tree as the base is cleaned, then squashes the overlay's upper
directory once into the cache: an entry keyed on this build's own inputs, with
the entry beneath as its parent. The base stage then stacks the whole chain.

So this build and every later one of the same config use the same images (the
base, this package layer, and the top layer): the next one hits the new entry
directly and runs no apt at all, and its ISO is this one's, byte for byte.
Whiteouts and opaque directories in the layer are overlayfs's own records,
honoured by live-boot's stack at boot as by the build's overlay.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from deblive.build import basecache
from deblive.build.chroot import Chroot
from deblive.build.context import BuildContext
from deblive.build.stage import Stage
from deblive.build.stages.base import (
    base_facts,
    end_and_clean,
    mount_chain,
    open_overlay_session,
    restore_facts,
)
from deblive.build.stages.packages import install_metapackage
from deblive.build.stages.squash import check_space, squash_tree, strip_overlay_bookkeeping
from deblive.host import deletion
from deblive.host.imagetree import ImageTree


class PackageLayer(Stage):
    name = "package-layer"

    def wanted(self, ctx: BuildContext) -> bool:
        return bool(ctx.extra_packages)

    def run(self, ctx: BuildContext) -> None:
        cache, inputs, below = ctx.base_cache, ctx.base_inputs, ctx.base_hit
        if cache is None or inputs is None or below is None:
            raise RuntimeError("a package layer needs the cached entry it goes over")
        restore_facts(ctx, below)
        upper = ctx.work.packages_upper
        deletion.remove_tree(upper)
        deletion.remove_tree(ctx.work.packages_work)
        with contextlib.ExitStack() as layer:
            open_overlay_session(ctx, mount_chain(ctx), upper, ctx.work.packages_work, layer)
            chroot = Chroot(ctx.tree, ctx.runner, apt_log=ctx.work.logs / "apt.log")
            ctx.log.info(f"installing on the cached base: {' '.join(ctx.extra_packages)}")
            chroot.apt_get("install", *ctx.extra_packages,
                           what="installing the packages the cached base lacks")
            if ctx.config.metapackage.install:
                install_metapackage(ctx, chroot, again=True)
            end_and_clean(ctx, "packages-")
        with ImageTree(upper) as tree:
            strip_overlay_bookkeeping(tree)
        staging = cache.root / f".{inputs.key}.{os.getpid()}.layer"
        try:
            stats = check_space(ctx, upper, cache.root)
            squash_tree(ctx, upper, staging, stats, layer=True)
            try:
                entry = cache.store(inputs, staging, ctx.config.name, base_facts(ctx),
                                    parent=below)
            except basecache.KeyTakenError as exc:
                entry = self._keep_own(ctx, staging, below, str(exc))
            else:
                ctx.stored_layer = entry  # held since choose_base: its key is inputs.key
                ctx.log.info(f"package layer stored in the cache: {entry.key} over "
                             f"{below.key} ({entry.squashfs.stat().st_size / 2**20:.1f} MiB)")
        finally:
            staging.unlink(missing_ok=True)
        deletion.remove_tree(upper)
        ctx.base_entry = entry
        ctx.base_chain = [*ctx.base_chain, entry]

    @staticmethod
    def _keep_own(ctx: BuildContext, layer: Path, below: basecache.Entry, why: str
                  ) -> basecache.Entry:
        """Meanwhile another build stored an entry of another kind under this build's key
        (a whole base, or a layer over another entry): this build stacks its own layer,
        kept in the work tree as an entry of its own that the cache never lists."""
        own = ctx.work.root / "pkglayer"
        deletion.remove_tree(own)
        own.mkdir(mode=0o700)
        shutil.move(layer, own / basecache.SQUASHFS)
        ctx.log.warn(f"package layer not stored: {why}; this build uses its own, "
                     f"over {below.key}")
        return basecache.Entry(own, {"parent": below.key, "facts": base_facts(ctx)})
