"""A Debian archive seen from outside apt: is it there, does it carry the suite.

Before a build, the mirror's InRelease is fetched (bounded retries for
transient faults) so an unreachable mirror, a suite or architecture it does
not carry, or an unsigned archive ends the run with exit status 2 naming the
mirror and the URL, before anything is touched. apt checks the signature
itself when it reads the archive; an archive without any signature file is
refused here already.
"""

from __future__ import annotations

from pathlib import Path

from debian import deb822

from deblive.core import http
from deblive.core.errors import BadInputError
from deblive.model.config import ImageConfig


class ArchiveError(BadInputError):
    """The mirror is unreachable, unsigned or lacks what the config asks for."""


def fetch_release(mirror: str, codename: str, timeout: float = 20) -> deb822.Release:
    """The suite's Release fields from the mirror (signature checked later, by apt).

    A mirror without InRelease must at least have Release.gpg: an unsigned
    archive is refused here, never accepted by turning apt's checks off.
    """
    url = f"{mirror}/dists/{codename}/InRelease"
    try:
        try:
            data = http.get(url, timeout=timeout)
        except http.HttpStatusError as exc:
            if exc.code != 404:
                raise
            release_url = url.removesuffix("InRelease") + "Release"
            try:
                data = http.get(release_url, timeout=timeout)
            except http.HttpStatusError:
                raise exc from None
            try:
                http.get(release_url + ".gpg", timeout=timeout)
            except http.HttpStatusError as gpg_exc:
                raise ArchiveError(
                    f"mirror {mirror}: {release_url} is not signed: {url} and "
                    f"{release_url}.gpg answered HTTP {exc.code} and {gpg_exc.code}; "
                    "deblive never builds from an unsigned archive"
                ) from None
    except http.HttpStatusError as exc:
        raise ArchiveError(
            f"mirror {mirror}: {url} answered HTTP {exc.code}: the mirror does not carry "
            f"{codename}"
        ) from None
    except http.UnreachableError as exc:
        raise ArchiveError(
            f"mirror {mirror} is unreachable: {url}: {exc.reason} (tried {exc.attempts} times)"
        ) from None
    return deb822.Release(data.decode("utf-8", errors="replace"))


def check_mirror(config: ImageConfig) -> None:
    """The build mirror carries the suite, the architecture and the components."""
    assert config.mirror is not None
    if config.mirror.startswith("file:"):
        path = Path(config.mirror.removeprefix("file://")) / "dists" / config.codename
        if not path.is_dir():
            raise ArchiveError(f"mirror {config.mirror}: no {path}")
        return
    release = fetch_release(config.mirror, config.codename)
    check_release_carries(release, config, f"{config.where}: mirror {config.mirror}",
                          config.components)


def check_release_carries(release: deb822.Release, config: ImageConfig, where: str,
                          components: tuple[str, ...], *, flat_ok: bool = False) -> None:
    """The Release lists the image's architecture and these components (where it lists
    any: a flat archive's Release may name none). flat_ok: an archive of only
    Architecture: all packages will do (an extra repository's, never Debian's)."""
    arches = release.get("Architectures", "").split()
    also = ("all",) if flat_ok else ()
    if arches and not {str(config.architecture), *also} & set(arches):
        raise ArchiveError(
            f"{where}: architecture {config.architecture} is not in {config.codename} "
            f"(it has: {' '.join(arches)})"
        )
    listed = release.get("Components", "").split()
    for component in components:
        if listed and component not in listed:
            raise ArchiveError(
                f"{where}: component {component} is not in the suite "
                f"(it has: {' '.join(listed)})"
            )
