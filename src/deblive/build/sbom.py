"""sbom.spdx.json: an SPDX 2.3 bill of materials of every package installed in the image.

Scanners and auditors read SPDX, so the image says what it holds in their terms:
each installed package with its version, a purl to match advisories against,
its source package, its supplier and, where its copyright file is
machine-readable (DEP-5), the licences it declares (sbomlicences).

The image tree is untrusted (packages, maintainer scripts and the hook filled
it), so it is read only through ImageTree: dpkg's status and the copyright files
are the image's, never a host file a symlink names. Nothing here reads the clock
or draws a random number: one tree, name, seed and epoch give the same bytes, as
reproducible builds need.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from debian import deb822

from deblive import __version__
from deblive.build.sbomlicences import NOASSERTION, Licences, idstring
from deblive.core.files import write_atomic
from deblive.host.imagetree import ImageTree

STATUS = "/var/lib/dpkg/status"
IMAGE_ID = "SPDXRef-Image"
DEBIAN = "debian"

_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9.-]*\Z")
_SUPPLIER = re.compile(r"(?:Person|Organization): [^\n()]*[^\s()](?: \([^\n()]*\))?\Z")


@dataclass(frozen=True)
class Origin:
    """Where a package came from: its purl namespace and supplier.

    namespace: the purl namespace. "debian" claims Debian's archive, and
      scanners then match the package against Debian's security tracker, so an
      extra repository gets a namespace of its own (e.g. from its host name).
    supplier: an SPDX actor ("Organization: Example (ops@example.org)") that
      overrides the default (Debian's archive: "Organization: Debian"; anything
      else: the package's Maintainer).
    local: a .deb file of the configuration, from no repository at all; it may
      not claim "debian" (LOCAL uses the namespace "local") and has no distro=.
    """

    namespace: str = DEBIAN
    supplier: str | None = None
    local: bool = False

    def __post_init__(self) -> None:
        if not _NAMESPACE.match(self.namespace):
            raise ValueError(f"purl namespace {self.namespace!r}: lowercase letters, "
                             "digits, '.' and '-' only")
        if self.supplier is not None and not _SUPPLIER.match(self.supplier):
            raise ValueError(f"supplier {self.supplier!r}: not 'Person: NAME (EMAIL)' "
                             "or 'Organization: NAME (EMAIL)'")
        if self.local and self.namespace == DEBIAN:
            raise ValueError("a local .deb is not Debian's: give it another namespace")


DEBIAN_ARCHIVE = Origin()
LOCAL = Origin(namespace="local", local=True)


@dataclass(frozen=True)
class Installed:
    """One installed package as dpkg's status records it."""

    name: str
    version: str
    arch: str
    source: str
    source_version: str
    maintainer: str


def installed(tree: ImageTree) -> list[Installed]:
    """Every installed package, once per (name, architecture), sorted; from dpkg's status."""
    found: dict[tuple[str, str], Installed] = {}
    for para in deb822.Packages.iter_paragraphs(tree.read_text(STATUS), use_apt_pkg=False):
        name, version = para.get("Package", "").strip(), para.get("Version", "").strip()
        if para.get("Status", "").split()[-1:] != ["installed"] or not name or not version:
            continue
        # "Source: foo" or "Source: foo (1.2-3)" when the versions differ; absent: the same.
        source, _, rest = para.get("Source", "").strip().partition(" ")
        source_version = rest.strip().removeprefix("(").removesuffix(")").strip()
        arch = para.get("Architecture", "").strip()
        found.setdefault((name, arch), Installed(
            name, version, arch, source or name, source_version or version,
            " ".join(para.get("Maintainer", "").split())))
    return [found[key] for key in sorted(found)]


def purl(namespace: str, package: Installed, distro: str | None = None) -> str:
    """pkg:deb/NAMESPACE/NAME@VERSION?arch=..&distro=..&upstream=..: syft's convention
    (upstream= names the source package, @version if it differs), so scanners match it."""
    upstream = None
    if package.source_version != package.version:
        upstream = f"{package.source}@{package.source_version}"
    elif package.source != package.name:
        upstream = package.source
    qualifiers = {"arch": package.arch or None, "distro": distro, "upstream": upstream}
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in sorted(qualifiers.items()) if v)
    return (f"pkg:deb/{quote(namespace, safe='')}/{quote(package.name, safe='')}"
            f"@{quote(package.version, safe='')}" + (f"?{query}" if query else ""))


