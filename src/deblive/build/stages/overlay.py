"""Step 5: the config's overlay directory, copied onto the image root before the hook.

What live-build keeps in config/includes.chroot/ and mkosi in ExtraTrees=:
configuration files and small programs of the image maker's own, without
writing root shell code for them. The copy goes through the image tree
(host.imagetree): files and directories become root's with the overlay's
modes (directories the image already has keep theirs), symlinks are copied as
symlinks and never followed, on either side; anything else was refused before
the build started (host.preflight). It runs after the base, so a layered
build keeps its cached base when only the overlay changed.
"""

from __future__ import annotations

from deblive.build.context import BuildContext
from deblive.build.stage import Stage


class Overlay(Stage):
    name = "overlay"

    def wanted(self, ctx: BuildContext) -> bool:
        return ctx.config.overlay is not None

    def run(self, ctx: BuildContext) -> None:
        source = ctx.config.overlay_path
        assert source is not None
        count = ctx.tree.copy_tree_in(source, "/")
        ctx.log.info(f"overlay: {count} files from {source}")
