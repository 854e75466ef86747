"""What apt-get says of a resolution, read: the packages it would install (the
files apt-get --print-uris names), the names it does not know, and its
explanation of a set that does not resolve."""

from __future__ import annotations

import re
import urllib.parse
from typing import Final

from deblive.apt.packageset import Package

# 'URI' name_version_arch.deb size hash (apt quotes _ : % and controls in each part as %xx)
URI_RE: Final = re.compile(r"^'(?P<uri>[^']+)' (?P<file>[^\s_]+_[^\s_]+_[^\s_]+\.deb) \d+ \S*$")
UNKNOWN_RES: Final = (
    re.compile(r"^E: Unable to locate package (?P<name>\S+)$", re.MULTILINE),
    re.compile(r"^E: Package '(?P<name>[^']+)' has no installation candidate$", re.MULTILINE),
    re.compile(r"^E: Couldn't find any package by (?:glob|regex) '(?P<name>[^']+)'$", re.MULTILINE),
)


def tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def unknown_packages(apt_output: str) -> list[str]:
    """Names apt could not find (or that have no candidate), in the order apt named them."""
    found: dict[str, None] = {}
    hits: list[tuple[int, str]] = []
    for regex in UNKNOWN_RES:
        hits += [(m.start(), m.group("name")) for m in regex.finditer(apt_output)]
    for _pos, name in sorted(hits):
        found.setdefault(name, None)
    return list(found)


def apt_problems(apt_output: str) -> str:
    """apt's explanation of a failed resolution: the unmet dependencies and E: lines."""
    lines = apt_output.splitlines()
    keep: list[str] = []
    inside = False
    for line in lines:
        if line.startswith("The following packages have unmet dependencies"):
            inside = True
        if inside or line.startswith("E:"):
            keep.append(line)
    return "\n".join(keep) or tail(apt_output)


def parse_uri_lines(apt_output: str) -> list[Package]:
    """The packages of apt-get --print-uris install's lines, in apt's order."""
    out = []
    for line in apt_output.splitlines():
        match = URI_RE.match(line)
        if match:
            name, version, arch = (urllib.parse.unquote(part) for part in
                                   match["file"].removesuffix(".deb").split("_"))
            out.append(Package(name, version, arch))
    return out