def supplier(origin: Origin, maintainer: str) -> str:
    """Debian's archive is supplied by Debian (its maintainers act for the project);
    anything else by its Maintainer, as a Person (SPDX has no "team"), if it names one."""
    if origin.supplier is not None:
        return origin.supplier
    if origin.namespace == DEBIAN and not origin.local:
        return "Organization: Debian"
    match = re.fullmatch(r"([^<>]*?)\s*(?:<([^<>]*)>)?", re.sub(r"[()\n]", "", maintainer))
    if match is None or not match[1].strip():
        return NOASSERTION
    return f"Person: {match[1].strip()}" + (f" ({match[2].strip()})" if match[2] else "")


def _package(package: Installed, spdx_id: str, origin: Origin, declared: str,
             distro: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "SPDXID": spdx_id, "name": package.name, "versionInfo": package.version,
        "downloadLocation": NOASSERTION, "filesAnalyzed": False,
        "supplier": supplier(origin, package.maintainer),
        "licenseConcluded": NOASSERTION, "licenseDeclared": declared,
        "copyrightText": NOASSERTION,
        "sourceInfo": f"built from source package {package.source}, "
                      f"version {package.source_version}",
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
            "referenceLocator": purl(origin.namespace, package,
                                     None if origin.local else distro)}],
    }
    if origin.local:
        entry["comment"] = "installed from a local .deb file of the configuration"
    return entry


def spdx_ids(packages: list[Installed]) -> list[str]:
    """SPDXRef-deb-NAME-ARCH, sanitised; a clash gets -2, -3 (packages come sorted)."""
    used, ids = {IMAGE_ID}, []
    for package in packages:
        base = "SPDXRef-deb-" + idstring("-".join(filter(None, (package.name, package.arch))))
        spdx_id, count = base, 1
        while spdx_id in used:
            count += 1
            spdx_id = f"{base}-{count}"
        used.add(spdx_id)
        ids.append(spdx_id)
    return ids


def sbom_document(tree: ImageTree, *, name: str, namespace_seed: str, created_epoch: int,
                  origins: Mapping[str, Origin] | None = None,
                  distro: str | None = None, licences: Licences | None = None
                  ) -> dict[str, Any]:
    """The SPDX 2.3 document: the image, which CONTAINS each installed package.

    origins: by "name:arch" or name; a package not in it is Debian's archive's.
    namespace_seed: what makes this image's namespace unique (e.g. the config
    digest and the package list). distro: the purl qualifier, e.g. "debian-12".
    licences: reads the declared licences (with what earlier builds found).
    TreeError if the image has no dpkg status to read.
    """
    origins = origins or {}
    packages = installed(tree)
    licences = licences or Licences()
    entries = [
        _package(package, spdx_id,
                 origins.get(f"{package.name}:{package.arch}")
                 or origins.get(package.name) or DEBIAN_ARCHIVE,
                 licences.declared(tree, package.name), distro)
        for package, spdx_id in zip(packages, spdx_ids(packages), strict=True)
    ]
    image = {"SPDXID": IMAGE_ID, "name": name, "downloadLocation": NOASSERTION,
             "filesAnalyzed": False, "primaryPackagePurpose": "OPERATING-SYSTEM",
             "licenseConcluded": NOASSERTION, "licenseDeclared": NOASSERTION,
             "copyrightText": NOASSERTION}
    seed = hashlib.sha256(namespace_seed.encode()).hexdigest()
    document: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": f"https://deblive.invalid/spdx/{quote(name, safe='')}-{seed}",
        "creationInfo": {
            "created": dt.datetime.fromtimestamp(created_epoch, dt.UTC)
                         .strftime("%Y-%m-%dT%H:%M:%SZ"),
            "creators": [f"Tool: deblive-{__version__}"],
        },
        "packages": [image, *entries],
        "relationships": [
            {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
             "relatedSpdxElement": IMAGE_ID},
            *({"spdxElementId": IMAGE_ID, "relationshipType": "CONTAINS",
               "relatedSpdxElement": entry["SPDXID"]} for entry in entries),
        ],
    }
    if licences.refs:
        document["hasExtractedLicensingInfos"] = [licences.refs[k] for k in sorted(licences.refs)]
    return document


def sbom_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def write_sbom(path: Path, document: Mapping[str, Any]) -> None:
    """Write the document whole or not at all (a reader never sees half an SBOM)."""
    write_atomic(path, sbom_json(document))
