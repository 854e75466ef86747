"""Steps 3 and 9: the image's apt sources, moved aside for the build and written last.

During the build apt uses the build mirror (seed point 12: cdbuilder for
bootstrap and install). After the hook, the build sources go, the image gets
deb822 sources for the apt mirror (with -updates and -security as configured),
and the build mirror's package lists are deleted so none ship.
"""

from __future__ import annotations

from pathlib import Path

from debian.deb822 import Deb822

from deblive.build.context import BuildContext
from deblive.model import suites
from deblive.model.config import ImageConfig

BUILD_SOURCES = "etc/apt/sources.list.d/deblive-build.sources"
IMAGE_SOURCES = "etc/apt/sources.list.d/debian.sources"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def _paragraph(uri: str, suite_names: list[str], components: list[str]) -> Deb822:
    para = Deb822()
    para["Types"] = "deb"
    para["URIs"] = uri
    para["Suites"] = " ".join(suite_names)
    para["Components"] = " ".join(components)
    para["Signed-By"] = KEYRING
    return para


def render_sources(config: ImageConfig, mirror: str, security_mirror: str) -> str:
    """deb822 sources for a mirror: the suite, -updates and -security as configured."""
    codename = config.codename
    components: list[str] = list(config.components)
    main = [codename]
    if config.updates and suites.has_security_suite(codename):
        main.append(f"{codename}-updates")
    paragraphs = [_paragraph(mirror, main, components)]
    if config.security and suites.has_security_suite(codename):
        paragraphs.append(
            _paragraph(security_mirror, [suites.security_suite(codename)], components)
        )
    return "\n".join(str(p) for p in paragraphs)


def build_security_mirror(config: ImageConfig, host_security: str | None) -> str:
    """The security archive to build from: the host's, if we build from the host's mirror."""
    from deblive.host import hostapt
    from deblive.model.config import default_security_mirror

    assert config.mirror is not None
    if host_security and config.mirror == hostapt.host_mirror():
        return host_security
    return default_security_mirror(config.mirror)


def _clear_lists(rootfs: Path) -> None:
    lists = rootfs / "var/lib/apt/lists"
    if not lists.is_dir():
        return
    for entry in lists.iterdir():
        if entry.is_file() and entry.name != "lock":
            entry.unlink()
    partial = lists / "partial"
    if partial.is_dir():
        for entry in partial.iterdir():
            entry.unlink()


def use_build_mirror(ctx: BuildContext) -> None:
    """Replace whatever the bootstrap wrote with the build mirror's sources."""
    from deblive.host import hostapt

    config = ctx.config
    assert config.mirror is not None
    rootfs = ctx.rootfs
    for old in [rootfs / "etc/apt/sources.list", *(rootfs / "etc/apt/sources.list.d").glob("*")]:
        if old.is_file():
            old.unlink()
    security = build_security_mirror(config, hostapt.host_security_mirror())
    (rootfs / BUILD_SOURCES).parent.mkdir(parents=True, exist_ok=True)
    (rootfs / BUILD_SOURCES).write_text(render_sources(config, config.mirror, security))
    ctx.log.debug(f"build sources:\n{(rootfs / BUILD_SOURCES).read_text()}")


def use_image_sources(ctx: BuildContext) -> None:
    """Write the image's own sources for the apt mirror and drop the build's lists."""
    config = ctx.config
    assert config.apt_mirror is not None and config.security_mirror is not None
    rootfs = ctx.rootfs
    (rootfs / BUILD_SOURCES).unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    (rootfs / IMAGE_SOURCES).write_text(
        render_sources(config, config.apt_mirror, config.security_mirror)
    )
    _clear_lists(rootfs)
