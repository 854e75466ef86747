"""Steps 3 and 9: the image's apt sources, moved aside for the build and written last.

During the build apt uses the build mirror (seed point 12: cdbuilder for
bootstrap and install). After the hook, the build sources go, the image gets
deb822 sources for the apt mirror (with -updates and -security as configured),
and the build mirror's package lists are deleted so none ship.
"""

from __future__ import annotations

import contextlib
import stat

from deblive.apt import indexes
from deblive.apt.sources import build_sources, image_sources
from deblive.build.chroot import Chroot
from deblive.build.context import BuildContext
from deblive.build.stage import Stage
from deblive.host.imagetree import ImageTree

BUILD_SOURCES = "/etc/apt/sources.list.d/deblive-build.sources"
IMAGE_SOURCES = "/etc/apt/sources.list.d/debian.sources"
LISTS = "/var/lib/apt/lists"


def _remove_files(tree: ImageTree, directory: str, keep: tuple[str, ...] = ()) -> None:
    """Remove what is not a directory (files, symlinks) directly in directory."""
    for path in tree.glob(directory, "*"):
        st = tree.lstat(path)
        if st is not None and not stat.S_ISDIR(st.st_mode) and path.rsplit("/", 1)[1] not in keep:
            tree.unlink(path)


def clear_lists(tree: ImageTree) -> None:
    _remove_files(tree, LISTS, keep=("lock",))
    tree.empty_dir(f"{LISTS}/partial")


def use_build_mirror(ctx: BuildContext) -> None:
    """Replace whatever the bootstrap wrote with the build mirror's sources."""
    tree = ctx.tree
    tree.unlink("/etc/apt/sources.list")
    _remove_files(tree, "/etc/apt/sources.list.d")
    tree.mkdir("/etc/apt/sources.list.d")
    text = build_sources(ctx.config)
    tree.write(BUILD_SOURCES, text)
    ctx.log.debug(f"build sources:\n{text}")


class ImageSources(Stage):
    """Write the image's own sources for the apt mirror and drop the build's lists."""

    name = "sources"

    def run(self, ctx: BuildContext) -> None:
        tree = ctx.tree
        tree.unlink(BUILD_SOURCES)
        tree.unlink("/etc/apt/sources.list")
        tree.write(IMAGE_SOURCES, image_sources(ctx.config))
        clear_lists(tree)


def package_lists(ctx: BuildContext) -> None:
    """Give the chroot the build mirror's package lists for the packages stage (or a
    layered build's overlay, whose base holds none, for the hook and the packages
    on top).

    They are the lists the plan resolved from, already verified by apt against
    the archive keys: copied in, so what is installed comes from the indexes
    the plan (and a layered build's key) names, and a build does not fetch
    them twice. Lists another plan replaced meanwhile, or a build without a
    plan, are fetched anew.
    """
    resolved = ctx.plan
    held = (indexes.held(resolved.lists, resolved.architecture, resolved.indexes)
            if resolved is not None else contextlib.nullcontext(None))
    with held as lists:
        if lists is not None:
            names = [p.name for p in sorted(lists.iterdir())
                     if p.is_file() and not p.is_symlink() and p.name != "lock"]
            for name in names:
                ctx.tree.copy_in(lists / name, f"{LISTS}/{name}", 0o644)
            ctx.log.info(f"package lists: {len(names)} files from the plan's verified lists")
            return
    Chroot(ctx.tree, ctx.runner, apt_log=ctx.work.logs / "apt.log").apt_get(
        "update", what="apt-get update from the build mirror")
