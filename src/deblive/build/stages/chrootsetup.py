"""Step 2: the chroot session, and step 8 (chroot-teardown) that ends it.

Mounts (fresh proc, sysfs, dev, run), the package cache bound in, the
service block, the deferred initramfs, the host's resolv.conf and the build
mirror's sources: every one registered on ctx.session as it is made, so the
teardown stage (or a failure before it) undoes them deepest first.
"""

from __future__ import annotations

from deblive.build import chroot
from deblive.build.context import BuildContext
from deblive.build.stage import Stage
from deblive.build.stages import sources
from deblive.build.stages.bootstrap import ARCHIVES
from deblive.host import sandbox


class ChrootSetup(Stage):
    name = "chroot-setup"
    in_base = True

    def run(self, ctx: BuildContext) -> None:
        tree, session = ctx.tree, ctx.session
        ctx.teardown.enter_context(session)  # a failure before chroot-teardown ends it too
        session.enter_context(sandbox.chroot_mounts(tree))
        assert ctx.archives is not None
        session.enter_context(sandbox.bind_into(tree, ctx.archives, ARCHIVES))
        session.enter_context(chroot.service_block(tree, ctx.runner))
        ctx.initramfs = session.enter_context(chroot.initramfs_deferred(tree, ctx.runner))
        session.enter_context(chroot.host_resolv_conf(tree))
        sources.use_build_mirror(ctx)


class ChrootTeardown(Stage):
    name = "chroot-teardown"

    def run(self, ctx: BuildContext) -> None:
        ctx.session.close()
        ctx.initramfs = None
