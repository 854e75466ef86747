"""The base cache: its key, the miss reasons, entries, pruning, and the pipeline's skip."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import pytest

from deblive.apt.indexes import index_digest
from deblive.build import basecache, pipeline
from deblive.build.context import BuildContext, WorkTree
from deblive.build.stage import Stage
from deblive.build.stages import squash
from deblive.build.stages.packagelayer import PackageLayer
from deblive.cli import main
from deblive.cli.commands import parse_size
from deblive.core.errors import BadInputError
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.host import sandbox
from deblive.model.config import ConfigError
from tests.unit import conftest

PACKAGES = ["base-files=12.4+deb12u5", "bash=5.2.15-2+b2", "live-boot=1:20230131+deb12u1"]


def inputs(data: dict[str, Any], packages: list[str] = PACKAGES,
           indexes: str = "i1") -> basecache.BaseInputs:
    return basecache.base_inputs(conftest.parse({"name": "demo", **data}), packages, indexes)


def test_keys_after_the_base_do_not_change_it(tmp_path: Path) -> None:
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    plain = inputs({}).key
    assert inputs({"hook": str(hook)}).key == plain
    assert inputs({"boot": {"title": "Other"}}).key == plain
    assert inputs({"squashfs": {"layout": "layered"}}).key == plain
    assert inputs({"apt_mirror": "http://apt.example.org/debian"}).key == plain
    assert inputs({}, indexes="i1").key == plain  # the same inputs, the same key


@pytest.mark.parametrize(("change", "named"), [
    ({"hostname": "other"}, "system"),
    ({"locale": "de_DE.UTF-8"}, "system"),
    ({"user": {"password": "another1"}}, "user"),
    ({"squashfs": {"compression": "lz4"}}, "squashfs"),
    ({"bootstrap": {"variant": "standard"}}, "bootstrap"),
    ({"mirror": "http://127.0.0.1:9/debian"}, "mirror"),
])
def test_a_changed_input_is_a_miss_that_names_it(change: dict[str, Any], named: str) -> None:
    before, after = inputs({}), inputs(change)
    assert before.key != after.key
    assert after.changed_from(before.as_dict(), list(before.packages)) == [named]


def test_new_package_versions_and_extras_are_named() -> None:
    before = inputs({})
    after = inputs({"packages": ["hello"]}, [*PACKAGES[:2], "hello=2.10-3",
                                             "live-boot=1:20230131+deb12u2"])
    changed = after.changed_from(before.as_dict(), list(before.packages))
    assert changed == ["selection", "packages +hello ~live-boot"]
    newer_index = inputs({}, indexes="i2")
    assert newer_index.changed_from(before.as_dict(), list(before.packages)) == ["indexes"]


def test_the_password_is_not_in_the_entry_in_clear() -> None:
    parts = json.dumps(inputs({"user": {"password": "sekrit123"}}).as_dict())
    assert "sekrit123" not in parts
    assert basecache.password_digest("sekrit123") != basecache.password_digest("sekrit124")


def _in_release(date: str, packages_sha: str) -> str:
    return (f"Origin: Debian\nSuite: stable\nCodename: bookworm\nDate: {date}\n"
            "Architectures: amd64 arm64\nComponents: main\nSHA256:\n"
            f" {packages_sha} 1000 main/binary-amd64/Packages\n"
            f" {'c' * 64} 900 main/binary-arm64/Packages\n"
            f" {'d' * 64} 300 main/i18n/Translation-en\n")


def test_index_digest_follows_the_indexes_not_the_date(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    release = lists / "mirror_debian_dists_bookworm_InRelease"
    release.write_text(_in_release("Sat, 01 Nov 2026", "a" * 64))
    first = index_digest(lists, "amd64")
    release.write_text(_in_release("Sat, 08 Nov 2026", "a" * 64))
    assert index_digest(lists, "amd64") == first  # a new Date alone
    release.write_text(_in_release("Sat, 08 Nov 2026", "b" * 64))
    assert index_digest(lists, "amd64") != first  # a new amd64 Packages index
    assert index_digest(lists, "arm64") != index_digest(lists, "amd64")


def _store(cache: basecache.BaseCache, tmp_path: Path, hostname: str, size: int,
           used: float) -> basecache.Entry:
    made = tmp_path / f"{hostname}.squashfs"
    made.write_bytes(b"s" * size)
    entry = cache.store(inputs({"hostname": hostname}), made, "demo", {"metapackage": None})
    os.utime(entry.directory, (used, used))
    return entry


def test_entries_are_stored_whole_and_pruned_least_recently_used_first(tmp_path: Path) -> None:
    cache = basecache.BaseCache(tmp_path / "cache")
    old = _store(cache, tmp_path, "old", 3000, 1_000_000)
    mid = _store(cache, tmp_path, "mid", 3000, 2_000_000)
    new = _store(cache, tmp_path, "new", 3000, 3_000_000)
    assert [e.key for e in cache.entries()] == [new.key, mid.key, old.key]
    assert not list((tmp_path / "cache/bases").glob(".*.tmp"))
    meta = json.loads((new.directory / "meta.json").read_text())
    assert meta["image"] == "demo" and meta["packages"] == sorted(PACKAGES)
    assert cache.newest_for("demo") == new and cache.newest_for("other") is None
    with cache.using(old.key):  # a running build holds the oldest: it stays
        removed = cache.prune(4000)
    assert [e.key for e in removed] == [mid.key, new.key]
    assert [e.key for e in cache.entries()] == [old.key]
    assert cache.prune(0) == [old] and cache.entries() == []


def test_prune_stops_as_soon_as_the_rest_fits(tmp_path: Path) -> None:
    cache = basecache.BaseCache(tmp_path / "cache")
    entries = [_store(cache, tmp_path, name, 3000, used)
               for name, used in (("old", 1_000_000), ("mid", 2_000_000), ("new", 3_000_000))]
    size = entries[0].size
    assert [e.key for e in cache.prune(2 * size)] == [entries[0].key]
    assert [e.key for e in cache.entries()] == [entries[2].key, entries[1].key]


def test_a_second_store_of_the_same_inputs_keeps_the_first(tmp_path: Path) -> None:
    cache = basecache.BaseCache(tmp_path / "cache")
    first = _store(cache, tmp_path, "same", 100, 1_000_000)
    second = _store(cache, tmp_path, "same", 200, 1_000_000)
    assert second.directory == first.directory and second.squashfs.stat().st_size == 100
    assert not (tmp_path / "same.squashfs").exists()


def test_a_half_written_entry_is_not_an_entry(tmp_path: Path) -> None:
    cache = basecache.BaseCache(tmp_path / "cache")
    (cache.root / "abc").mkdir(parents=True)
    (cache.root / "abc" / "base.squashfs").write_bytes(b"x")  # no meta.json yet
    assert cache.entry("abc") is None and cache.entries() == []


def test_cache_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = basecache.BaseCache(tmp_path / "c")
    assert main(["cache", "--cache-dir", str(tmp_path / "c"), "list"]) == 0
    assert "no cached base trees" in capsys.readouterr().out
    entry = _store(cache, tmp_path, "one", 2 * 2**20, 1_000_000)
    assert main(["cache", "--cache-dir", str(tmp_path / "c"), "list"]) == 0
    out = capsys.readouterr().out
    assert entry.key in out and "demo: bookworm amd64, 3 packages" in out
    assert main(["cache", "--cache-dir", str(tmp_path / "c"), "prune", "--max-size", "1G"]) == 0
    assert cache.entries() == [entry]
    assert main(["cache", "--cache-dir", str(tmp_path / "c"), "prune"]) == 0
    assert f"removed {entry.key}" in capsys.readouterr().out and cache.entries() == []


def test_parse_size() -> None:
    assert parse_size("1500") == 1500
    assert parse_size("200M") == 200 * 2**20
    assert parse_size("2GiB") == 2 * 2**30
    with pytest.raises(BadInputError, match="500M or 2G"):
        parse_size("lots")


def test_layout_is_validated() -> None:
    with pytest.raises(ConfigError) as info:
        conftest.parse({"name": "demo", "squashfs": {"layout": "stacked"}})
    assert "squashfs.layout" in str(info.value) and "'flat'" in str(info.value)


class _Recorder(Stage):
    ran: ClassVar[list[str]] = []

    def run(self, ctx: BuildContext) -> None:
        self.ran.append(self.name)


class _InBase(_Recorder):
    name = "made-in-base"
    in_base = True


class _After(_Recorder):
    name = "after-base"


def test_a_hit_skips_the_base_stages_and_says_so(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    log = BuildLog()
    log.open(tmp_path / "build.log")
    ctx = BuildContext(conftest.parse({"name": "t"}), log, Runner(log), WorkTree(tmp_path / "w"),
                       tmp_path / "out", tmp_path / "cache", make_iso=False)
    cache = basecache.BaseCache(tmp_path / "cache")
    ctx.base_hit = _store(cache, tmp_path, "hit", 10, 1_000_000)
    monkeypatch.setattr(pipeline, "STAGES", (_InBase(), _After()))
    _Recorder.ran.clear()
    pipeline.run_stages(ctx)
    log.close()
    assert _Recorder.ran == ["after-base"] and ctx.cached_stages == ["made-in-base"]
    assert f"stage made-in-base: from the base cache ({ctx.base_hit.key})" in \
        (tmp_path / "build.log").read_text()


def test_overlay_layers_must_be_plain_paths(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(sandbox.SandboxError, match="private mount namespace"), \
            sandbox.overlay(tmp_path, tmp_path / "u", tmp_path / "w", tmp_path / "m"):
        pass
    monkeypatch.setattr(sandbox, "in_private_namespace", lambda: True)
    with pytest.raises(sandbox.SandboxError, match="cannot name an overlay layer"), \
            sandbox.overlay(tmp_path / "a,b", tmp_path / "u", tmp_path / "w", tmp_path / "m"):
        pass
    with pytest.raises(sandbox.SandboxError, match="a:b: a path with"), \
            sandbox.overlay([tmp_path / "top", tmp_path / "a:b"], tmp_path / "u",
                            tmp_path / "w", tmp_path / "m"):
        pass
    with pytest.raises(sandbox.SandboxError, match="at least one lower"), \
            sandbox.overlay([], tmp_path / "u", tmp_path / "w", tmp_path / "m"):
        pass
    assert not (tmp_path / "u").exists()  # refused before anything was made



def test_prune_removes_what_killed_builds_left(tmp_path: Path) -> None:
    cache = basecache.BaseCache(tmp_path / "cache")
    cache.root.mkdir(parents=True)
    gone = 4_000_000 + (os.getpid() % 1000)  # above pid_max: never alive
    stale = [cache.root / f".k1.{gone}.squashfs.partial", cache.root / f".k2.{gone}.tmp"]
    stale[0].write_bytes(b"half")
    stale[1].mkdir()
    (stale[1] / "base.squashfs").write_bytes(b"x")
    mine = cache.root / f".k3.{os.getpid()}.squashfs"
    mine.write_bytes(b"in progress")
    lock = cache.root / ".k1.lock"
    lock.write_bytes(b"")
    assert cache.leftovers() == sorted(stale)
    cache.prune(0)
    assert not any(p.exists() for p in stale) and mine.exists() and lock.exists()


def test_a_base_with_fewer_packages_is_a_parent(tmp_path: Path) -> None:
    cache = basecache.BaseCache(tmp_path / "cache")
    asked = ("bash", "live-boot")
    parent_inputs = basecache.base_inputs(conftest.parse({"name": "demo"}), PACKAGES, "i1", asked)
    made = tmp_path / "p.squashfs"
    made.write_bytes(b"p")
    parent = cache.store(parent_inputs, made, "demo", {})
    more = [*PACKAGES, "hello=2.10-3", "libfoo1=1.0"]

    def child(data: dict[str, Any], packages: list[str], requested: tuple[str, ...],
              indexes: str = "i1") -> basecache.BaseInputs:
        return basecache.base_inputs(conftest.parse({"name": "demo", **data}), packages,
                                     indexes, requested)

    found = cache.parent_for(child({"packages": ["hello"]}, more, (*asked, "hello")))
    assert found == (parent, ["hello"])
    # Anything else changed, a package removed, or a newer index: no parent.
    assert cache.parent_for(child({"packages": ["hello"], "hostname": "x"}, more,
                                  (*asked, "hello"))) is None
    assert cache.parent_for(child({"packages": ["hello"]}, more[1:], ("live-boot", "hello"))
                            ) is None
    assert cache.parent_for(child({"packages": ["hello"]}, more, (*asked, "hello"), "i2")
                            ) is None
    # The same packages: that is the entry itself (a hit), not a parent.
    assert cache.parent_for(parent_inputs) is None


def test_binary_indexes_in_any_compression_and_flat_archives_count() -> None:
    from deblive.apt.indexes import is_binary_index

    for name in ("main/binary-amd64/Packages", "main/binary-amd64/Packages.xz",
                 "main/binary-all/Packages.gz", "Packages", "Packages.gz"):
        assert is_binary_index(name, "amd64"), name
    for name in ("main/binary-arm64/Packages", "main/source/Sources.xz",
                 "main/i18n/Translation-en", "main/binary-amd64/Release", "Contents-amd64"):
        assert not is_binary_index(name, "amd64"), name


def test_a_package_layer_stands_on_its_base_and_goes_with_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = basecache.BaseCache(tmp_path / "cache")
    asked = ("bash", "live-boot")

    def stored(packages: list[str], requested: tuple[str, ...],
               parent: basecache.Entry | None, used: float) -> basecache.Entry:
        extra = sorted(set(requested) - set(asked))
        made = tmp_path / f"{'-'.join(extra) or 'base'}.squashfs"
        made.write_bytes(b"l" * 1000)
        entry = cache.store(
            basecache.base_inputs(conftest.parse({"name": "demo", "packages": extra}),
                                  packages, "i1", requested), made, "demo", {}, parent)
        os.utime(entry.directory, (used, used))
        return entry

    base = stored(PACKAGES, asked, None, 1_000_000)
    hello = stored([*PACKAGES, "hello=2.10-3"], (*asked, "hello"), base, 2_000_000)
    assert (hello.parent, base.parent) == (base.key, None)
    assert cache.chain(hello) == [base, hello] and cache.chain(base) == [base]
    assert main(["cache", "--cache-dir", str(tmp_path / "cache"), "list"]) == 0
    assert f"a package layer over {base.key}" in capsys.readouterr().out
    # One more package: the layer with hello is the nearest start, a chain of three.
    more = basecache.base_inputs(conftest.parse({"name": "demo", "packages": ["hello", "jq"]}),
                                 [*PACKAGES, "hello=2.10-3", "jq=1.6-2.1"], "i1",
                                 (*asked, "hello", "jq"))
    assert cache.parent_for(more) == (hello, ["jq"])
    jq = stored(list(more.packages), more.requested, hello, 3_000_000)
    assert cache.chain(jq) == [base, hello, jq]
    # A chain as long as MAX_CHAIN takes no further layer.
    fourth = stored([*more.packages, "aa=1"], (*more.requested, "aa"), jq, 4_000_000)
    assert len(cache.chain(fourth) or []) == basecache.MAX_CHAIN
    fifth = basecache.base_inputs(
        conftest.parse({"name": "demo", "packages": ["aa", "bb", "hello", "jq"]}),
        [*more.packages, "aa=1", "bb=1"], "i1", (*more.requested, "aa", "bb"))
    assert cache.parent_for(fifth) == (jq, ["aa", "bb"])
    # Pruning the least recently used base takes the layers over it too, the top first.
    assert [e.key for e in cache.prune(0)] == [fourth.key, jq.key, hello.key, base.key]
    # A layer whose base is gone (an older deblive's prune) is no entry's tree: removed.
    base = stored(PACKAGES, asked, None, 1_000_000)
    hello = stored([*PACKAGES, "hello=2.10-3"], (*asked, "hello"), base, 2_000_000)
    assert cache.remove(base)
    assert cache.chain(hello) is None
    # A build whose inputs are the orphan's (it could not use it: a miss) stores a whole
    # base under the same key, in its place.
    made = tmp_path / "whole.squashfs"
    made.write_bytes(b"w")
    hello_inputs = basecache.base_inputs(
        conftest.parse({"name": "demo", "packages": ["hello"]}), [*PACKAGES, "hello=2.10-3"],
        "i1", (*asked, "hello"))
    whole = cache.store(hello_inputs, made, "demo", {})
    assert whole.key == hello.key and whole.parent is None and cache.chain(whole) == [whole]
    assert whole.squashfs.read_bytes() == b"w"
    assert cache.remove(whole)
    base = stored(PACKAGES, asked, None, 1_000_000)
    hello = stored([*PACKAGES, "hello=2.10-3"], (*asked, "hello"), base, 2_000_000)
    assert cache.remove(base)
    assert cache.prune(10**9) == [hello] and cache.entries() == []


def test_the_base_chain_goes_to_live_in_the_order_live_boot_stacks_it(tmp_path: Path) -> None:
    log = BuildLog()
    ctx = BuildContext(conftest.parse({"name": "t"}), log, Runner(log), WorkTree(tmp_path / "w"),
                       tmp_path / "out", tmp_path / "cache", make_iso=False)
    ctx.work.output.mkdir(parents=True)
    sources = [tmp_path / f"{n}.squashfs" for n in ("base", "hello", "jq")]
    for source in sources:
        source.write_bytes(source.name.encode())
    ctx.base_squashfs = sources
    names = squash.copy_base(ctx)
    assert names == ["filesystem.squashfs", "layer-packages-1.squashfs",
                     "layer-packages-2.squashfs"]
    assert [(ctx.work.output / n).read_bytes() for n in names] == [s.name.encode()
                                                                   for s in sources]
    # Without filesystem.module, live-boot stacks /live's images sorted by name.
    assert sorted([*names, squash.LAYER]) == [*names, squash.LAYER]
    assert not os.path.samefile(sources[0], ctx.work.output / names[0])  # copies, not links


def test_an_entry_of_another_kind_under_the_key_is_no_stand_in(tmp_path: Path) -> None:
    """Two builds race for one key, one with a whole base, one with a package layer:
    the second is told so and keeps its squashfs, never gets the first's entry."""
    cache = basecache.BaseCache(tmp_path / "cache")
    made = tmp_path / "below.squashfs"
    made.write_bytes(b"below")
    below = cache.store(inputs({"hostname": "below"}), made, "demo", {})
    key_inputs = inputs({"hostname": "raced"})
    layer = tmp_path / "layer.squashfs"
    layer.write_bytes(b"layer")
    stored = cache.store(key_inputs, layer, "demo", {}, parent=below)
    assert stored.parent == below.key
    whole = tmp_path / "whole.squashfs"
    whole.write_bytes(b"whole")
    with pytest.raises(basecache.KeyTakenError, match="another kind of entry"):
        cache.store(key_inputs, whole, "demo", {})
    assert whole.read_bytes() == b"whole"  # left where it was, for the build's own use
    assert cache.entry(key_inputs.key) == stored and stored.squashfs.read_bytes() == b"layer"
    # The same kind (a layer over the same entry) is the same entry: it stands in.
    again = tmp_path / "again.squashfs"
    again.write_bytes(b"layer")
    assert cache.store(key_inputs, again, "demo", {}, parent=below) == stored
    assert not list(cache.root.glob(".*.tmp"))


def test_a_package_layer_the_cache_would_not_take_is_stacked_from_the_work_tree(
        tmp_path: Path) -> None:
    log = BuildLog()
    ctx = BuildContext(conftest.parse({"name": "t"}), log, Runner(log), WorkTree(tmp_path / "w"),
                       tmp_path / "out", tmp_path / "cache", make_iso=False)
    ctx.work.root.mkdir()
    cache = basecache.BaseCache(tmp_path / "cache")
    below = _store(cache, tmp_path, "below", 10, 1_000_000)
    layer = tmp_path / "made.layer"
    layer.write_bytes(b"layer")
    own = PackageLayer._keep_own(ctx, layer, below, "taken")
    assert own.parent == below.key and own.squashfs.read_bytes() == b"layer"
    assert own.directory.is_relative_to(ctx.work.root) and not layer.exists()
    assert cache.entries() == [below]  # the cache never lists it
