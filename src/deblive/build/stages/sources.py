"""Steps 3 and 9: the image's apt sources, moved aside for the build and written last.

During the build apt uses the build mirror (seed point 12: cdbuilder for
bootstrap and install), the config's extra repositories (each with its key
under /etc/apt/keyrings and its pin) and the local packages' archive. After
the hook, the build sources go, the image gets deb822 sources for the apt
mirror (with -updates and -security as configured) and for the repositories
it ships; the local archive, the repositories it does not ship (sources,
key, pin) and every package list are deleted so none ship.
"""

from __future__ import annotations

import contextlib
import dataclasses
import stat
from pathlib import Path

from deblive.apt import indexes, localrepo
from deblive.apt.repositories import ExtraArchive
from deblive.apt.sources import build_sources, image_sources
from deblive.build import origins
from deblive.build.chroot import Chroot
from deblive.build.context import BuildContext
from deblive.build.stage import Stage
from deblive.host.imagetree import ImageTree

BUILD_SOURCES = "/etc/apt/sources.list.d/deblive-build.sources"
IMAGE_SOURCES = "/etc/apt/sources.list.d/debian.sources"
LISTS = "/var/lib/apt/lists"
KEYRINGS = "/etc/apt/keyrings"
PREFERENCES = "/etc/apt/preferences.d"


def _remove_files(tree: ImageTree, directory: str, keep: tuple[str, ...] = ()) -> None:
    """Remove what is not a directory (files, symlinks) directly in directory."""
    for path in tree.glob(directory, "*"):
        st = tree.lstat(path)
        if st is not None and not stat.S_ISDIR(st.st_mode) and path.rsplit("/", 1)[1] not in keep:
            tree.unlink(path)


def clear_lists(tree: ImageTree) -> None:
    _remove_files(tree, LISTS, keep=("lock",))
    tree.empty_dir(f"{LISTS}/partial")


def _sources_file(extra: ExtraArchive) -> str:
    return f"/etc/apt/sources.list.d/{extra.name}.sources"


def add_archive(tree: ImageTree, extra: ExtraArchive) -> None:
    """An extra archive's key, deb822 sources and pin in the image."""
    tree.mkdir(KEYRINGS)
    tree.write(f"{KEYRINGS}/{extra.name}.gpg", extra.keyring)
    tree.write(_sources_file(extra), str(extra.paragraph(KEYRINGS)))
    pin = extra.preferences()
    if pin is not None:
        tree.mkdir(PREFERENCES)
        tree.write(f"{PREFERENCES}/{extra.name}.pref", pin)


def remove_archive(tree: ImageTree, extra: ExtraArchive) -> None:
    for path in (f"{KEYRINGS}/{extra.name}.gpg", _sources_file(extra),
                 f"{PREFERENCES}/{extra.name}.pref"):
        tree.unlink(path)


def local_archive_in_image(ctx: BuildContext) -> ExtraArchive | None:
    """The local packages' archive copied into the image, as the image's apt sees it."""
    local = ctx.local_archive
    if local is None:
        return None
    source = Path(local.uri.removeprefix("file:"))
    ctx.tree.mkdir(localrepo.IMAGE_PATH)
    for item in sorted(source.iterdir()):
        if item.is_file() and not item.is_symlink():
            ctx.tree.copy_in(item, f"{localrepo.IMAGE_PATH}/{item.name}")
    return dataclasses.replace(local, uri=f"file:{localrepo.IMAGE_PATH}")


def use_build_mirror(ctx: BuildContext) -> None:
    """Replace whatever the bootstrap wrote with the build mirror's sources, and add
    the extra repositories and the local packages' archive."""
    tree = ctx.tree
    tree.unlink("/etc/apt/sources.list")
    _remove_files(tree, "/etc/apt/sources.list.d")
    tree.mkdir("/etc/apt/sources.list.d")
    text = build_sources(ctx.config)
    tree.write(BUILD_SOURCES, text)
    ctx.log.debug(f"build sources:\n{text}")
    local = local_archive_in_image(ctx)
    for extra in [*ctx.extras, *([local] if local else [])]:
        add_archive(tree, extra)
        ctx.log.info(f"apt source {extra.name}: {extra.uri} ({' '.join(extra.suites)})"
                     + ("" if extra.ship else ", for the build only"))


def remove_build_archives(ctx: BuildContext) -> None:
    """What only the build used: the local archive and the repositories not shipped."""
    tree = ctx.tree
    for extra in ctx.extras:
        if not extra.ship:
            remove_archive(tree, extra)
    if ctx.local_archive is not None:
        remove_archive(tree, ctx.local_archive)
        tree.rmtree(localrepo.IMAGE_PATH)
        if tree.is_dir("/var/lib/deblive") and not tree.listdir("/var/lib/deblive"):
            tree.rmtree("/var/lib/deblive")


class ImageSources(Stage):
    """Write the image's own sources for the apt mirror and drop the build's lists."""

    name = "sources"

    def run(self, ctx: BuildContext) -> None:
        tree = ctx.tree
        ctx.package_origins = origins.package_origins(ctx)
        tree.unlink(BUILD_SOURCES)
        tree.unlink("/etc/apt/sources.list")
        tree.write(IMAGE_SOURCES, image_sources(ctx.config))
        remove_build_archives(ctx)
        for extra in ctx.extras:
            if extra.ship:
                add_archive(tree, extra)
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
    chroot = Chroot(ctx.tree, ctx.runner, apt_log=ctx.work.logs / "apt.log")
    if copy_plan_lists(ctx):
        if ctx.local_archive is not None:
            # Its path in the image is not the plan's: apt reads it from there.
            chroot.apt_get(
                "update", "-o", f"Dir::Etc::SourceList={_sources_file(ctx.local_archive)}",
                "-o", "Dir::Etc::SourceParts=-", "-o", "APT::Get::List-Cleanup=0",
                what="apt-get update of the local packages' archive")
        return
    chroot.apt_get("update", what="apt-get update from the build mirror")


def copy_plan_lists(ctx: BuildContext) -> bool:
    """The plan's verified lists copied into the tree's apt lists (made if need be);
    False when there is no plan or another plan replaced its lists meanwhile."""
    resolved = ctx.plan
    held = (indexes.held(resolved.lists, resolved.architecture, resolved.indexes)
            if resolved is not None else contextlib.nullcontext(None))
    with held as lists:
        if lists is None:
            return False
        names = [p.name for p in sorted(lists.iterdir())
                 if p.is_file() and not p.is_symlink() and p.name != "lock"]
        ctx.tree.mkdir(LISTS)
        for name in names:
            ctx.tree.copy_in(lists / name, f"{LISTS}/{name}", 0o644)
        ctx.log.info(f"package lists: {len(names)} files from the plan's verified lists")
        return True
