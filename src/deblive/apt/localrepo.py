"""Local .deb files as a small signed archive apt reads like any other.

The config's local_packages (files, or directories of them) become a flat
archive: Packages and Release made by apt-ftparchive, the Release signed
(InRelease) with a key made for this set of packages only, so apt checks it
like every other archive and no archive is ever marked trusted. The archive is
keyed on the packages' content and kept in the cache: the same files give
the same archive (and the plan's lists stay valid); other files another.
The packages' dependencies come from the mirrors, the build installs each
of them, and the archive, its sources and its key leave the image before it
is squashed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from deblive.apt.repositories import ExtraArchive, dearmour
from deblive.core.errors import BadInputError, DebliveError
from deblive.core.files import sha256_file
from deblive.core.runner import Runner
from deblive.model.config import ImageConfig
from deblive.model.text import PACKAGE_RE, VERSION_RE

NAME = "deblive-local"
# Where the archive is in the image while it is built (removed before the squash).
IMAGE_PATH = "/var/lib/deblive/local-packages"
FIXED_DATE = "Thu, 01 Jan 1970 00:00:00 UTC"


class LocalPackageError(BadInputError):
    """A local package is not a readable .deb with a valid name and version."""


@dataclass(frozen=True)
class LocalPackage:
    name: str
    version: str
    architecture: str
    path: Path
    sha256: str


def deb_files(config: ImageConfig) -> list[Path]:
    """The .deb files local_packages names: files as given, directories' *.deb (sorted)."""
    found: list[Path] = []
    for index, entry in enumerate(config.local_packages):
        path = config.base_dir / entry
        if path.is_dir():
            debs = sorted(p for p in path.glob("*.deb") if p.is_file())
            outside = [d for d in debs if config.confine_paths
                       and not d.resolve().is_relative_to(config.base_dir.resolve())]
            if outside:
                raise LocalPackageError(
                    f"{config.where}: local_packages[{index}]: {outside[0]} is a link out of "
                    "the config's directory (confine_paths is true)")
            if not debs:
                raise LocalPackageError(f"{config.where}: local_packages[{index}]: {path} "
                                        "holds no .deb file")
            found += debs
        elif path.is_file() and path.suffix == ".deb":
            found.append(path)
        else:
            raise LocalPackageError(f"{config.where}: local_packages[{index}]: {path} is "
                                    "not a .deb file or a directory of them")
    return found


def inspect(config: ImageConfig, runner: Runner) -> list[LocalPackage]:
    """Name, version and architecture of each local .deb (dpkg-deb reads the control)."""
    packages: dict[str, LocalPackage] = {}
    for deb in deb_files(config):
        result = runner.run(["dpkg-deb", "--show", "--showformat",
                             "${Package}\\t${Version}\\t${Architecture}\\n", str(deb)],
                            capture=True, quiet=True, check=False, stderr="capture",
                            what=f"reading {deb.name}")
        fields = result.output.strip().split("\t")
        if result.returncode != 0 or len(fields) != 3:
            raise LocalPackageError(f"{config.where}: local_packages: {deb} is not a Debian "
                                    f"package: {result.errors.strip()[-200:]}")
        name, version, arch = fields
        if not PACKAGE_RE.fullmatch(name) or not VERSION_RE.fullmatch(version.split(":")[-1]):
            raise LocalPackageError(f"{config.where}: local_packages: {deb}: odd name or "
                                    f"version {name!r} {version!r}")
        if arch not in ("all", str(config.architecture)):
            raise LocalPackageError(f"{config.where}: local_packages: {deb} is for {arch}, "
                                    f"the image for {config.architecture}")
        if name in packages:
            raise LocalPackageError(f"{config.where}: local_packages: {name} twice "
                                    f"({packages[name].path} and {deb})")
        packages[name] = LocalPackage(name, version, arch, deb, sha256_file(deb))
    return sorted(packages.values(), key=lambda p: p.name)


def digest(packages: Sequence[LocalPackage]) -> str:
    return hashlib.sha256("\n".join(f"{p.name} {p.sha256}" for p in packages).encode()
                          ).hexdigest()[:16]


@contextlib.contextmanager
def _gnupg_home(runner: Runner) -> Iterator[Path]:
    """A throwaway GnuPG home (short path: the agent's socket lives in it), agent ended."""
    home = Path(tempfile.mkdtemp(prefix="deblive-gpg-", dir="/tmp"))
    try:
        yield home
    finally:
        with contextlib.suppress(DebliveError):
            runner.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False,
                       quiet=True, what="ending the throwaway key's gpg daemons")
        shutil.rmtree(home, ignore_errors=True)


def _sign(runner: Runner, repo: Path) -> bytes:
    """Sign repo/Release into repo/InRelease with a new key; its public key, binary."""
    with _gnupg_home(runner) as home:
        gpg = ["gpg", "--batch", "--quiet", "--homedir", str(home), "--passphrase", ""]
        runner.run([*gpg, "--quick-gen-key", "deblive local packages", "ed25519", "sign",
                    "never"], quiet=True, what="making the local archive's signing key")
        runner.run([*gpg, "--clearsign", "--output", str(repo / "InRelease"),
                    str(repo / "Release")], quiet=True, what="signing the local archive")
        key = runner.run([*gpg, "--export", "--armor"], capture=True, quiet=True,
                         what="exporting the local archive's key").output
    return dearmour(key.encode())


def _make(runner: Runner, packages: Sequence[LocalPackage], dest: Path) -> None:
    """The flat archive in dest: the .debs, Packages, Release, InRelease, key.gpg."""
    dest.mkdir(parents=True)
    for package in packages:
        shutil.copyfile(package.path, dest / f"{package.name}_{package.sha256[:12]}.deb")
    listing = runner.run(["apt-ftparchive", "packages", "."], cwd=dest, capture=True,
                         quiet=True, what="indexing the local packages").output
    (dest / "Packages").write_text(listing)
    # A fixed Date: the archive must not date the build (the newest Release Date
    # does, without SOURCE_DATE_EPOCH) nor differ between two makings of it.
    release = runner.run(["apt-ftparchive", "-o", "APT::FTPArchive::Release::Origin=deblive-local",
                          "-o", f"APT::FTPArchive::Release::Date={FIXED_DATE}",
                          "release", "."], cwd=dest, capture=True, quiet=True,
                         what="writing the local archive's Release").output
    (dest / "Release").write_text(release)
    (dest / "key.gpg").write_bytes(_sign(runner, dest))


def archive(config: ImageConfig, runner: Runner, cache: Path
            ) -> tuple[ExtraArchive, list[LocalPackage]] | None:
    """The local packages' signed archive under cache/local/<digest> (made once), or None."""
    try:
        return _archive(config, runner, cache)
    except OSError as exc:
        raise LocalPackageError(f"{config.where}: local_packages: {exc}") from None


def _archive(config: ImageConfig, runner: Runner, cache: Path
             ) -> tuple[ExtraArchive, list[LocalPackage]] | None:
    packages = inspect(config, runner)
    if not packages:
        return None
    dest = cache.absolute() / "local" / digest(packages)
    if not (dest / "InRelease").is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".making-", dir=dest.parent))
        try:
            _make(runner, packages, staging / "repo")
            with contextlib.suppress(OSError):  # another build made it meanwhile: keep theirs
                os.rename(staging / "repo", dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    extra = ExtraArchive(NAME, f"file:{dest}", ("./",), (), (dest / "key.gpg").read_bytes(),
                         ship=False)
    return extra, packages
