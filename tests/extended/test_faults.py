"""Extended tier: fault injection into real builds, every stage, every signal, every fault.

Run as root with `make test-extended` (or pytest tests/extended/test_faults.py).
Each case starts a real build (own work directory under /var/tmp/deblive-faults,
own package cache), hits it, and checks the host afterwards (faultkit's module
docstring lists the checks). The CI tier runs a cheap subset of these
(tests/integration/test_faults.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deblive.build import basecache
from tests.extended import faultkit as fk

pytestmark = pytest.mark.extended

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
# Seconds to wait after "stage X: start" before the signal: long enough to be
# inside the stage's long command, short enough that the stage has not ended
# (the iso stage's xorriso takes about a second on the default image).
DELAY = {"bootstrap": 3.0, "packages": 8.0, "hook": 2.0, "squash": 5.0, "iso": 0.0}
TIMES: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="session", autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("fault injection builds images and must run as root")


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fk.WORK_BASE.mkdir(parents=True, exist_ok=True)
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def configs(base: Path) -> dict[str, Path]:
    """The image per stage: a slow hook for the hook stage, xz to make squash last."""
    return {
        "bootstrap": fk.write_config(base, "x-boot"),
        "packages": fk.write_config(base, "x-pkgs"),
        "hook": fk.write_config(base, "x-hook", hook=fk.SLOW_HOOK),
        "squash": fk.write_config(base, "x-squash", compression="xz"),
        "iso": fk.write_config(base, "x-iso"),
    }


@pytest.fixture(scope="session")
def mirror() -> Iterator[fk.FaultMirror]:
    server = fk.FaultMirror(fk.host_mirror())
    yield server
    server.close()


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("stage", list(DELAY))
def test_signal_at_stage(stage: str, sig: signal.Signals, configs: dict[str, Path]) -> None:
    times = fk.signal_case(configs[stage], f"x-{stage}-{sig.name.lower()}", stage, sig,
                           delay=DELAY[stage])
    TIMES[f"{stage}/{sig.name}"] = times
    if sig == signal.SIGKILL:
        assert times["stop"] < 5


def test_second_signal_during_teardown_does_not_cut_it_short(configs: dict[str, Path]) -> None:
    """Ctrl-C twice: the second is ignored while the teardown runs; still 130, still clean."""
    workdir, outdir = fk.case_dirs("x-double")
    with fk.host_checked(workdir, outdir) as check:
        run = fk.start_build(configs["hook"], "x-double", "--no-iso", workdir=workdir,
                             outdir=outdir)
        run.wait_for(r"stage hook: start")
        run.remember_namespace()
        time.sleep(1)
        run.kill(signal.SIGINT)
        time.sleep(0.05)
        run.kill(signal.SIGINT)
        code = run.finish(timeout=120)
        assert code == 130, run.output[-3000:]
        assert "mounts below the work tree after teardown: 0" in run.output
        assert "interrupted by SIGINT in stage hook" in run.output
        check(run)
    fk.remove_tree(workdir)
    fk.remove_tree(outdir)


def test_lock_refuses_a_second_build_then_clean_all(configs: dict[str, Path]) -> None:
    workdir, outdir = fk.case_dirs("x-lock")
    run = fk.start_build(configs["bootstrap"], "x-lock", "--no-iso", workdir=workdir,
                         outdir=outdir)
    try:
        run.wait_for(r"stage bootstrap: start")
        second = fk.run_cli("build", configs["bootstrap"], "-o", f"{outdir}-2", "--workdir",
                            workdir, "--cache-dir", fk.CACHE)
        assert second.returncode == 2
        assert f"(PID {run.deblive_pid()})" in second.stderr
        # `deblive clean` without WORKDIR skips the busy tree, naming the holder.
        env_base = str(fk.WORK_BASE)
        cleaned = subprocess.run(
            [*fk.DEBLIVE, "clean"], capture_output=True, text=True, cwd=fk.REPO,
            env=dict(os.environ, DEBLIVE_WORKDIR=env_base),
        )
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
        assert f"{workdir}: kept: work directory {workdir} is in use" in cleaned.stdout
        assert workdir.is_dir()
        run.kill(signal.SIGTERM)
        assert run.finish(timeout=120) == 143
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    fk.remove_tree(workdir)
    fk.remove_tree(outdir)
    fk.remove_tree(Path(f"{outdir}-2"))


# -- a full disk -------------------------------------------------------------------------


def test_disk_full_in_packages(configs: dict[str, Path]) -> None:
    code, out = fk.disk_case(configs["packages"], "x-disk-apt", "450m", None, 0, ("--no-iso",))
    assert code == 1, out[-4000:]
    assert "deblive: error: disk full: no space left on the device in stage packages" in out
    assert "AFTER: rootfs kept" in out


def test_not_enough_space_for_the_squashfs_is_found_before_it_starts(
    configs: dict[str, Path],
) -> None:
    code, out = fk.disk_case(configs["squash"], "x-disk-precheck", "1400m", "clean", 60,
                             ("--no-iso",))
    assert code == 1, out[-4000:]
    assert "deblive: error: not enough free space for the squashfs: " in out, out[-4000:]
    assert "stage squash: start" not in out
    assert "AFTER: rootfs kept" in out
    after = out.split("AFTER: output", 1)[1].splitlines()[0]
    assert "squashfs" not in after, after


def test_disk_fills_while_mksquashfs_writes(configs: dict[str, Path]) -> None:
    code, out = fk.disk_case(configs["squash"], "x-disk-squash", "1400m", "squash", 20,
                             ("--no-iso",))
    assert code == 1, out[-4000:]
    assert "deblive: error: disk full: mksquashfs ran out of space writing " in out, out[-4000:]
    assert "the partial squashfs was removed; the root filesystem is kept at " in out
    after = out.split("AFTER: output", 1)[1].splitlines()[0]
    assert "squashfs" not in after, after
    assert "AFTER: rootfs kept" in out


def test_disk_fills_while_xorriso_writes(configs: dict[str, Path]) -> None:
    code, out = fk.disk_case(configs["iso"], "x-disk-iso", "1600m", "iso", 40)
    assert code == 1, out[-4000:]
    assert "deblive: error: disk full: xorriso ran out of space writing " in out, out[-4000:]
    assert "the partial ISO was removed" in out
    after = out.split("AFTER: output", 1)[1].splitlines()[0]
    assert ".iso" not in after, after
    assert "AFTER: rootfs kept" in out


def test_the_tree_outgrows_its_memory(configs: dict[str, Path]) -> None:
    """The tree in RAM with a 300 MiB cap: ENOSPC while apt unpacks, named as the tree's
    memory (not a disk), the tree saved from RAM to the work tree, the host intact."""
    workdir, outdir = fk.case_dirs("x-ram-full")
    with fk.host_checked(workdir, outdir) as check:
        run = fk.start_build(configs["packages"], "x-ram-full", "--no-iso", "--tree", "ram",
                             workdir=workdir, outdir=outdir, env={"DEBLIVE_TREE_RAM_MAX": "300"})
        run.wait_for(r"stage bootstrap: start")
        run.remember_namespace()
        code = run.finish(timeout=1200)
        check(run)
    out = run.output
    assert code == 1, out[-4000:]
    assert "image tree in RAM (tmpfs, at most 300 MiB): asked for (--tree ram)" in out
    assert ("deblive: error: the image tree outgrew its memory in stage packages: the tmpfs "
            "it is built in (at most 300 MiB) is full; build it on disk with --tree disk"
            ) in out, out[-4000:]
    assert f"image tree copied from RAM to {workdir}/rootfs for inspection" in out
    assert (workdir / "rootfs/etc/os-release").is_file()
    assert not os.path.ismount(workdir / "rootfs")
    assert "mounts below the work tree after teardown: 0" in out
    fk.remove_tree(workdir)
    fk.remove_tree(outdir)


# -- mirror faults -----------------------------------------------------------------------


def _mirror_build(config: Path, name: str, url: str) -> tuple[int, str, str]:
    workdir, outdir = fk.case_dirs(name)
    with fk.host_checked(workdir, outdir) as check:
        proc = fk.run_cli("build", config, "--mirror", url, "--no-iso", "-o", outdir,
                          "--workdir", workdir, "--cache-dir", fk.CACHE, timeout=1200)
        check(None)
    fk.remove_tree(workdir)
    fk.remove_tree(outdir)
    return proc.returncode, fk.error_line(proc.stderr), proc.stdout + proc.stderr


def test_mirror_down(configs: dict[str, Path]) -> None:
    url = f"http://127.0.0.1:{fk.free_port()}/debian"
    code, first, out = _mirror_build(configs["bootstrap"], "x-mirror-down", url)
    assert code == 2, out
    assert first.startswith(f"deblive: error: mirror {url} is unreachable: {url}/dists/")


@pytest.mark.parametrize(("fault", "words", "where"), [
    ("corrupt-packages", "hash sum mismatch", "/binary-amd64/"),
    ("bad-signature", "bad signature on the Release file", " InRelease"),
    ("no-signature", "is not signed", "/Release"),
])
def test_mirror_serves_bad_files(fault: str, words: str, where: str,
                                 configs: dict[str, Path], mirror: fk.FaultMirror) -> None:
    url = mirror.url(fault)
    code, first, out = _mirror_build(configs["bootstrap"], f"x-mirror-{fault}", url)
    assert code == 2, out
    assert first.startswith(f"deblive: error: mirror {url}: "), out
    assert words in first and where in first, first


def test_mirror_loses_a_package_mid_build(base: Path, mirror: fk.FaultMirror) -> None:
    """404 for one .deb: found only when apt downloads it, in the packages stage."""
    for cached in fk.CACHE.glob("archives/hello_*.deb"):
        cached.unlink()
    config = fk.write_config(base, "x-404", "packages: [hello]\n")
    url = mirror.url("pool-404")
    code, first, out = _mirror_build(config, "x-mirror-404", url)
    assert code == 1, out[-4000:]
    assert first.startswith(f"deblive: error: mirror {url}: file not found (HTTP 404): "
                            f"{url}/pool/"), out[-4000:]
    assert "hello_" in first


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", fk.BAD_CONFIGS, ids=lambda c: c.id)
def test_bad_config(case: fk.BadConfig, base: Path) -> None:
    fk.bad_config_case(case, base / "bad")


TRAP_HOOK = """\
#!/bin/sh
# Every kind of trap a package or a careless hook can leave for host-side code.
set -eu
S=__SENTINEL__
ln -sfn "$S/file" "$1/etc/machine-id"                     # absolute link out
ln -sfn ../../../../../../../../../../"$S/file" "$1/var/log/dpkg.log"  # relative escape
rm -rf "$1/etc/ssh" && ln -sfn "$S/dir" "$1/etc/ssh"       # a linked parent directory
ln -sfn "$S/dir" "$1/var/lib/apt/lists/partial"
mkfifo "$1/var/log/apt/term.log.fifo"                     # a reader would block
rm -f "$1/var/log/apt/history.log" && mkfifo "$1/var/log/apt/history.log"
mknod "$1/var/cache/apt/archives/partial/disk" b 8 0       # a device node to empty
ln -sfn "$S/file" "$1/etc/apt/sources.list.d/planted.list"
ln -sfn "$S/file" "$1/var/cache/debconf/config.dat-old"
ln -sfn /proc/self/root/etc/shadow "$1/etc/deblive-magic"  # a magic link
echo "traps planted"
"""


def test_a_hook_that_plants_every_kind_of_trap(base: Path, tmp_path: Path) -> None:
    """Links out (absolute, relative, through a linked parent, magic), FIFOs and device
    nodes where the later stages work: the build succeeds and the host is untouched."""
    sentinel = tmp_path / "host"
    (sentinel / "dir").mkdir(parents=True)
    (sentinel / "dir" / "ssh_host_rsa_key").write_text("host key\n")
    (sentinel / "file").write_text("host file\n")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sentinel.rglob("*")
              if p.is_file()}
    config = fk.write_config(base, "x-traps", hook=TRAP_HOOK.replace(
        "__SENTINEL__", str(sentinel)))
    workdir, outdir = fk.case_dirs("x-traps")
    with fk.host_checked(workdir, None) as check:  # a success: outdir holds the results
        proc = fk.run_cli("build", config, "-o", outdir, "--workdir", workdir, "--cache-dir",
                          fk.CACHE, timeout=3600)
        check(None)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    build_log = (outdir / "build.log").read_text()
    assert "[hook] | traps planted" in build_log
    for log in ("/var/log/dpkg.log", "/var/log/apt/history.log"):
        assert f"{log} in the image is not a regular file: not kept in logs/" in out
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sentinel.rglob("*")
             if p.is_file()}
    assert after == before
    leaked = [p for p in outdir.rglob("*") if p.is_file() and not p.is_symlink()
              and (b"host file" in p.read_bytes() or b"host key" in p.read_bytes())]
    assert leaked == []
    fk.remove_tree(outdir)


@pytest.fixture(scope="session")
def layered_config(base: Path) -> Path:
    """A layered image whose base is in the faults' cache (its host name new to this
    run, so the base is this run's own): later builds add a package over it."""
    config = base / "x-layer.yaml"
    config.write_text(f"name: x-layer\nhostname: x-layer-{os.getpid()}\n"
                      "squashfs: {compression: lz4, layout: layered}\n")
    workdir, outdir = fk.case_dirs("x-layer")
    proc = fk.run_cli("build", config, "--no-iso", "-o", outdir, "--workdir", workdir,
                      "--cache-dir", fk.CACHE, timeout=3600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    fk.remove_tree(outdir)
    config.write_text(config.read_text() + "packages: [hello]\n")
    return config


def _cached_keys() -> set[str]:
    return {e.key for e in basecache.BaseCache(fk.CACHE).entries()}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_signal_while_a_package_layer_is_made(sig: signal.Signals, layered_config: Path
                                              ) -> None:
    """Killed while apt installs a package over a cached base: the chroot's mounts, the
    overlay and the base's loop device go with the build, and no layer is stored."""
    before = _cached_keys()
    times = fk.signal_case(layered_config, f"x-layer-{sig.name.lower()}", "package-layer", sig,
                           delay=0.5)
    TIMES[f"package-layer/{sig.name}"] = times
    assert _cached_keys() == before


def test_after_the_signals_the_package_layer_is_made_and_used(layered_config: Path) -> None:
    workdir, outdir = fk.case_dirs("x-layer-after")
    with fk.host_checked(workdir, None) as check:
        for _ in range(2):  # stores the layer, then takes it
            proc = fk.run_cli("build", layered_config, "--no-iso", "-o", outdir, "--workdir",
                              workdir, "--cache-dir", fk.CACHE, "--force", timeout=3600)
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        check(None)
    report = json.loads((outdir / "report.json").read_text())
    cache = report["base_cache"]
    assert cache["result"] == "hit" and cache["extra_packages"] == [], cache
    assert len(cache["chain"]) == 2 and cache["base"] == cache["chain"][1], cache
    fk.remove_tree(outdir)


def test_zz_report_times() -> None:
    """Not a check: prints the measured times for the report (runs last)."""
    for key, value in sorted(TIMES.items()):
        print(f"{key}: reached after {value['reach']:.1f} s, stopped {value['stop']:.2f} s "
              "after the signal")
