"""The prefetch: a plan's packages fetched by the host's real apt from a signed archive
served on 127.0.0.1, handed over into a build's archives directory."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deblive.apt import basefetch, indexes, plan, prefetch
from deblive.apt.packageset import Package, PackageSet
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.model import config
from tests.support import archives

from . import conftest

needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("gpg", "gpgv", "apt-get", "apt-ftparchive", "dpkg-deb")),
    reason="needs gpg, gpgv, apt-get, apt-ftparchive and dpkg-deb",
)

# (name, version, arch): one with an epoch, whose file name escapes the colon
DEBS = [("tool", "1.0", "amd64"), ("extra", "1:2.0", "all"), ("docs", "0.5", "all")]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """The archive's URL, its pool and its public key."""
    base = tmp_path_factory.mktemp("prefetch")
    debs = base / "debs"
    debs.mkdir()
    built = [archives.make_deb(debs, name, version, arch=arch) for name, version, arch in DEBS]
    with archives.gnupg_home() as home:
        root = archives.make_archive(base / "archive", built, home, suite="bookworm",
                                     arch="amd64")
        key = archives.export_key(home, base / "key.gpg", armour=False)
    with archives.serve(root) as url:
        yield url, root / "pool" / "main", key


def updated(url: str, key: Path, cache: Path) -> plan.PrivateApt:
    """The private apt of the served archive, its lists fetched (as make_plan does)."""
    cfg = conftest.parse({"name": "demo", "suite": "bookworm", "mirror": url,
                          "security": False, "updates": False}, None)
    assert isinstance(cfg, config.ImageConfig)
    apt = plan.private_apt(cfg, Runner(BuildLog()), cache, key)
    apt.prepare()
    apt.update()
    return apt


def resolved(url: str, key: Path, cache: Path, packages: list[Package]) -> plan.Plan:
    """A plan whose lists the private apt fetched, adding packages."""
    lists = updated(url, key, cache).root / "state/lists"
    return plan.Plan("demo", "bookworm", "amd64", "minbase", [], PackageSet(),
                     PackageSet(packages), None, indexes.index_digest(lists, "amd64"), lists)


def packages(*names: str) -> list[Package]:
    return [Package(n, v, a) for n, v, a in DEBS if n in names]


def test_file_names_are_apts() -> None:
    assert prefetch.deb_name(Package("extra", "1:2.0", "all")) == "extra_1%3a2.0_all.deb"
    assert prefetch.download_argv(packages("tool", "extra")) == [
        "apt-get", "-q", "download", "tool=1.0", "extra=1:2.0"]


@needs_tools
def test_the_plans_packages_are_fetched_and_handed_over(
        served: tuple[str, Path, Path], tmp_path: Path) -> None:
    url, pool, key = served
    made = resolved(url, key, tmp_path / "plan", packages("tool", "extra", "docs"))
    archives_dir = tmp_path / "archives"
    archives_dir.mkdir()
    # One is cached already, one is a local package: neither is fetched.
    (archives_dir / "docs_0.5_all.deb").write_bytes((pool / "docs_0.5_all.deb").read_bytes())
    wanted = prefetch.missing(made, archives_dir, skip={"tool"})
    assert [p.name for p in wanted] == ["extra"]
    wanted = prefetch.missing(made, archives_dir)
    fetch = prefetch.Prefetch(made, wanted, tmp_path / "prefetch", Runner(BuildLog()),
                              BuildLog())
    fetch.start()
    handed = fetch.hand_over(archives_dir)
    assert handed.problem is None
    assert handed.files == 2
    assert sorted(p.name for p in archives_dir.iterdir()) == [
        "docs_0.5_all.deb", "extra_1%3a2.0_all.deb", "tool_1.0_amd64.deb"]
    for name in ("extra_1%3a2.0_all.deb", "tool_1.0_amd64.deb"):
        assert (archives_dir / name).read_bytes() == (pool / name.replace("%3a", ":")
                                                      ).read_bytes()
    assert handed.bytes == sum((archives_dir / n).stat().st_size
                               for n in ("extra_1%3a2.0_all.deb", "tool_1.0_amd64.deb"))
    assert not (tmp_path / "prefetch").exists()


