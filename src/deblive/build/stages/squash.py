"""Step 8: squash the root filesystem in its own step, and never trust the result.

mksquashfs can fail without saying so and leave a few KiB of junk (seed point
19). So the tree is squashed into a temporary file, then checked: exit status,
size against the tree's, `unsquashfs -s` readable, and the inode count equal
to the tree's. Only then does it get its real name. On failure the tree stays
for debugging and the broken file is kept under a name that is not a result,
except when the disk filled up: then the partial file is deleted (it holds
nothing worth reading and the space it takes is what the user needs back).
Free space is checked against an estimate before mksquashfs starts.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path

from deblive.build.context import BuildContext, SquashfsFacts, TreeStats
from deblive.build.stage import Stage
from deblive.core.errors import DebliveError
from deblive.core.runner import Runner
from deblive.host import diskspace
from deblive.host.imagetree import ImageTree
from deblive.model.config import ImageConfig

FLAT = "filesystem.squashfs"  # the whole tree, or a layered build's base (live-build's name)
LAYER = "layer.squashfs"  # a layered build's top layer: sorts after FLAT, as live-boot stacks
# The cached package layers between them ("-" sorts before "."): live-boot stacks
# them in this order even without the module file.
PACKAGE_LAYER = "layer-packages-{}.squashfs"
MODULE = "filesystem.module"  # live-boot's list of the images to stack, bottom first
MIN_SQUASHFS_BYTES = 1024 * 1024
# No compressor gets a Debian tree below this fraction of its size; smaller
# means mksquashfs stopped early (full disk, crash) without telling us.
MIN_RATIO = 0.08


class SquashfsError(DebliveError):
    """The squashfs is not a faithful copy of the tree."""


def tree_stats(root: Path) -> TreeStats:
    """Apparent size and distinct inodes of a tree (hard links counted once)."""
    seen: set[int] = set()
    total = 0
    root_st = os.lstat(root)
    seen.add(root_st.st_ino)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_dev != root_st.st_dev or st.st_ino in seen:
                continue
            seen.add(st.st_ino)
            total += st.st_size
    return TreeStats(total, len(seen))


def mksquashfs_argv(config: ImageConfig, rootfs: Path, output: Path) -> list[str]:
    squash = config.squashfs
    argv = [
        "mksquashfs", str(rootfs), str(output),
        "-noappend", "-no-progress",
        "-comp", squash.compression,
        "-b", squash.block_size,
        "-wildcards",
    ]
    level = applied_level(config)
    if level is not None:
        argv += ["-Xcompression-level", str(level)]
    # Last: mksquashfs takes every argument after -e as a path to exclude. The
    # chroot's mount points are empty at this point; keep them empty.
    return [*argv, "-e", "proc/*", "sys/*", "dev/*", "run/*"]


# mksquashfs's own level per compressor: a squashfs made with it records none.
DEFAULT_LEVELS = {"zstd": 15, "gzip": 9}


def applied_level(config: ImageConfig) -> int | None:
    """The compressor level mksquashfs is given (only zstd and gzip take one)."""
    squash = config.squashfs
    return squash.level if squash.compression in DEFAULT_LEVELS else None


def check_level(superblock: str, compression: str, level: int | None) -> None:
    """The squashfs was made at the configured level (its superblock records any
    level but the compressor's default)."""
    if level is None or level == DEFAULT_LEVELS.get(compression):
        return
    if not re.search(rf"(?m)^\s*compression-level {level}$", superblock):
        raise SquashfsError(f"the squashfs records no {compression} compression-level {level}, "
                            "the level the config asks for:\n" + superblock[-500:])


def parse_inode_count(superblock: str) -> int:
    match = re.search(r"Number of inodes (\d+)", superblock)
    if not match:
        raise SquashfsError("unsquashfs -s did not report an inode count:\n" + superblock[-500:])
    return int(match.group(1))


def excluded_inodes(rootfs: Path) -> int:
    """Inodes below the excluded mount points (normally none: they are unmounted)."""
    count = 0
    for rel in ("proc", "sys", "dev", "run"):
        path = rootfs / rel
        if path.is_dir() and not path.is_symlink():
            count += tree_stats(path).inodes - 1
    return count


def verify(runner: Runner, image: Path, stats: TreeStats, expected_inodes: int, *,
           plausible_size: bool = True, compression: tuple[str, int | None] = ("", None)
           ) -> int:
    size = image.stat().st_size
    if plausible_size and (size < MIN_SQUASHFS_BYTES or size < stats.bytes * MIN_RATIO):
        raise SquashfsError(
            f"squashfs {image} is {size} bytes for a tree of {stats.bytes} bytes: "
            "implausibly small, mksquashfs must have failed (full disk?)"
        )
    superblock = runner.output(["unsquashfs", "-s", str(image)], what="reading the squashfs")
    check_level(superblock, *compression)
    inodes = parse_inode_count(superblock)
    if inodes != expected_inodes:
        raise SquashfsError(
            f"squashfs {image} holds {inodes} inodes, the tree has {expected_inodes}"
        )
    return inodes


class _Progress:
    """Shows the growing output file while mksquashfs works (it has no quiet progress)."""

    def __init__(self, ctx: BuildContext, path: Path, tree_bytes: int) -> None:
        self.ctx, self.path, self.tree_bytes = ctx, path, tree_bytes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(5):
            try:
                size = self.path.stat().st_size
            except OSError:
                continue
            self.ctx.log.output(
                f"squashfs written so far: {size / 2**20:.0f} MiB "
                f"(tree {self.tree_bytes / 2**20:.0f} MiB)"
            )


def check_space(ctx: BuildContext, source: Path | None = None,
                out_dir: Path | None = None) -> TreeStats:
    """Measure the tree and refuse to start if its squashfs cannot fit (DiskSpaceError).

    The squash stage's check: it runs before the stage starts, so the stage
    itself only writes. source: the tree to squash (the image tree, or a
    layered build's upper layer); out_dir: where the squashfs goes.
    """
    stats = tree_stats(source or ctx.rootfs)
    needed = diskspace.estimate_squashfs(stats.bytes, ctx.config.squashfs.compression)
    out_dir = out_dir or ctx.work.output
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx.log.info(diskspace.require(out_dir, needed, "the squashfs", stage="squash"))
    return stats


def squash_tree(ctx: BuildContext, source: Path, final: Path, stats: TreeStats, *,
                layer: bool = False) -> SquashfsFacts:
    """mksquashfs source into final's partial file, verified, then renamed.

    layer: source is an overlay's upper directory (whiteouts, opaque
    directories): it may be tiny, so only its inode count is checked.
    """
    out_dir = final.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".partial")
    broken = final.with_name(final.name + ".broken")
    for stale in (final, partial, broken):
        stale.unlink(missing_ok=True)
    expected = stats.inodes - excluded_inodes(source)
    what = "the layer" if layer else "the tree"
    ctx.log.info(
        f"squashing {what}: {stats.bytes / 2**20:.0f} MiB in {stats.inodes} inodes with "
        f"{ctx.config.squashfs.compression}"
        + (f" level {level}" if (level := applied_level(ctx.config)) is not None else "")
    )
    env = {"SOURCE_DATE_EPOCH": str(ctx.source_date_epoch)}
    try:
        with _Progress(ctx, partial, stats.bytes):
            ctx.runner.run(
                mksquashfs_argv(ctx.config, source, partial), env=env, what="mksquashfs"
            )
        inodes = verify(ctx.runner, partial, stats, expected, plausible_size=not layer,
                        compression=(ctx.config.squashfs.compression, applied_level(ctx.config)))
    except BaseException as exc:
        if diskspace.is_disk_full(exc):
            partial.unlink(missing_ok=True)
            raise diskspace.DiskFullError(
                f"disk full: mksquashfs ran out of space writing {partial} "
                f"({diskspace.free_bytes(out_dir) / 2**20:.0f} MiB free now on "
                f"{diskspace.existing_ancestor(out_dir)}); the partial squashfs was removed; "
                f"the root filesystem is kept at {source}\n{diskspace.root_error(exc)}"
            ) from None
        if not isinstance(exc, DebliveError):
            # Interrupted or crashed: a partial squashfs is of no use to anyone.
            partial.unlink(missing_ok=True)
            raise
        if partial.exists():
            os.replace(partial, broken)
        raise SquashfsError(
            f"{exc}\nthe root filesystem is kept at {source}"
            + (f"; the broken squashfs at {broken}" if broken.exists() else "")
        ) from None
    os.replace(partial, final)
    size = final.stat().st_size
    ctx.log.info(
        f"squashfs {final.name} verified: {size / 2**20:.0f} MiB, {inodes} inodes, "
        f"ratio {size / max(stats.bytes, 1):.2f}"
    )
    return SquashfsFacts(size, stats.bytes, inodes, ctx.config.squashfs.compression)


