"""A distribution's own software in the custom image: packages from two signed
repositories served from 127.0.0.1 (one shipped in the image's sources, one for
the build only) and local .deb files; the SBOM of every package; a repository
whose signature does not verify stops the build before anything is touched."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from tests.support import archives

from .conftest import Build, run_deblive

SHIPPED = "deblive-1-127.0.0.1"
BUILD_ONLY = "deblive-2-127.0.0.1"


def test_repository_and_local_packages_are_installed(custom_tree: Path) -> None:
    assert (custom_tree / "usr/bin/distro-tool").read_text() == "#!/bin/sh\necho distro\n"
    assert (custom_tree / "usr/share/build-only-tool/marker").is_file()
    assert (custom_tree / "etc/site-config/site.conf").read_text() == "local\n"
    assert (custom_tree / "usr/bin/site-tool").is_file()
    assert (custom_tree / "usr/games/sl").is_file()  # a local package's dependency, from the mirror


def test_only_the_shipped_repository_stays_in_the_image(custom_tree: Path) -> None:
    apt = custom_tree / "etc/apt"
    sources = (apt / f"sources.list.d/{SHIPPED}.sources").read_text()
    assert "URIs: http://127.0.0.1:" in sources and "Suites: stable\nComponents: main" in sources
    assert f"Signed-By: /etc/apt/keyrings/{SHIPPED}.gpg" in sources
    key = (apt / f"keyrings/{SHIPPED}.gpg").read_bytes()
    assert key[0] & 0x80  # binary OpenPGP, as apt's Signed-By takes it
    assert (apt / f"keyrings/{SHIPPED}.gpg").stat().st_mode & 0o777 == 0o644
    assert "Pin-Priority: 600" in (apt / f"preferences.d/{SHIPPED}.pref").read_text()
    # No trace of the build-only repository or the local archive.
    everything = [p.name for p in apt.rglob("*")]
    assert not [n for n in everything if BUILD_ONLY in n or "deblive-local" in n], everything
    assert not (custom_tree / "var/lib/deblive").exists()
    for path in apt.rglob("*"):
        if path.is_file():
            assert "trusted=yes" not in path.read_bytes().decode(errors="replace")
    assert [p.name for p in (custom_tree / "var/lib/apt/lists").iterdir()
            if p.name not in ("lock", "partial", "auxfiles")] == []


def test_the_sbom_validates_and_names_every_package(custom_build: Build) -> None:
    sbom = custom_build.path(_basename(custom_build) + ".spdx.json")
    document = parse_file(str(sbom))
    assert validate_full_spdx_document(document) == []
    data = json.loads(sbom.read_text())
    listed = dict(line.split("\t") for line in
                  custom_build.path("filesystem.packages").read_text().splitlines())
    by_name: dict[str, dict[str, object]] = {}
    for package in data["packages"]:
        if package["SPDXID"] != "SPDXRef-Image":
            assert package["name"] not in by_name, package["name"]
            by_name[str(package["name"])] = package
    assert {n: p["versionInfo"] for n, p in by_name.items()} == listed

    def purl(name: str) -> str:
        refs = by_name[name]["externalRefs"]
        assert isinstance(refs, list)
        return str(next(r["referenceLocator"] for r in refs if r["referenceType"] == "purl"))

    assert purl("distro-tool").startswith("pkg:deb/127.0.0.1/distro-tool@1.0?arch=all")
    assert purl("site-config").startswith("pkg:deb/local/site-config@1%3A3.0%2Blocal1?arch=all")
    assert purl("sl").startswith("pkg:deb/debian/sl@")
    assert purl("base-files").startswith("pkg:deb/debian/base-files@")
    sums = custom_build.path("SHA256SUMS").read_text()
    assert sbom.name in sums
    report = json.loads(custom_build.path("report.json").read_text())
    assert sbom.name in [o["name"] for o in report["outputs"]]


def _basename(build: Build) -> str:
    report = json.loads(build.path("report.json").read_text())
    return f"{report['name']}-{report['codename']}-{report['architecture']}"


def test_a_wrongly_signed_repository_stops_the_build(tmp_path: Path) -> None:
    debs = tmp_path / "pkgs"
    debs.mkdir()
    deb = archives.make_deb(debs, "distro-tool", "1.0")
    with archives.gnupg_home() as signer, archives.gnupg_home() as stranger:
        archives.make_archive(tmp_path / "site" / "repo", [deb], signer, suite="stable",
                              arch="all")
        archives.make_archive(tmp_path / "site" / "unsigned", [deb], None, suite="stable",
                              arch="all")
        archives.export_key(stranger, tmp_path / "stranger.asc")
        archives.export_key(signer, tmp_path / "signer.asc")
    with archives.serve(tmp_path / "site") as url:
        for where, key, words in (("repo", "stranger.asc", "not valid"),
                                  ("unsigned", "signer.asc", "not signed")):
            config = tmp_path / f"{where}.yaml"
            config.write_text(textwrap.dedent(f"""\
                name: badrepo
                repositories: [{{uri: "{url}/{where}", suites: [stable], key: {key}}}]
                """))
            commands: list[list[str | Path]] = [
                ["build", config, "-o", tmp_path / "out", "--workdir", tmp_path / "work"],
                ["validate", "--network", config]]
            for command in commands:
                proc = run_deblive(*command)
                assert proc.returncode == 2, proc.stdout + proc.stderr
                assert f"repositories[0] ({url}/{where})" in proc.stderr
                assert words in proc.stderr
            assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_the_report_names_each_packages_origin(custom_build: Build) -> None:
    report = json.loads(custom_build.path("report.json").read_text())
    origins = {p["name"]: p["origin"] for p in report["packages"]["manifest"]}
    assert origins["site-config"] == origins["site-tool"] == "local"
    assert origins["distro-tool"] == origins["build-only-tool"] == "127.0.0.1"
    assert origins["sl"] == origins["base-files"] == "debian"
