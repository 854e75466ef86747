"""Extra repositories and local packages: keys, signature checks, sources, the local
archive. Real gpg, gpgv, dpkg-deb and apt-ftparchive; archives served from
127.0.0.1 or read as file: URIs; no root, no mirror."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deblive.apt import localrepo, repositories
from deblive.apt.repositories import RepositoryError
from deblive.apt.sources import extra_sources
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.model.config import ConfigError, ImageConfig
from tests.support import archives

from . import conftest


def cfg(base: Path, **data: object) -> ImageConfig:
    return conftest.parse({"name": "demo", **data}, base / "demo.yaml")


@pytest.fixture(scope="module")
def signer() -> Iterator[Path]:
    with archives.gnupg_home() as home:
        yield home


@pytest.fixture(scope="module")
def stranger() -> Iterator[Path]:
    with archives.gnupg_home() as home:
        yield home


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, signer: Path) -> Iterator[str]:
    base = tmp_path_factory.mktemp("repo")
    deb = archives.make_deb(base, "distro-tool", "1.0")
    archives.make_archive(base / "signed", [deb], signer, suite="bookworm", arch="amd64")
    archives.make_archive(base / "unsigned", [deb], None, suite="bookworm", arch="amd64")
    with archives.serve(base) as url:
        yield url


def runner() -> Runner:
    return Runner(BuildLog())


def test_armoured_and_binary_keys_are_the_same_keyring(tmp_path: Path, signer: Path) -> None:
    armoured = archives.export_key(signer, tmp_path / "k.asc")
    binary = archives.export_key(signer, tmp_path / "k.gpg", armour=False)
    assert repositories.dearmour(armoured.read_bytes()) == binary.read_bytes()
    assert repositories.dearmour(binary.read_bytes()) == binary.read_bytes()
    for bad in (b"", b"hello", b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n%%%\n"):
        with pytest.raises(ValueError):
            repositories.dearmour(bad)


def test_config_names_the_repository_key_that_is_wrong(tmp_path: Path) -> None:
    bad = [({"uri": "ftp://x"}, "repositories.0.uri"),
           ({"uri": "file:///srv/repo", "key": "k"}, "repositories.0.uri"),
           ({"uri": "https://user:token@x/r", "key": "k"}, "repositories.0.uri"),
           ({"uri": 'http://x"y/r', "key": "k"}, "repositories.0.uri"),
           ({"uri": "http://x", "key": "k", "suites": ["a b"]}, "repositories.0.suites"),
           ({"uri": "http://x", "key": "k", "components": ["../x"]}, "repositories.0.components"),
           ({"uri": "http://x", "key": "k", "priority": 99999}, "repositories.0.priority"),
           ({"uri": "http://x", "key": "k", "trusted": True}, "repositories.0.trusted")]
    for repo, key in bad:
        with pytest.raises(ConfigError) as err:
            cfg(tmp_path, repositories=[repo])
        assert key.replace(".0.", "[0].") in str(err.value) or key in str(err.value), err.value
    ok = cfg(tmp_path, repositories=[{"uri": "http://x/r/", "key": "k.asc"}])
    assert ok.repository_suites(ok.repositories[0]) == ("bookworm",)
    assert ok.referenced_paths()["repositories[0].key"] == tmp_path / "k.asc"


def test_a_signed_repository_passes_and_gives_its_sources(
        tmp_path: Path, signer: Path, served: str) -> None:
    archives.export_key(signer, tmp_path / "key.asc")
    config = cfg(tmp_path, repositories=[{"uri": f"{served}/signed", "key": "key.asc",
                                          "priority": 700, "ship": False}])
    [extra] = repositories.check_repositories(config, runner())
    assert extra.name == "deblive-1-127.0.0.1" and not extra.ship
    assert extra.namespace == "127.0.0.1"
    text = extra_sources([extra], "/etc/apt/keyrings")
    assert f"URIs: {served}/signed\n" in text
    assert "Signed-By: /etc/apt/keyrings/deblive-1-127.0.0.1.gpg" in text
    assert "Suites: bookworm\nComponents: main" in text and "trusted" not in text.lower()
    # Pinned by its Release's Origin and Label: not everything its host serves.
    assert extra.preferences() == ("Explanation: deblive: deblive-1-127.0.0.1\nPackage: *\n"
                                   "Pin: release o=deblive-test,l=deblive-test\n"
                                   "Pin-Priority: 700\n")


@pytest.mark.parametrize("case", ["unsigned", "wrong-key", "no-suite"])
def test_an_unsigned_or_wrongly_signed_repository_is_refused(
        tmp_path: Path, signer: Path, stranger: Path, served: str, case: str) -> None:
    key_home = stranger if case == "wrong-key" else signer
    archives.export_key(key_home, tmp_path / "key.asc")
    where = {"unsigned": "unsigned", "wrong-key": "signed", "no-suite": "signed"}[case]
    suites = ["trixie"] if case == "no-suite" else None
    config = cfg(tmp_path, repositories=[{"uri": f"{served}/{where}", "key": "key.asc",
                                          "suites": suites}])
    with pytest.raises(RepositoryError) as err:
        repositories.check_repositories(config, runner())
    message = str(err.value)
    assert err.value.exit_code == 2
    assert f"repositories[0] ({served}/{where})" in message
    assert {"unsigned": "not signed", "wrong-key": "not valid",
            "no-suite": "no suite trixie"}[case] in message


def test_a_key_that_is_no_key_is_refused(tmp_path: Path, served: str) -> None:
    (tmp_path / "key.asc").write_text("not a key\n")
    config = cfg(tmp_path, repositories=[{"uri": f"{served}/signed", "key": "key.asc"}])
    with pytest.raises(RepositoryError, match=r"repositories\[0\]\.key: .*not an OpenPGP key"):
        repositories.check_repositories(config, runner())


def test_local_packages_become_one_signed_archive_made_once(tmp_path: Path) -> None:
    debs = tmp_path / "debs"
    debs.mkdir()
    archives.make_deb(debs, "site-config", "2.0", depends="sl")
    archives.make_deb(debs, "site-tool", "1:1.5+b1")
    single = archives.make_deb(tmp_path, "another", "0.1")
    config = cfg(tmp_path, local_packages=["debs", single.name])
    made = localrepo.archive(config, runner(), tmp_path / "cache")
    assert made is not None
    extra, packages = made
    assert [(p.name, p.version) for p in packages] == [
        ("another", "0.1"), ("site-config", "2.0"), ("site-tool", "1:1.5+b1")]
    repo = Path(extra.uri.removeprefix("file:"))
    assert extra.suites == ("./",) and extra.components == () and not extra.ship
    assert (repo / "InRelease").is_file() and "Origin: deblive-local" in (
        repo / "Release").read_text()
    assert "Package: site-config" in (repo / "Packages").read_text()
    # The archive verifies with its own key, as apt checks it.
    (tmp_path / "k.gpg").write_bytes(extra.keyring)
    runner().run(["gpgv", "--keyring", str(tmp_path / "k.gpg"), str(repo / "InRelease")],
                 quiet=True)
    again = localrepo.archive(config, runner(), tmp_path / "cache")
    assert again is not None and again[0] == extra  # the same archive, not signed anew
    assert "Suites: ./" in extra_sources([extra], "/k") and "Components" not in extra_sources(
        [extra], "/k")


def test_bad_local_packages_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.deb").write_text("not a deb")
    foreign = archives.make_deb(tmp_path, "foreign", "1.0", arch="arm64")
    for entry, words in (("empty", "holds no .deb"), ("broken.deb", "not a Debian package"),
                         (foreign.name, "is for arm64")):
        config = cfg(tmp_path, local_packages=[entry])
        with pytest.raises(localrepo.LocalPackageError, match=words) as err:
            localrepo.archive(config, runner(), tmp_path / "cache")
        assert err.value.exit_code == 2 and str(tmp_path / "demo.yaml") in str(err.value)


def test_a_pin_needs_an_origin_or_label_to_pin_by(tmp_path: Path, signer: Path) -> None:
    from debian import deb822

    assert repositories.release_terms(deb822.Release("Origin: Foo\nLabel: Foo bar\n")) is None
    assert repositories.release_terms(deb822.Release("Suite: x\n")) is None
    assert repositories.release_terms(deb822.Release("Origin: Foo\n")) == "o=Foo"


def test_local_packages_are_asked_for_by_exact_version(tmp_path: Path) -> None:
    from deblive.apt import extras

    debs = tmp_path / "debs"
    debs.mkdir()
    archives.make_deb(debs, "site-tool", "1:1.5+b1")
    found = extras.gather(cfg(tmp_path, local_packages=["debs"]), runner(), tmp_path / "c",
                          check_network=False)
    assert found.local_names == ["site-tool=1:1.5+b1"]
    with pytest.raises(localrepo.LocalPackageError, match="space"):
        extras.gather(cfg(tmp_path, local_packages=["debs"]), runner(), tmp_path / "a b",
                      check_network=False)
    with pytest.raises(RepositoryError, match=r"repositories\[0\]\.priority"):
        extras.gather(cfg(tmp_path, repositories=[{"uri": "http://x/r", "key": "k",
                                                   "priority": 5}]),
                      runner(), tmp_path / "c", check_network=False)


def test_the_local_archive_never_dates_the_build(tmp_path: Path) -> None:
    from deblive.apt.indexes import newest_release_date

    debs = tmp_path / "debs"
    debs.mkdir()
    archives.make_deb(debs, "site-tool", "0.1")
    made = localrepo.archive(cfg(tmp_path, local_packages=["debs"]), runner(), tmp_path / "c")
    assert made is not None
    repo = Path(made[0].uri.removeprefix("file:"))
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "local_._InRelease").write_bytes((repo / "InRelease").read_bytes())
    assert newest_release_date(lists) == 0
