"""deb822 sources for the image's suite: what the build's apt and the image's apt read.

During the build apt uses the build mirror (the seed, point 12: cdbuilder
for bootstrap and install) and the build's security archive; the image ships
sources for the apt mirror. Both are written from the same function, so the
plan resolves against exactly what the chroot's apt sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from debian.deb822 import Deb822

from deblive.apt.keyring import DEBIAN_ARCHIVE_KEYRING
from deblive.apt.repositories import ExtraArchive
from deblive.model import suites
from deblive.model.config import ImageConfig


def _paragraph(uri: str, suite_names: list[str], components: list[str], keyring: Path,
               snapshot: bool = False) -> Deb822:
    para = Deb822()
    para["Types"] = "deb"
    para["URIs"] = uri
    para["Suites"] = " ".join(suite_names)
    para["Components"] = " ".join(components)
    para["Signed-By"] = str(keyring)
    if snapshot:
        # A snapshot's Release is as old as the snapshot: its Valid-Until has passed.
        para["Check-Valid-Until"] = "no"
    return para


def render_sources(config: ImageConfig, mirror: str, security_mirror: str,
                   keyring: Path = DEBIAN_ARCHIVE_KEYRING) -> str:
    """deb822 sources for a mirror: the suite, -updates and -security as configured."""
    codename = config.codename
    components: list[str] = list(config.components)
    main = [codename]
    if config.updates and suites.has_security_suite(codename):
        main.append(f"{codename}-updates")
    paragraphs = [_paragraph(mirror, main, components, keyring, config.is_snapshot_uri(mirror))]
    if config.security and suites.has_security_suite(codename):
        paragraphs.append(_paragraph(
            security_mirror, [suites.security_suite(codename)], components, keyring,
            config.is_snapshot_uri(security_mirror)))
    return "\n".join(str(p) for p in paragraphs)


def build_sources(config: ImageConfig, keyring: Path = DEBIAN_ARCHIVE_KEYRING) -> str:
    """What apt reads during the build (and the plan): the build mirrors."""
    assert config.mirror is not None
    return render_sources(config, config.mirror, config.build_security_mirror, keyring)


def extra_sources(extras: Sequence[ExtraArchive], keyring_dir: str) -> str:
    """deb822 paragraphs of extra archives, each Signed-By its key in keyring_dir."""
    return "\n".join(str(extra.paragraph(keyring_dir)) for extra in extras)


def image_sources(config: ImageConfig) -> str:
    """What the image's apt reads after it boots: the apt mirror."""
    assert config.apt_mirror is not None and config.security_mirror is not None
    return render_sources(config, config.apt_mirror, config.security_mirror)
