"""CI subset of the fault injection (all cases: tests/extended/test_faults.py).

Cheap on purpose: every bad config (seconds), one kill per signal in the early
stages, the work-dir lock and the mirror faults found before the build starts
(full disks are in the extended tier). Each case checks the host afterwards: no
mounts, no loop devices, /dev intact, no process left in the build's namespace,
no result-looking output.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.extended import faultkit as fk


@pytest.fixture(scope="session")
def fault_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    fk.WORK_BASE.mkdir(parents=True, exist_ok=True)
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def plain_config(fault_base: Path) -> Path:
    return fk.write_config(fault_base, "faults")


@pytest.fixture(scope="session")
def mirror() -> Iterator[fk.FaultMirror]:
    server = fk.FaultMirror(fk.host_mirror())
    yield server
    server.close()


def test_every_bad_config_is_refused_before_anything_is_touched(fault_base: Path) -> None:
    base = fault_base / "bad-configs"
    with ThreadPoolExecutor(4) as pool:
        futures = {c.id: pool.submit(fk.bad_config_case, c, base) for c in fk.BAD_CONFIGS}
    failures = {}
    for case_id, future in futures.items():
        try:
            future.result()
        except AssertionError as exc:
            failures[case_id] = str(exc)[:600]
    assert failures == {}


def test_unwritable_output_directory_is_refused(fault_base: Path, plain_config: Path) -> None:
    blocker = fault_base / "a-file"
    blocker.write_text("not a directory\n")
    workdir = fk.WORK_BASE / "unwritable"
    proc = fk.run_cli("build", plain_config, "-o", blocker / "out", "--workdir", workdir,
                      "--cache-dir", fk.CACHE)
    assert proc.returncode == 2, proc.stderr
    assert f"output directory {blocker / 'out'}" in proc.stderr
    assert not workdir.exists()


def test_existing_result_is_kept_without_force(fault_base: Path, plain_config: Path) -> None:
    outdir = fault_base / "previous"
    outdir.mkdir()
    (outdir / "report.json").write_text('{"result": "success"}\n')
    workdir = fk.WORK_BASE / "existing"
    proc = fk.run_cli("build", plain_config, "-o", outdir, "--workdir", workdir,
                      "--cache-dir", fk.CACHE)
    assert proc.returncode == 2, proc.stderr
    assert f"output directory {outdir} already holds a build" in proc.stderr
    assert "--force" in proc.stderr
    assert (outdir / "report.json").read_text() == '{"result": "success"}\n'
    assert not workdir.exists()


def test_sigint_in_bootstrap_and_the_lock_refuses_a_second_build(plain_config: Path) -> None:
    """Ctrl-C (SIGINT to the process group) while bootstrapping; meanwhile the lock holds."""
    workdir, outdir = fk.case_dirs("ci-sigint")
    with fk.host_checked(workdir, outdir) as check:
        run = fk.start_build(plain_config, "ci-sigint", "--no-iso", workdir=workdir,
                             outdir=outdir)
        try:
            run.wait_for(r"stage bootstrap: start")
            run.remember_namespace()
            second = fk.run_cli("build", plain_config, "-o", outdir.with_name("ci-second-out"),
                                "--workdir", workdir, "--cache-dir", fk.CACHE)
            assert second.returncode == 2, second.stdout + second.stderr
            assert f"work directory {workdir} is in use by another deblive build " \
                   f"(PID {run.deblive_pid()})" in second.stderr
            sent = run.kill(signal.SIGINT)
            code = run.finish(timeout=120)
            stopped = time.monotonic() - sent
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
        assert code == 130, run.output[-3000:]
        assert stopped < 30
        assert f"interrupted by SIGINT in stage bootstrap; work tree kept at {workdir}" \
            in run.output
        check(run)
    assert workdir.is_dir()
    assert fk.run_cli("clean", workdir).returncode == 0 and not workdir.exists()
    fk.remove_tree(outdir)
    fk.remove_tree(outdir.with_name("ci-second-out"))


def test_builds_in_different_workdirs_run_side_by_side_then_sigterm(fault_base: Path) -> None:
    configs = [fk.write_config(fault_base, f"side{i}") for i in (1, 2)]
    runs = []
    for i, config in enumerate(configs, 1):
        workdir, outdir = fk.case_dirs(f"ci-side{i}")
        runs.append(fk.start_build(config, f"ci-side{i}", "--no-iso", workdir=workdir,
                                   outdir=outdir, cache=Path(f"{fk.CACHE}-side{i}")))
    before = fk.HostSnapshot.take()
    try:
        for run in runs:
            run.wait_for(r"stage bootstrap: start")
            run.remember_namespace()
        for run in runs:
            run.kill(signal.SIGTERM)
        codes = [run.finish(timeout=120) for run in runs]
    finally:
        for run in runs:
            if run.proc.poll() is None:
                run.proc.kill()
    for run, code in zip(runs, codes, strict=True):
        assert code == 143, run.output[-3000:]
        assert "in stage bootstrap" in run.output, run.output[-2000:]
        fk.assert_host_intact(run, before, run.workdir, run.outdir)
        fk.remove_tree(run.workdir)
        fk.remove_tree(run.outdir)


def test_sigkill_in_packages_leaves_nothing_running_or_mounted(plain_config: Path) -> None:
    times = fk.signal_case(plain_config, "ci-sigkill", "packages", signal.SIGKILL)
    assert times["stop"] < 5


def test_unreachable_mirror(plain_config: Path) -> None:
    mirror = f"http://127.0.0.1:{fk.free_port()}/debian"
    workdir = fk.WORK_BASE / "ci-unreachable"
    proc = fk.run_cli("build", plain_config, "--mirror", mirror, "-o",
                      fk.WORK_BASE / "ci-unreachable-out", "--workdir", workdir,
                      "--cache-dir", fk.CACHE)
    assert proc.returncode == 2, proc.stderr
    assert f"mirror {mirror} is unreachable: {mirror}/dists/" in proc.stderr
    assert not workdir.exists()


def test_bad_release_signature(plain_config: Path, mirror: fk.FaultMirror) -> None:
    url = mirror.url("bad-signature")
    workdir = fk.WORK_BASE / "ci-badsig"
    outdir = fk.WORK_BASE / "ci-badsig-out"
    with fk.host_checked(workdir, outdir) as check:
        proc = fk.run_cli("build", plain_config, "--mirror", url, "-o", outdir,
                          "--workdir", workdir, "--cache-dir", fk.CACHE, timeout=600)
        check(None)
    assert proc.returncode in (1, 2), proc.stderr
    first = fk.error_line(proc.stderr)
    assert first.startswith(f"deblive: error: mirror {url}: bad signature on the Release file: "
                            f"{url} "), proc.stderr
    assert "InRelease" in first
    fk.remove_tree(workdir)
    fk.remove_tree(outdir)
