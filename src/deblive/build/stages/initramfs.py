"""Step 6b: the initramfs, made once for each kernel after the hook.

Until here update-initramfs was a no-op (build.chroot.InitramfsDeferral), so
the kernel's and live-boot's triggers did not make it two or three times;
now it is made from the finished tree, the hook's /etc/initramfs-tools
changes included.
"""

from __future__ import annotations

from deblive.build.context import BuildContext
from deblive.build.stage import Stage


class Initramfs(Stage):
    name = "initramfs"

    def run(self, ctx: BuildContext) -> None:
        assert ctx.initramfs is not None
        versions = ctx.initramfs.generate()
        ctx.facts.initramfs = versions
        ctx.log.info("initramfs made once for " + (", ".join(versions) or "no kernel"))
