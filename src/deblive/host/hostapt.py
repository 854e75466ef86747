"""What the host says about itself: its Debian mirror, release and architecture.

The default build mirror is the one the host already uses. It is read at run
time from /etc/apt/sources.list.d/*.sources (deb822) or the one-line
sources.list format, with python-debian doing the parsing, so that no mirror
host name is ever written into a config, test or example. host_defaults()
gathers everything a config's defaults come from, once, for the CLI to pass
into the (pure) config model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from debian import deb822

from deblive.host import distroinfo
from deblive.model.arch import Arch
from deblive.model.config import HostDefaults

APT_ETC = Path(os.environ.get("DEBLIVE_APT_ETC", "/etc/apt"))


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def _deb822_sources(path: Path) -> list[AptSource]:
    out: list[AptSource] = []
    with path.open(encoding="utf-8") as f:
        for para in deb822.Deb822.iter_paragraphs(f):
            types = para.get("Types", "").split()
            if "deb" not in types or para.get("Enabled", "yes").lower() == "no":
                continue
            for uri in para.get("URIs", "").split():
                out.append(
                    AptSource(
                        uri.rstrip("/"),
                        tuple(para.get("Suites", "").split()),
                        tuple(para.get("Components", "").split()),
                    )
                )
    return out


def _one_line_sources(path: Path) -> list[AptSource]:
    out: list[AptSource] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()[1:]
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2:
            out.append(AptSource(words[0].rstrip("/"), (words[1],), tuple(words[2:])))
    return out


def host_sources(apt_etc: Path | None = None) -> list[AptSource]:
    """All 'deb' sources of the host, deb822 files first."""
    etc = apt_etc or APT_ETC
    sources: list[AptSource] = []
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        sources.extend(_deb822_sources(path))
    for path in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            sources.extend(_one_line_sources(path))
    return sources


def host_mirror(apt_etc: Path | None = None) -> str | None:
    """The host's Debian mirror: the first source that is not a security archive."""
    for source in host_sources(apt_etc):
        if any(s.endswith("-security") for s in source.suites):
            continue
        if source.uri.startswith(("http://", "https://", "file:/")):
            return source.uri
    return None


def host_security_mirror(apt_etc: Path | None = None) -> str | None:
    """The host's security mirror, if its sources have one."""
    for source in host_sources(apt_etc):
        if any(s.endswith("-security") for s in source.suites):
            return source.uri
    return None


def host_codename() -> str | None:
    """The host's release codename from /etc/os-release."""
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"') or None
    return None


def host_architecture(machine: str | None = None) -> Arch:
    """The host's Debian architecture, from the kernel's machine name (uname -m).

    The one place deblive asks which architecture it runs on: the default
    image's, the builder VM's and the one that decides whether a guest is
    foreign (qemu-user, TCG) or native (KVM).
    """
    name = machine or os.uname().machine
    arch = Arch.from_machine(name)
    if arch is None:
        raise ValueError(f"unknown host architecture {name!r}")
    return arch


def host_defaults() -> HostDefaults:
    """Everything a config's defaults come from, read from the host once."""
    return HostDefaults(
        mirror=host_mirror(),
        security_mirror=host_security_mirror(),
        codename=host_codename(),
        architecture=host_architecture(),
        releases=distroinfo.load(),
    )