def squash(ctx: BuildContext, stats: TreeStats) -> Path:
    """The flat image: the whole tree as output/filesystem.squashfs."""
    final = ctx.work.output / FLAT
    ctx.facts.squashfs = squash_tree(ctx, ctx.rootfs, final, stats)
    return final


OPAQUE = "trusted.overlay.opaque"


def strip_overlay_bookkeeping(layer: ImageTree) -> int:
    """Drop overlayfs's own records from an upper directory, all but opaque markers.

    Copy-up leaves trusted.overlay.origin (a file handle of the lower file,
    with the build host's file system id) and .impure on what it copied; they
    mean nothing over another lower layer at boot, and they differ from build
    to build, so the layer would never be reproducible. Whiteouts are device
    nodes and stay; an opaque directory keeps its marker.
    """
    keep = frozenset({OPAQUE})
    count = len(layer.remove_xattrs("/", "trusted.overlay.", keep))
    for path, _st in layer.walk():
        count += len(layer.remove_xattrs(path, "trusted.overlay.", keep))
    return count


def stack_names(count: int) -> list[str]:
    """The names in /live of a base chain of count images, the root base first."""
    return [FLAT, *(PACKAGE_LAYER.format(n) for n in range(1, count))]


def copy_base(ctx: BuildContext) -> list[str]:
    """The base's images (the root base and its package layers) into the outputs: copies,
    so a published file and the cache entry never share an inode one could change
    through the other. Returns their names, bottom first."""
    names = stack_names(len(ctx.base_squashfs))
    for source, name in zip(ctx.base_squashfs, names, strict=True):
        final = ctx.work.output / name
        if source != final:
            partial = final.with_name(name + ".partial")
            shutil.copyfile(source, partial)
            partial.replace(final)
    return names


