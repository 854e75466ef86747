"""What every stage of a build sees: the config, the runner, and the work tree's paths."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.model.config import ImageConfig

if TYPE_CHECKING:
    from deblive.build.chroot import InitramfsDeferral


@dataclass
class WorkTree:
    """Paths of one build's work directory.

    rootfs/      the image's root filesystem (kept on failure, for debugging)
    medium/      the ISO's file tree
    bootdebs/    boot loader packages of the target release, downloaded, not installed
    bootfiles/   those packages unpacked
    output/      results being written (moved to the output directory when complete)
    """

    root: Path

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

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
    def output(self) -> Path:
        return self.root / "output"

    @property
    def log(self) -> Path:
        return self.root / "build.log"


@dataclass
class BuildContext:
    config: ImageConfig
    log: BuildLog
    runner: Runner
    work: WorkTree
    outdir: Path
    cache: Path
    # The apt archives directory bound into the chroot (see pkgcache).
    archives: Path | None = None
    initramfs: InitramfsDeferral | None = None  # set while the chroot session lasts
    build_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    source_date_epoch: int = field(default_factory=lambda: int(time.time()))
    # Facts stages learn and the report carries (kernel version, byte counts...).
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def rootfs(self) -> Path:
        return self.work.rootfs

    @property
    def apt_archives(self) -> Path:
        return self.archives if self.archives is not None else self.cache / "archives"

    @property
    def image_basename(self) -> str:
        cfg = self.config
        return f"{cfg.name}-{cfg.codename}-{cfg.architecture}"
