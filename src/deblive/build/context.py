"""What every stage of a build sees: the config, the runner, the work tree, the image
tree, and the typed facts stages learn for the report."""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.host.imagetree import ImageTree
from deblive.model.config import ImageConfig

if TYPE_CHECKING:
    from deblive.apt.localrepo import LocalPackage
    from deblive.apt.plan import Plan
    from deblive.apt.prefetch import Prefetch
    from deblive.apt.repositories import ExtraArchive
    from deblive.build.basecache import BaseCache, BaseInputs, Entry
    from deblive.build.bootfiles import BootFiles
    from deblive.build.chroot import InitramfsDeferral
    from deblive.build.installer import InstallerImages
    from deblive.host.treeram import RamTreeState, TreeChoice


@dataclass(frozen=True)
class WorkTree:
    """Paths of one build's work directory (private to root, 0700).

    rootfs/      the image's root filesystem (kept on failure, for debugging)
    archives/    this build's package cache (hard links into the shared one)
    prefetch/    packages downloaded beside the bootstrap, until the packages stage
    medium/      the ISO's file tree
    bootdebs/    boot loader packages of the target release, downloaded, not installed
    bootfiles/   those packages unpacked
    installer/   debian-installer images on their way to the medium
    output/      results being written (moved to the output directory when complete)
    lower/N/     a layered build's cached base squashfs and package layers, mounted
                 (read-only; 0 the root base)
    upper/       a layered build's upper layer: what the stages after the base change
    ovlwork/     overlayfs's own work directory for upper/
    pkgupper/    a new package layer over a cached base, until it is stored
    pkgwork/     overlayfs's own work directory for pkgupper/
    pkglayer/    the package layer, when the cache took another kind of entry under its key
    """

    root: Path

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def archives(self) -> Path:
        return self.root / "archives"

    @property
    def prefetch(self) -> Path:
        return self.root / "prefetch"

    @property
    def medium(self) -> Path:
        return self.root / "medium"

    @property
    def bootdebs(self) -> Path:
        return self.root / "bootdebs"

    @property
    def bootfiles(self) -> Path:
        return self.root / "bootfiles"

    @property
    def installer(self) -> Path:
        return self.root / "installer"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def lower(self) -> Path:
        return self.root / "lower"

    @property
    def upper(self) -> Path:
        return self.root / "upper"

    @property
    def overlay_work(self) -> Path:
        return self.root / "ovlwork"

    @property
    def packages_upper(self) -> Path:
        return self.root / "pkgupper"

    @property
    def packages_work(self) -> Path:
        return self.root / "pkgwork"

    @property
    def logs(self) -> Path:
        return self.output / "logs"

    @property
    def log(self) -> Path:
        return self.root / "build.log"


@dataclass
class SquashfsFacts:
    bytes: int
    tree_bytes: int
    inodes: int
    compression: str


@dataclass(frozen=True)
class TreeStats:
    """The image tree's apparent size and distinct inodes, as the squash stage measures it."""

    bytes: int
    inodes: int


@dataclass
class BuildFacts:
    """What the stages learned, for the log and report.json."""

    downloaded_bytes: int | None = None
    prefetched: dict[str, object] | None = None  # packages fetched beside the bootstrap
    boot_packages: list[str] = field(default_factory=list)
    kernels: list[str] = field(default_factory=list)  # versions, oldest first
    kernel: str | None = None  # the one the menus boot
    initramfs: list[str] = field(default_factory=list)  # kernels whose initramfs was made
    package_count: int | None = None
    password_hash: str | None = None  # the live user's hash scheme (yescrypt...)
    squashfs: SquashfsFacts | None = None  # the flat image, or a layered build's base
    layer: SquashfsFacts | None = None  # a layered build's top layer
    efi_image_bytes: int | None = None
    iso_bytes: int | None = None
    disk_bytes: int | None = None
    netboot_bytes: int | None = None
    installer_origin: str | None = None
    installer_package: str | None = None
    installer_files: list[str] = field(default_factory=list)
    metapackage: str | None = None
    language_locales: list[str] = field(default_factory=list)
    image_tree: dict[str, object] | None = None  # where it was built: RAM or disk, and why


