"""Steps 3 and 9: the image's apt sources, moved aside for the build and written last.

During the build apt uses the build mirror (seed point 12: cdbuilder for
bootstrap and install). After the hook, the build sources go, the image gets
deb822 sources for the apt mirror (with -updates and -security as configured),
and the build mirror's package lists are deleted so none ship.
"""

from __future__ import annotations

import stat

from deblive.apt.sources import build_sources, image_sources
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
