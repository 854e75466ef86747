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
        """name=version of each local package: that one, whatever the mirrors carry."""
        return [f"{p.name}={p.version}" for p in self.local_packages]


def gather(config: ImageConfig, runner: Runner, local_cache: Path, *,
           check_network: bool = True) -> Extras:
    """The repositories (signatures checked with the network) and the local archive
    (made under local_cache/local/<digest> once)."""
    pinned = [i for i, r in enumerate(config.repositories) if r.priority is not None]
    if pinned and not check_network:
        raise repositories.RepositoryError(
            f"{config.where}: repositories[{pinned[0]}].priority: the pin is made from "
            "the repository's Release, which a build without the network check never reads")
    archives = (repositories.check_repositories(config, runner) if check_network
                else repositories.extra_archives(config))
    if any(c.isspace() for c in str(local_cache.absolute())) and config.local_packages:
        raise localrepo.LocalPackageError(
            f"{local_cache}: the cache directory's path holds a space, which apt's sources "
            "cannot hold (local_packages are kept there): choose another --cache-dir")
    made = localrepo.archive(config, runner, local_cache)
    if made is None:
        return Extras(archives)
    return Extras(archives, made[0], made[1])
