"""Layered builds: the base from the cache, only the hook's layer made anew, and the
stacked image boots with the layer's deletions and replacements in force.

Five builds of one config with SOURCE_DATE_EPOCH set: the first stores the
base (a unique host name makes its key new, so it is a miss on any machine),
the second only changes the hook (which writes to /etc/initramfs-tools, so
its initramfs is made anew) and takes the base from the cache, the third
changes nothing and must give the same ISO with the initramfs from the cache,
the fourth adds a package: the same base, apt installs it into a package
layer stored in the cache over it, and the initramfs comes from the cache
(nothing of it changed); the fifth changes nothing again and takes that layer
from the cache, with no apt run and the same ISO.
The second and fourth ISOs boot once each, and `deblive test --expect` checks
in the booted system what the hooks did (and the package layer's program).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.layers import (
    EXPECT,
    EXPECT_PACKAGE,
    HOOK_B,
    PACKAGE,
    forget_cached_bases,
    write_layered_config,
)

from .conftest import ARTIFACTS, Build, build, run_deblive


@dataclass
class Layered:
    first: Build
    second: Build
    third: Build
    fourth: Build
    fifth: Build

    def report(self, which: Build) -> dict[str, object]:
        data: dict[str, object] = json.loads(which.path("report.json").read_text())
        return data


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def layered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layered]:
    base = tmp_path_factory.mktemp("layered")
    config, hook = write_layered_config(base, "layertest", "lz4")
    os.environ["SOURCE_DATE_EPOCH"] = "1780000000"
    try:
        first = build(config, base / "1")
        assert first.returncode == 0, first.output[-4000:]
        hook.write_text(HOOK_B)
        second = build(config, base / "2")
        assert second.returncode == 0, second.output[-4000:]
        third = build(config, base / "3")
        assert third.returncode == 0, third.output[-4000:]
        config.write_text(config.read_text() + f"packages: [{PACKAGE}]\n")
        fourth = build(config, base / "4")
        assert fourth.returncode == 0, fourth.output[-4000:]
        fifth = build(config, base / "5")
        assert fifth.returncode == 0, fifth.output[-4000:]
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "layered-report.json").write_bytes(second.path("report.json").read_bytes())
    yield Layered(first, second, third, fourth, fifth)
    forget_cached_bases("layertest")


def test_the_first_build_stores_the_base_and_the_second_takes_it(layered: Layered) -> None:
    one, two = layered.report(layered.first), layered.report(layered.second)
    assert one["layout"] == two["layout"] == "layered"
    cache_one, cache_two = one["base_cache"], two["base_cache"]
    assert isinstance(cache_one, dict) and isinstance(cache_two, dict)
    assert cache_one["result"] == "miss"
    # New on this machine, or (an earlier session's entry left behind) another host name.
    reason = str(cache_one["reason"])
    assert reason == "no cached base for this image yet" or reason.endswith(": system"), reason
    assert cache_two["result"] == "hit" and cache_two["key"] == cache_one["key"]
    stages = two["stages"]
    assert isinstance(stages, list)
    cached = [s["name"] for s in stages if s["cached"]]
    assert cached == ["bootstrap", "chroot-setup", "packages", "users", "base-clean"]
    ran = [s["name"] for s in stages if not s["cached"]]
    assert ran[:4] == ["package-cache", "base", "medium-packages", "hook"]
    log = layered.second.path("build.log").read_text()
    assert f"stage bootstrap: from the base cache ({cache_one['key']})" in log
    assert f"base cache: hit {cache_one['key']}" in log
    # The lists the plan verified are copied into the overlay, not fetched again.
    assert "files from the plan's verified lists" in log
    # What the base stages learned is reported on a hit too.
    assert two["metapackage"] == one["metapackage"]
    assert isinstance(two["live_user"], dict) and two["live_user"]["password_hash"]


def test_nothing_changed_gives_the_same_iso_with_the_initramfs_cached(layered: Layered
                                                                    ) -> None:
    # The second hook writes to /etc/initramfs-tools: its initramfs is made, and kept
    # with the base (the first build's, made without that file, does not fit).
    assert "initramfs stored with the base" in layered.second.path("build.log").read_text()
    assert "initramfs from the cache: nothing it is made from changed" in \
        layered.third.path("build.log").read_text()
    assert _sha256(layered.third.iso) == _sha256(layered.second.iso)
    assert _sha256(layered.third.path("layer.squashfs")) == \
        _sha256(layered.second.path("layer.squashfs"))


def test_the_base_ships_nothing_of_the_build(layered: Layered) -> None:
    """The base is on the medium under the layer: it is cleaned as an image is."""
    listing = subprocess.run(
        ["unsquashfs", "-lln", str(layered.second.path("filesystem.squashfs"))],
        check=True, capture_output=True, text=True).stdout
    entries = {line.split()[-1].removeprefix("squashfs-root"): line[0]
               for line in listing.splitlines() if line[:1] in "-lcdbps"}
    assert entries.get("/var/lib/dpkg/status") == "-"
    lists = [n for n, kind in entries.items() if n.startswith("/var/lib/apt/lists/")
             and kind != "d" and n != "/var/lib/apt/lists/lock"]
    logs = [n for n, kind in entries.items() if n.startswith("/var/log/") and kind != "d"]
    keys = [n for n in entries if n.startswith("/etc/ssh/ssh_host_")]
    assert (lists, logs, keys) == ([], [], [])
    assert "/etc/apt/sources.list.d/deblive-build.sources" not in entries
    assert (layered.first.path("logs") / "base-dpkg.log").is_file()  # kept before the clean


def test_outputs_are_the_same_base_and_a_small_layer(layered: Layered) -> None:
    first, second = layered.first, layered.second
    assert _sha256(first.path("filesystem.squashfs")) == \
        _sha256(second.path("filesystem.squashfs"))
    assert second.path("filesystem.module").read_text() == \
        "filesystem.squashfs\nlayer.squashfs\n"
    layer = second.path("layer.squashfs").stat().st_size
    assert layer * 5 < second.path("filesystem.squashfs").stat().st_size
    assert first.path("filesystem.packages").read_text() == \
        second.path("filesystem.packages").read_text()
    listing = subprocess.run(
        ["xorriso", "-indev", str(second.iso), "-find", "/live", "-type", "f"],
        check=True, capture_output=True, text=True).stdout
    for name in ("filesystem.squashfs", "layer.squashfs", "filesystem.module"):
        assert f"'/live/{name}'" in listing, listing


def _boot(iso: Path, out: Path, commands: tuple[str, ...]) -> None:
    expect = [arg for command in commands for arg in ("--expect", command)]
    # bios-cd: the quickest boot under TCG; the stack of layers is the firmware's no matter.
    proc = run_deblive("test", iso, "--mode", "bios-cd", "--output", out, *expect,
                       timeout=1800)
    results = json.loads((out / "results.json").read_text())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checks = {c["name"]: c["ok"] for c in results["modes"][0]["checks"]}
    for command in commands:
        assert checks.get(f"expect: {command}") is True, checks


def test_the_layered_image_boots_with_the_layer_in_force(layered: Layered) -> None:
    _boot(layered.second.iso, ARTIFACTS / "boot-layered", EXPECT)


def test_an_added_package_goes_into_a_cached_layer_over_the_same_base(layered: Layered
                                                                     ) -> None:
    report = layered.report(layered.fourth)
    cache = report["base_cache"]
    assert isinstance(cache, dict)
    first_key = layered.report(layered.first)["base_cache"]["key"]  # type: ignore[index]
    assert (cache["result"], cache["extra_packages"], cache["base"]) == \
        ("hit", [PACKAGE], first_key)
    stored = cache["stored_layer"]
    assert stored == cache["key"] and cache["chain"] == [first_key, stored]
    log = layered.fourth.path("build.log").read_text()  # not wrapped, as the console is
    assert f"base cache: hit {first_key}, with packages on top: {PACKAGE}" in log
    assert f"package layer stored in the cache: {stored} over {first_key}" in log
    # hello's program and documentation are nothing the kept initramfs holds or reads.
    assert "initramfs from the cache: nothing it is made from changed" in log
    packages_layer = layered.fourth.path("layer-packages-1.squashfs")
    listing = subprocess.run(["unsquashfs", "-lln", str(packages_layer), "usr/bin"],
                             check=True, capture_output=True, text=True).stdout
    assert "squashfs-root/usr/bin/hello" in listing
    top = subprocess.run(["unsquashfs", "-lln", str(layered.fourth.path("layer.squashfs")),
                          "usr/bin"], check=True, capture_output=True, text=True).stdout
    assert "hello" not in top  # the hook's layer holds only what came after the packages
    assert layered.fourth.path("filesystem.module").read_text() == \
        "filesystem.squashfs\nlayer-packages-1.squashfs\nlayer.squashfs\n"
    assert f"{PACKAGE}\t" in layered.fourth.path("filesystem.packages").read_text()
    assert _sha256(layered.fourth.path("filesystem.squashfs")) == \
        _sha256(layered.first.path("filesystem.squashfs"))
    assert (layered.fourth.path("logs") / "packages-dpkg.log").is_file()  # kept before the clean


def test_the_same_config_again_takes_the_package_layer_from_the_cache(layered: Layered
                                                                     ) -> None:
    fourth = layered.report(layered.fourth)["base_cache"]
    fifth = layered.report(layered.fifth)
    cache = fifth["base_cache"]
    assert isinstance(fourth, dict) and isinstance(cache, dict)
    assert (cache["result"], cache["extra_packages"], cache["stored_layer"]) == ("hit", [], None)
    assert cache["base"] == fourth["stored_layer"] and cache["chain"] == fourth["chain"]
    stages = fifth["stages"]
    assert isinstance(stages, list)
    assert "package-layer" not in [s["name"] for s in stages]
    log = layered.fifth.path("build.log").read_text()
    assert f"a package layer over {fourth['chain'][0]}" in log
    assert "installing on the cached base" not in log  # no apt run for the packages
    assert not (layered.fifth.path("logs") / "packages-dpkg.log").exists()
    assert _sha256(layered.fifth.iso) == _sha256(layered.fourth.iso)


def test_the_image_with_a_package_layer_boots_with_all_three_in_force(layered: Layered
                                                                     ) -> None:
    _boot(layered.fourth.iso, ARTIFACTS / "boot-package-layer", EXPECT_PACKAGE)