@needs_tools
def test_a_failed_prefetch_is_a_problem_named_not_an_error(
        served: tuple[str, Path, Path], tmp_path: Path) -> None:
    """A version the archive no longer has: apt in the chroot fetches what it can."""
    url, _pool, key = served
    made = resolved(url, key, tmp_path / "plan", [Package("tool", "9.9", "amd64")])
    archives_dir = tmp_path / "archives"
    archives_dir.mkdir()
    fetch = prefetch.Prefetch(made, list(made.added.packages), tmp_path / "prefetch",
                              Runner(BuildLog()), BuildLog())
    fetch.start()
    handed = fetch.hand_over(archives_dir)
    assert handed.files == 0
    assert handed.problem is not None
    assert "apt-get download exited with status 100" in handed.problem
    assert "9.9" in handed.problem
    assert list(archives_dir.iterdir()) == []


@needs_tools
def test_lists_replaced_meanwhile_fetch_nothing(
        served: tuple[str, Path, Path], tmp_path: Path) -> None:
    url, _pool, key = served
    made = resolved(url, key, tmp_path / "plan", packages("tool"))
    made.indexes = "another digest"
    fetch = prefetch.Prefetch(made, list(made.added.packages), tmp_path / "prefetch",
                              Runner(BuildLog()), BuildLog())
    fetch.start()
    handed = fetch.hand_over(tmp_path)
    assert (handed.files, handed.problem) == (0, "the plan's lists were replaced meanwhile")


@needs_tools
def test_stop_ends_a_hanging_download_and_waits(tmp_path: Path) -> None:
    """A failed bootstrap's teardown: nothing of the prefetch runs on after it, even when
    the mirror stops answering mid-way (apt would wait for its own timeout)."""
    debs = tmp_path / "debs"
    debs.mkdir()
    built = [archives.make_deb(debs, "tool", "1.0", arch="amd64")]
    with archives.gnupg_home() as home:
        root = archives.make_archive(tmp_path / "archive", built, home, suite="bookworm",
                                     arch="amd64")
        key = archives.export_key(home, tmp_path / "key.gpg", armour=False)
    with archives.serve(root) as url:
        made = resolved(url, key, tmp_path / "plan", [Package("tool", "1.0", "amd64")])
    # The same address now takes connections and never answers.
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as silent:
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.1", port))
        silent.listen(8)
        runner = Runner(BuildLog())
        fetch = prefetch.Prefetch(made, list(made.added.packages), tmp_path / "prefetch",
                                  runner, BuildLog())
        fetch.start()
        deadline = time.monotonic() + 20
        while not runner.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.running(), "apt-get download never started"
        time.sleep(1)
        assert runner.running(), "apt-get download ended on its own: nothing to stop"
        started = time.monotonic()
        fetch.stop()
        assert time.monotonic() - started < 10
        assert runner.running() == []
        fetch.stop()  # twice is fine
        handed = fetch.hand_over(tmp_path / "archives-none")
    assert handed.files == 0 and handed.problem is not None


@needs_tools
def test_the_base_enters_the_shared_cache_only_as_its_index_entry_says(
        served: tuple[str, Path, Path], tmp_path: Path) -> None:
    url, pool, key = served
    apt = updated(url, key, tmp_path / "plan")
    entries = apt.show(packages("tool", "extra", "docs"))
    shared = tmp_path / "cache/archives"
    shared.mkdir(parents=True)
    (shared / "docs_0.5_all.deb").write_bytes(b"cached: not fetched again")
    for entry in entries:
        if entry["Package"] == "extra":  # an entry the download cannot match
            entry["SHA256"] = "0" * 64
    fetch = basefetch.BaseFetch(entries, shared, apt.env(), Runner(BuildLog()))
    assert [e["Package"] for e in fetch.entries] == ["tool", "extra"]
    fetched = fetch.start().wait()
    assert fetched is not None
    assert (fetched.files, fetched.bytes) == (1, (pool / "tool_1.0_amd64.deb").stat().st_size)
    assert fetched.problem == "left out: extra_1%3a2.0_all.deb (not as the index says)"
    assert sorted(p.name for p in shared.iterdir()) == ["docs_0.5_all.deb", "tool_1.0_amd64.deb"]
    assert (shared / "tool_1.0_amd64.deb").read_bytes() == (pool / "tool_1.0_amd64.deb"
                                                            ).read_bytes()
    assert not fetch.scratch.exists()
    assert "1 base packages" in fetched.summary()
    # All of it cached: nothing runs, nothing to report.
    entries = apt.show(packages("tool", "docs"))
    assert basefetch.BaseFetch(entries, shared, apt.env(), Runner(BuildLog())).start(
        ).wait() is None
