"""Step 6b: the initramfs, made once for each kernel after the hook.

Until here update-initramfs was a no-op (build.chroot.InitramfsDeferral), so
the kernel's and live-boot's triggers did not make it two or three times;
now it is made from the finished tree, the hook's /etc/initramfs-tools
changes included. A layered build keeps it beside its cached root base and
takes it from there while nothing it is made from changed in the layers over
that base (cached package layers and this build's own; build.initramfsreuse).
"""

from __future__ import annotations

import contextlib
import os

from deblive.build import initramfsreuse
from deblive.build.context import BuildContext
from deblive.build.stage import Stage
from deblive.host.imagetree import ImageTree

# cryptsetup-initramfs copies cryptsetup into the initramfs only for the devices in
# crypttab, unless told to: live-boot opens the persistence volume from there.
CRYPTSETUP_CONF_HOOK = "/etc/cryptsetup-initramfs/conf-hook"


def force_cryptsetup(tree: ImageTree) -> None:
    """CRYPTSETUP=y for cryptsetup-initramfs (the image's own file, appended to)."""
    tree.append(CRYPTSETUP_CONF_HOOK, "\n# deblive: encrypted persistence is opened in the "
                "initramfs\nCRYPTSETUP=y\n")


class Initramfs(Stage):
    name = "initramfs"

    def run(self, ctx: BuildContext) -> None:
        deferral = ctx.initramfs
        assert deferral is not None
        if ctx.config.persistence is not None and ctx.config.persistence.encrypted:
            force_cryptsetup(ctx.tree)
        if not ctx.base_chain:
            versions = deferral.generate()
        else:
            deferral.restore()  # the no-op goes before the layers are read
            kernels = deferral.kernels()
            base = ctx.base_chain[0]  # the root base: its initramfs is kept beside it
            with contextlib.ExitStack() as stack:
                layers = [stack.enter_context(ImageTree(ctx.layer_mounts[e.key]))
                          for e in ctx.base_chain[1:]]
                layers.append(stack.enter_context(ImageTree(ctx.work.upper)))
                found = initramfsreuse.lookup(base, layers, kernels)
                if found is not None:
                    stored, digest = found
                    initramfsreuse.restore(stored, ctx.tree, kernels)
                    versions = kernels
                    ctx.log.info(f"initramfs from the cache: nothing it is made from changed "
                                 f"(inputs {digest[:12]})")
                else:
                    versions = deferral.generate()
                    listed = initramfsreuse.contents(ctx.tree, deferral.chroot, versions)
                    digest = initramfsreuse.store(base, layers, ctx.tree, versions, listed)
                    ctx.log.info(f"initramfs stored with the base: {len(listed)} files "
                                 f"(inputs {digest[:12]})")
        ctx.facts.initramfs = versions
        if deferral.compressors_unpinned:
            ctx.log.info(f"initramfs compressor on {len(os.sched_getaffinity(0))} CPUs: "
                         f"{deferral.compressors_unpinned} zstd given them back from the pin")
        ctx.log.info("initramfs made once for " + (", ".join(versions) or "no kernel"))
