"""The SBOM: every installed package once, valid SPDX 2.3, and nothing read from the host.

A fake image tree with a dpkg status and copyright files (DEP-5 and not,
malformed, a FIFO, links inside the tree and links out of it to a host file
that is itself a valid DEP-5 file, so following one would show) is turned
into an SBOM, which spdx-tools must parse and validate without a message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from spdx_tools.common.spdx_licensing import spdx_licensing
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from deblive import __version__
from deblive.build import sbom, sbomlicences, sbommemory
from deblive.host.imagetree import ImageTree

SECRET = "HOST-SENTINEL-Licence"
EPOCH = 1_700_000_000
DEP5 = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"


def _para(name: str, version: str, arch: str = "amd64", status: str = "install ok installed",
          **extra: str) -> str:
    fields = {"Package": name, "Status": status, "Architecture": arch, "Version": version,
              "Maintainer": "Debian Maintainers <maint@lists.example.org>", **extra}
    return "".join(f"{key}: {value}\n" for key, value in fields.items()) + "\n"


STATUS = "".join([
    _para("base-files", "12.4+deb12u5"),
    _para("libfoo1", "2:1.2-3+b1", **{"Source": "foo (2:1.2-3)", "Multi-Arch": "same"}),
    _para("foo-tools", "1.2-3+b2", **{"Source": "foo (1.2-3)"}),
    _para("libfoo-dev", "2:1.2-3+b1", **{"Source": "foo (2:1.2-3)"}),
    _para("foo-doc", "1.2-3", "all", Source="foo"),
    _para("libstdc++6", "12.2.0-14", "amd64"),
    _para("libstdc++6", "12.2.0-14", "i386"),
    _para("gone", "1.0-1", status="deinstall ok config-files"),
    _para("half", "1.0-1", status="install ok half-configured"),
    _para("oddlicence", "0.9-1"),
    _para("oldstyle", "3.0-1"),
    _para("broken", "1.0-1"),
    _para("nosynopsis", "1.0-1"),
    _para("pipe", "1.0-1"),
    _para("evil-abs", "1.0-1"),
    _para("evil-rel", "1.0-1"),
    _para("evil-host", "1.0-1"),
    _para("evil-host-rel", "1.0-1"),
    _para("extra-tool", "4.1", Maintainer="Jane Doe <jane@example.org>"),
    _para("mylocal", "1.0", "all", Maintainer="Local Builder <builder@example.org>"),
])

GPL = DEP5 + "\nFiles: *\nCopyright: 2024 Someone\nLicense: GPL-2+\n"
FOO = DEP5 + """
Files: *
Copyright: 2020 Foo Authors
License: GPL-1+ or Artistic, and BSD-3-clause

