"""The archives beside the mirror: the config's repositories and the local packages.

Gathered once before anything is touched, by the build, `deblive plan` and
`deblive validate --network` alike: each repository's key read and (with the
network) its Release signature checked, the local packages inspected and
made into their signed archive. Bad input ends the run with exit status 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deblive.apt import localrepo, repositories
from deblive.apt.localrepo import LocalPackage
from deblive.apt.repositories import ExtraArchive
from deblive.core.runner import Runner
from deblive.model.config import ImageConfig


@dataclass(frozen=True)
class Extras:
    archives: list[ExtraArchive] = field(default_factory=list)
    local: ExtraArchive | None = None
    local_packages: list[LocalPackage] = field(default_factory=list)

    @property
    def all(self) -> list[ExtraArchive]:
        """What apt reads beside the mirror (the plan's sources and the build's)."""
        return [*self.archives, *([self.local] if self.local else [])]

    @property
    def local_names(self) -> list[str]:
        return [p.name for p in self.local_packages]


def gather(config: ImageConfig, runner: Runner, local_cache: Path, *,
           check_network: bool = True) -> Extras:
    """The repositories (signatures checked with the network) and the local archive
    (made under local_cache/local/<digest> once)."""
    archives = (repositories.check_repositories(config, runner) if check_network
                else repositories.extra_archives(config))
    made = localrepo.archive(config, runner, local_cache)
    if made is None:
        return Extras(archives)
    return Extras(archives, made[0], made[1])