class Squash(Stage):
    """The flat image, or a layered build's top layer beside its base."""

    name = "squash"

    def check(self, ctx: BuildContext) -> None:
        # refuses before mksquashfs writes a byte
        ctx.tree_stats = check_space(ctx, ctx.work.upper if ctx.layered else ctx.rootfs)

    def run(self, ctx: BuildContext) -> None:
        if ctx.tree_stats is None:
            # the pipeline runs check() before run(); measuring again here would hide a pipeline
            # that skipped the space check
            raise RuntimeError("the squash stage ran without its space check")
        if not ctx.layered:
            ctx.outputs.insert(0, squash(ctx, ctx.tree_stats))
            return
        names = copy_base(ctx)
        with ImageTree(ctx.work.upper) as upper:
            dropped = strip_overlay_bookkeeping(upper)
        ctx.log.info(f"overlay records dropped from the layer: {dropped}")
        layer = ctx.work.output / LAYER
        ctx.facts.layer = squash_tree(ctx, ctx.work.upper, layer, ctx.tree_stats, layer=True)
        ctx.squashfs_stack = [*names, LAYER]
        module = ctx.work.output / MODULE
        module.write_text("".join(f"{name}\n" for name in ctx.squashfs_stack), encoding="utf-8")
        ctx.outputs[:0] = [*(ctx.work.output / name for name in ctx.squashfs_stack), module]