Files: fonts/*
Copyright: 2020 Font Authors
License: GPL-2+ with Font exception

Files: crypto/*
Copyright: 2020 Crypto Authors
License: GPL-2+ with OpenSSL exception

License: GPL-2+ with OpenSSL exception
 This program is free software, and linking it with OpenSSL is allowed.
"""
ODD = DEP5 + """
Files: *
Copyright: 2021 Odd Authors
License: Frobnicate-1.0

Files: data/*
Copyright: none
License: public-domain

Files: tests/*
Copyright: 2021 Odd Authors
License: Expat

License: Frobnicate-1.0
 You may frobnicate this software freely.
"""


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """The fake image's root, and outside it a host file that is a valid DEP-5 file."""
    host = tmp_path / "host-copyright"
    host.write_text(DEP5 + f"\nFiles: *\nCopyright: host\nLicense: {SECRET}\n")
    return _make_image(tmp_path / "image", host)


def _make_image(root: Path, host: Path) -> Path:
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(STATUS)
    doc = root / "usr/share/doc"
    files = {"base-files": GPL, "libfoo1": FOO, "libstdc++6": DEP5 + "\nFiles: *\n"
             "Copyright: GCC\nLicense: Expat\n", "oddlicence": ODD,
             "oldstyle": "This package was debianized in 1999.\nIt is GPL.\n",
             "broken": DEP5 + "\nFiles: *\nCopyright: x\nLicense: GPL-2+\nno colon line\n",
             "nosynopsis": DEP5 + "\nFiles: *\nCopyright: x\nLicense:\n only a text\n",
             "extra-tool": GPL, "mylocal": GPL}
    for package, text in files.items():
        (doc / package).mkdir(parents=True)
        (doc / package / "copyright").write_text(text)
    (doc / "libfoo-dev").symlink_to("libfoo1")  # a doc dir linked to another: followed
    (doc / "foo-tools").mkdir()
    (doc / "foo-tools/copyright").symlink_to("/usr/share/doc/libfoo1/copyright")  # the image's
    (doc / "pipe").mkdir()
    os.mkfifo(doc / "pipe/copyright")  # never opened for reading: it would block
    links = {"evil-abs": "/etc/passwd", "evil-rel": "../../../../etc/passwd",
             "evil-host": str(host),
             "evil-host-rel": os.path.relpath(host, doc / "evil-host-rel")}
    for package, target in links.items():
        (doc / package).mkdir()
        (doc / package / "copyright").symlink_to(target)
    return root


ORIGINS = {"extra-tool": sbom.Origin(namespace="example-repo"), "mylocal": sbom.LOCAL}


def _document(root: Path, **kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"name": "deblive-bookworm", "namespace_seed": "seed",
                            "created_epoch": EPOCH, "origins": ORIGINS, "distro": "debian-12"}
    with ImageTree(root) as tree:
        return sbom.sbom_document(tree, **{**args, **kwargs})


def _packages(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["SPDXID"]: p for p in document["packages"] if p["SPDXID"] != sbom.IMAGE_ID}


def _by_name(document: dict[str, Any], name: str, arch: str = "") -> dict[str, Any]:
    [found] = [p for p in _packages(document).values() if p["name"] == name
               and (not arch or p["SPDXID"].endswith(f"-{arch}"))]
    return found


def _purl(package: dict[str, Any]) -> str:
    [ref] = package["externalRefs"]
    assert (ref["referenceCategory"], ref["referenceType"]) == ("PACKAGE-MANAGER", "purl")
    return str(ref["referenceLocator"])


def test_the_sbom_is_valid_spdx_and_lists_every_installed_package_once(
        image: Path, tmp_path: Path) -> None:
    document = _document(image)
    out = tmp_path / "sbom.spdx.json"
    sbom.write_sbom(out, document)
    assert validate_full_spdx_document(parse_file(str(out))) == []
    assert out.read_text().endswith("}\n")
    assert json.loads(out.read_text()) == document

    listed = sorted(p["name"] for p in _packages(document).values())
    assert listed == sorted([
        "base-files", "libfoo1", "foo-tools", "libfoo-dev", "foo-doc", "libstdc++6",
        "libstdc++6", "oddlicence", "oldstyle", "broken", "nosynopsis", "pipe", "evil-abs",
        "evil-rel", "evil-host", "evil-host-rel", "extra-tool", "mylocal"])
    assert len(_packages(document)) == len(document["packages"]) - 1  # SPDX ids unique
    assert "gone" not in out.read_text() and '"half"' not in out.read_text()
    assert document["relationships"][0] == {
        "spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
        "relatedSpdxElement": sbom.IMAGE_ID}
    contained = [r["relatedSpdxElement"] for r in document["relationships"][1:]]
    assert all(r["relationshipType"] == "CONTAINS" for r in document["relationships"][1:])
    assert sorted(contained) == sorted(_packages(document))
    assert document["creationInfo"] == {"created": "2023-11-14T22:13:20Z",
                                        "creators": [f"Tool: deblive-{__version__}"]}
    assert document["spdxVersion"] == "SPDX-2.3" and document["dataLicense"] == "CC0-1.0"


def test_purls_versions_sources_and_ids(image: Path) -> None:
    document = _document(image)
    base = _by_name(document, "base-files")
    assert base["versionInfo"] == "12.4+deb12u5"
    assert _purl(base) == "pkg:deb/debian/base-files@12.4%2Bdeb12u5?arch=amd64&distro=debian-12"
    assert base["supplier"] == "Organization: Debian"
    assert base["SPDXID"] == "SPDXRef-deb-base-files-amd64"
    lib = _by_name(document, "libfoo1")
    assert lib["versionInfo"] == "2:1.2-3+b1"
    assert _purl(lib) == ("pkg:deb/debian/libfoo1@2%3A1.2-3%2Bb1?arch=amd64"
                          "&distro=debian-12&upstream=foo%402%3A1.2-3")
    assert lib["sourceInfo"] == "built from source package foo, version 2:1.2-3"
    assert _by_name(document, "foo-tools")["sourceInfo"] == (
        "built from source package foo, version 1.2-3")
    doc_pkg = _by_name(document, "foo-doc")  # Source without a version: the binary's
    assert _purl(doc_pkg) == "pkg:deb/debian/foo-doc@1.2-3?arch=all&distro=debian-12&upstream=foo"
    assert doc_pkg["sourceInfo"] == "built from source package foo, version 1.2-3"
    i386 = _by_name(document, "libstdc++6", "i386")
    assert i386["SPDXID"] == "SPDXRef-deb-libstdcplusplus6-i386"
    assert _purl(i386) == "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=i386&distro=debian-12"
    for package in _packages(document).values():
        assert package["downloadLocation"] == "NOASSERTION"
        assert package["filesAnalyzed"] is False
        assert package["licenseConcluded"] == package["copyrightText"] == "NOASSERTION"


def test_an_extra_repository_and_a_local_deb_are_not_claimed_as_debians(image: Path) -> None:
    document = _document(image)
    extra = _by_name(document, "extra-tool")
    assert _purl(extra) == "pkg:deb/example-repo/extra-tool@4.1?arch=amd64&distro=debian-12"
    assert extra["supplier"] == "Person: Jane Doe (jane@example.org)"
    local = _by_name(document, "mylocal")
    assert _purl(local) == "pkg:deb/local/mylocal@1.0?arch=all"
    assert local["supplier"] == "Person: Local Builder (builder@example.org)"
    assert "local .deb" in local["comment"]
    overridden = _document(image, origins={"extra-tool": sbom.Origin(
        namespace="example-repo", supplier="Organization: Example (ops@example.org)")})
    assert _by_name(overridden, "extra-tool")["supplier"] == (
        "Organization: Example (ops@example.org)")
    by_arch = _document(image, origins={"libstdc++6:i386": sbom.LOCAL})
    assert _purl(_by_name(by_arch, "libstdc++6", "i386")).startswith("pkg:deb/local/")
    assert _purl(_by_name(by_arch, "libstdc++6", "amd64")).startswith("pkg:deb/debian/")


@pytest.mark.parametrize("kwargs", [
    {"namespace": "Example Repo"}, {"namespace": "debian", "local": True},
    {"supplier": "Jane Doe"}, {"supplier": "Person: Jane (a)(b)"},
])
def test_an_origin_that_would_make_an_invalid_or_false_sbom_is_refused(
        kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        sbom.Origin(**kwargs)


def test_declared_licences_from_dep5_files(image: Path) -> None:
    document = _document(image)
    assert _by_name(document, "base-files")["licenseDeclared"] == "GPL-2.0-or-later"
    assert _by_name(document, "libstdc++6", "amd64")["licenseDeclared"] == "MIT"
    foo = _by_name(document, "libfoo1")["licenseDeclared"]
    parts = foo.split(" AND ")
    assert "(GPL-1.0-or-later OR Artistic-1.0-Perl) AND BSD-3-Clause" in foo
    assert "(GPL-2.0-or-later WITH Font-exception-2.0)" in parts
    [openssl] = [p for p in parts if "OpenSSL" in p]
    assert openssl.startswith("LicenseRef-GPL-2plus-with-OpenSSL-exception-")
    # Links inside the image are followed as the image sees them.
    assert _by_name(document, "libfoo-dev")["licenseDeclared"] == foo
    assert _by_name(document, "foo-tools")["licenseDeclared"] == foo
    odd = _by_name(document, "oddlicence")["licenseDeclared"].split(" AND ")
    assert "MIT" in odd and len(odd) == 3 and odd == sorted(odd)
    refs = {r["licenseId"]: r for r in document["hasExtractedLicensingInfos"]}
    frob = next(r for r in refs.values() if r["name"] == "Frobnicate-1.0")
    assert frob["extractedText"] == "You may frobnicate this software freely."
    assert frob["licenseId"] in odd
    assert "without its text" in next(
        r for r in refs.values() if r["name"] == "public-domain")["extractedText"]
    assert "linking it with OpenSSL" in refs[openssl]["extractedText"]
    used = {t for p in _packages(document).values()
            for t in p["licenseDeclared"].replace("(", " ").replace(")", " ").split()
            if t.startswith("LicenseRef-")}
    assert used == set(refs)


def test_unreadable_unparsable_and_escaping_copyright_files_give_noassertion(
        image: Path) -> None:
    document = _document(image)
    for name in ("oldstyle", "broken", "nosynopsis", "pipe", "foo-doc", "evil-abs", "evil-rel",
                 "evil-host", "evil-host-rel"):
        assert _by_name(document, name)["licenseDeclared"] == "NOASSERTION", name
    for name in ("evil-host", "evil-host-rel"):  # a naive open would have read the host file
        assert SECRET in (image / f"usr/share/doc/{name}/copyright").read_text()
    text = sbom.sbom_json(document)
    assert SECRET not in text  # the host's DEP-5 file was never read
    assert "root:" not in text


def test_a_copyright_file_over_the_limit_is_not_read(
        image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sbomlicences, "MAX_COPYRIGHT", len(GPL) - 1)
    assert _by_name(_document(image), "base-files")["licenseDeclared"] == "NOASSERTION"
    monkeypatch.setattr(sbomlicences, "MAX_COPYRIGHT", len(GPL))
    assert _by_name(_document(image), "base-files")["licenseDeclared"] == "GPL-2.0-or-later"


def test_the_same_image_gives_the_same_bytes_wherever_it_lies(
        image: Path, tmp_path: Path) -> None:
    first = sbom.sbom_json(_document(image))
    assert sbom.sbom_json(_document(image)) == first
    moved = _make_image(tmp_path / "elsewhere" / "image", tmp_path / "host-copyright")
    assert sbom.sbom_json(_document(moved)) == first
    assert str(tmp_path) not in first
    other = _document(image, namespace_seed="another build")
    assert other["documentNamespace"] != json.loads(first)["documentNamespace"]
    assert json.loads(first)["documentNamespace"].startswith(
        "https://deblive.invalid/spdx/deblive-bookworm-")


def test_licences_kept_from_an_earlier_build_give_the_same_document_unparsed(
        image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memory = sbommemory.memory_file(tmp_path / "cache")
    assert memory.parent == tmp_path / "cache/sbom" and memory.name.startswith("licences-")
    first = sbomlicences.Licences(sbommemory.load(memory))  # no memory yet
    expected = sbom.sbom_json(_document(image, licences=first))
    assert first.found and any(e["refs"] for e in first.found.values())  # LicenseRefs too
    sbommemory.save(memory, {}, first.found)

    def parse(self: sbomlicences.Licences, text: str) -> str | None:
        raise AssertionError("a copyright file parsed again")

    monkeypatch.setattr(sbomlicences.Licences, "_copyright", parse)
    again = sbomlicences.Licences(sbommemory.load(memory))
    assert sbom.sbom_json(_document(image, licences=again)) == expected
    before = memory.stat().st_mtime_ns
    sbommemory.save(memory, sbommemory.load(memory), again.found)
    assert memory.stat().st_mtime_ns == before  # nothing new: not written again


def test_a_memory_not_as_deblive_writes_it_is_not_used(tmp_path: Path) -> None:
    memory = tmp_path / "licences.json"
    good = {"expression": "MIT", "refs": {}}
    ref = "LicenseRef-x-0123456789ab"
    memory.write_text(json.dumps({
        "a" * 64: good,
        "b" * 64: {"expression": 5, "refs": {}},
        "c" * 64: {"expression": ref, "refs": {ref: {"licenseId": "LicenseRef-other",
                                                      "name": "x", "extractedText": "t"}}},
        "d" * 64: {"expression": None, "refs": {}, "more": 1},
        "short": good,
    }))
    assert sbommemory.load(memory) == {"a" * 64: good}
    memory.write_text("[1, 2")
    assert sbommemory.load(memory) == {}
    assert sbommemory.load(tmp_path / "none.json") == {}


def test_the_memory_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memory = tmp_path / "licences.json"
    monkeypatch.setattr(sbommemory, "MAX_ENTRIES", 3)
    entry = {"expression": "MIT", "refs": {}}
    sbommemory.save(memory, {}, {c * 64: entry for c in "ab"})
    sbommemory.save(memory, sbommemory.load(memory), {"c" * 64: entry})
    assert set(sbommemory.load(memory)) == {c * 64 for c in "abc"}
    sbommemory.save(memory, sbommemory.load(memory), {c * 64: entry for c in "de"})
    assert set(sbommemory.load(memory)) == {c * 64 for c in "de"}  # only the last build's


def test_an_image_without_packages_still_validates(tmp_path: Path) -> None:
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text("")
    out = tmp_path / "empty.spdx.json"
    with ImageTree(tmp_path) as tree:
        sbom.write_sbom(out, sbom.sbom_document(tree, name="empty image", namespace_seed="s",
                                                created_epoch=0))
    assert validate_full_spdx_document(parse_file(str(out))) == []


@pytest.mark.parametrize(("debian", "spdx"), [
    ("GPL-2+", "GPL-2.0-or-later"), ("GPL-2", "GPL-2.0-only"), ("GPL-3.0+", "GPL-3.0-or-later"),
    ("LGPL-2.1+", "LGPL-2.1-or-later"), ("LGPL-2+", "LGPL-2.0-or-later"),
    ("AGPL-3+", "AGPL-3.0-or-later"), ("GFDL-NIV-1.3+", "GFDL-1.3-no-invariants-or-later"),
    ("GPL-2.0-or-later", "GPL-2.0-or-later"), ("Expat", "MIT"), ("BSD-3-clause", "BSD-3-Clause"),
    ("apache-2.0", "Apache-2.0"), ("CC0", "CC0-1.0"), ("GPL-4+", None), ("public-domain", None),
    ("GPL", None),
])
def test_debian_short_names(debian: str, spdx: str | None) -> None:
    assert sbomlicences.spdx_license(debian) == spdx


def test_every_mapped_name_is_an_spdx_licence_or_exception() -> None:
    names = [*sbomlicences._LICENCES, *(f"{family}-{version}{suffix}"
             for family, (_, versions) in sbomlicences._FAMILIES.items()
             for version in versions for suffix in ("", "+"))]
    for name in names:
        expression = sbomlicences.spdx_license(name)
        assert expression is not None, name
        info = spdx_licensing.validate(expression)
        assert not info.errors and not info.invalid_symbols, (name, expression)
    for phrase in sbomlicences._EXCEPTIONS:
        exception = sbomlicences.spdx_exception(phrase)
        info = spdx_licensing.validate(f"GPL-2.0-or-later WITH {exception}")
        assert not info.errors and not info.invalid_symbols, phrase