@dataclass
class BuildContext:
    config: ImageConfig
    log: BuildLog
    runner: Runner
    work: WorkTree
    outdir: Path
    cache: Path
    make_iso: bool = True
    build_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    source_date_epoch: int = field(default_factory=lambda: int(time.time()))
    # Where it came from: environment, release (the Release files' Date), clock.
    source_date_epoch_from: str = "clock"
    facts: BuildFacts = field(default_factory=BuildFacts)
    # Files to publish, in the order stages made them.
    outputs: list[Path] = field(default_factory=list)
    # Undone when the build ends, however it ends, last registered first.
    teardown: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    # The chroot session's temporary changes (mounts, service block...): undone
    # by the chroot-teardown stage, or by the teardown on a failure before it.
    session: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    # The apt archives directory bound into the chroot (see apt.pkgcache).
    archives: Path | None = None
    prefetch: Prefetch | None = None  # downloading while the bootstrap runs
    initramfs: InitramfsDeferral | None = None  # set while the chroot session lasts
    installer_images: InstallerImages | None = None  # from the packages stage, for the medium
    boot_files: BootFiles | None = None  # from the bootloaders stage, for the ISO
    tree_stats: TreeStats | None = None  # from the squash stage's check, for the stage
    # A layered build: the base (everything before the hook) is one squashfs,
    # the rest an overlay's upper layer squashed on top (build.stages.base).
    layered: bool = False
    base_cache: BaseCache | None = None  # None: the base is not cached (--no-cache)
    base_inputs: BaseInputs | None = None  # the base's key, from the plan
    plan: Plan | None = None  # what the base's key was resolved from, with its lists
    base_hit: Entry | None = None  # the entry this build starts from
    base_entry: Entry | None = None  # the entry this build uses: its hit, or the one it stored
    extra_packages: list[str] = field(default_factory=list)  # installed on a base with fewer
    base_miss: str = ""  # why the cache was not used, in words, for the log and report
    base_chain: list[Entry] = field(default_factory=list)  # base_entry's tree, its root first
    # The base's squashfs images, the root first: one, or a cached base and package layers
    base_squashfs: list[Path] = field(default_factory=list)
    squashfs_stack: list[str] = field(default_factory=list)  # the images for /live, bottom first
    layer_mounts: dict[str, Path] = field(default_factory=dict)  # entry key -> its mount
    stored_layer: Entry | None = None  # the package layer this build stored
    base_stats: TreeStats | None = None  # the base tree, measured by the base stage's check
    cached_stages: list[str] = field(default_factory=list)  # skipped: their tree came cached
    installed: list[tuple[str, str, str]] | None = None  # dpkg's view, from the clean stage
    # The config's repositories (keys read, Release signatures checked) and the
    # local packages' archive, for the build's sources (build.stages.sources).
    extras: list[ExtraArchive] = field(default_factory=list)
    local_archive: ExtraArchive | None = None
    local_packages: list[LocalPackage] = field(default_factory=list)
    # purl namespace by package name: the extra archives' and the local packages'.
    package_origins: dict[str, str] = field(default_factory=dict)
    # Where the bootstrap builds the tree (host.treeram), and what its teardown found;
    # whether the tree is kept on disk after a success (--keep-workdir) or a failure.
    tree_choice: TreeChoice | None = None
    tree_ram: RamTreeState | None = None
    keep_tree: bool = False
    keep_failed_tree: bool = True
    _tree: ImageTree | None = None

    @property
    def rootfs(self) -> Path:
        return self.work.rootfs

    @property
    def tree(self) -> ImageTree:
        """The image tree, the way into rootfs (open from the bootstrap on)."""
        if self._tree is None:
            raise RuntimeError("the image tree is not open yet (before the bootstrap)")
        return self._tree

    def open_tree(self, stack: contextlib.ExitStack | None = None) -> ImageTree:
        """Open rootfs as the image tree, closed with the build's teardown (or with
        stack: a mount on rootfs that ends before the build does)."""
        self._tree = (stack or self.teardown).enter_context(ImageTree(self.rootfs))
        return self._tree

    @property
    def image_basename(self) -> str:
        return self.config.image_basename
