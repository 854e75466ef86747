"""Failure safety without root: signals, child processes, full disks, mirror faults, bad input."""

from __future__ import annotations

import errno
import fcntl
import http.server
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deblive.apt import archive, mirrorfault
from deblive.build import pipeline
from deblive.build.context import BuildContext, WorkTree
from deblive.build.failure import failed_stage
from deblive.build.stages.squash import Squash
from deblive.core import http as dl_http
from deblive.core import interrupt
from deblive.core.errors import BadInputError
from deblive.core.log import BuildLog
from deblive.core.runner import CommandError, Runner
from deblive.host import diskspace, preflight
from deblive.host import workbase as clean
from deblive.host.workbase import workdir_lock
from deblive.model import config
from tests.extended.faultkit import BAD_CONFIGS, BadConfig

from . import conftest

SRC = Path(__file__).resolve().parents[2] / "src" / "deblive"


# -- signals ----------------------------------------------------------------------------


@pytest.fixture
def handlers() -> Iterator[None]:
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    interrupt.install_handlers()
    yield
    for sig, handler in old.items():
        signal.signal(sig, handler)


def test_first_signal_interrupts_second_is_ignored_during_teardown(handlers: None) -> None:
    teardown_done = False
    with pytest.raises(interrupt.Interrupted) as info:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises long before this ends
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # a second signal must not cut this short
            teardown_done = True
    assert teardown_done
    assert info.value.exit_code == 143
    assert interrupt.interrupted_by() == signal.SIGTERM


def test_after_the_teardown_further_signals_cannot_change_the_status(handlers: None) -> None:
    interrupt.ignore_further()
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.1)  # still alive, nothing raised


def test_interrupt_message_names_stage_and_work_tree() -> None:
    exc = interrupt.Interrupted(signal.SIGINT)
    exc.stage, exc.workdir = "packages", "/var/tmp/deblive/x"
    text = exc.describe()
    assert text.startswith("interrupted by SIGINT in stage packages; work tree kept at ")
    assert "deblive clean /var/tmp/deblive/x" in text
    assert exc.exit_code == 130


def test_failed_stage_is_the_innermost_unfinished_one(tmp_path: Path) -> None:
    log = BuildLog(path=None)
    with log.stage("bootstrap"):
        pass
    with pytest.raises(RuntimeError), log.stage("iso-all"), log.stage("medium"):
        raise RuntimeError("boom")
    assert failed_stage(log) == "medium"
    assert failed_stage(BuildLog()) == "setup"


# -- child processes --------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_interrupt_during_a_command_ends_its_whole_tree(tmp_path: Path, handlers: None) -> None:
    """A signal while a command runs ends it and its grandchildren, even in other groups."""
    pids = tmp_path / "pids"
    script = (
        f"sleep 300 & echo $! >> {pids}; "
        f"setsid sleep 300 & echo $! >> {pids}; "
        f"echo $$ >> {pids}; echo ready; sleep 300"
    )
    runner = Runner(BuildLog())
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.monotonic()
    with pytest.raises(interrupt.Interrupted):
        runner.run(["sh", "-c", script])
    assert time.monotonic() - started < 15
    listed = [int(p) for p in pids.read_text().split()]
    assert len(listed) == 3
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in listed) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in listed if _alive(p)]
    assert runner.running() == []


def test_commands_run_in_their_own_process_group() -> None:
    runner = Runner(BuildLog())
    out = runner.output(["sh", "-c", "ps -o pgid= -p $$"])
    assert int(out.strip()) != os.getpgid(0)


def test_error_lines_are_kept_beyond_the_tail() -> None:
    runner = Runner(BuildLog())
    script = "echo 'E: Failed to fetch http://m/x  404  Not Found'; seq 1 100; exit 100"
    with pytest.raises(CommandError) as info:
        runner.run(["sh", "-c", script])
    assert info.value.notable == ["E: Failed to fetch http://m/x  404  Not Found"]
    assert "error lines earlier in its output" in str(info.value)
    assert "100" in info.value.tail


class _FullDisk:
    """A log file on a full disk: every write fails with ENOSPC."""

    def write(self, _text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_full_log_disk_does_not_hide_the_commands_own_error() -> None:
    log = BuildLog()
    log._file = _FullDisk()  # type: ignore[assignment]
    runner = Runner(log)
    with pytest.raises(CommandError) as info:
        runner.run(["sh", "-c", "echo one; echo 'Write failed because No space left on device'; "
                    "exit 1"])
    assert isinstance(runner.log_error, OSError) and runner.log_error.errno == errno.ENOSPC
    assert info.value.tail[-1] == "Write failed because No space left on device"
    assert diskspace.is_disk_full(info.value)


# -- disk space -------------------------------------------------------------------------


def test_require_refuses_with_sizes_and_path(tmp_path: Path) -> None:
    free = diskspace.free_bytes(tmp_path)
    line = diskspace.require(tmp_path, 1, "the squashfs")
    assert "MiB free" in line
    with pytest.raises(diskspace.DiskSpaceError) as info:
        diskspace.require(tmp_path / "not/yet", free + 2**40, "the ISO", stage="iso")
    text = str(info.value)
    assert text.startswith("not enough free space for the ISO: ")
    assert str(tmp_path) in text and "MiB are needed" in text
    assert info.value.stage == "iso"


def test_skip_env_turns_the_estimate_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBLIVE_SKIP_SPACE_CHECK", "1")
    diskspace.require(tmp_path, 2**60, "the squashfs")


def test_estimate_grows_with_the_tree_and_the_weaker_compressor() -> None:
    tree = 700 * 2**20
    assert diskspace.estimate_squashfs(tree, "xz") < diskspace.estimate_squashfs(tree, "lz4")
    # the measured 678 MiB tree gave a 197 MiB zstd squashfs: the estimate must cover it
    assert diskspace.estimate_squashfs(678 * 2**20, "zstd") > 197 * 2**20


def test_a_stage_that_cannot_fit_is_refused_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The squash stage's space check runs before "stage squash: start", not inside it."""
    work = WorkTree(tmp_path / "w")
    (work.rootfs / "etc").mkdir(parents=True)
    (work.rootfs / "etc/hostname").write_text("debian\n")
    log = BuildLog()
    log.open(tmp_path / "build.log")
    ctx = BuildContext(conftest.parse({"name": "t"}), log, Runner(log), work,
                       tmp_path / "out", tmp_path / "cache", make_iso=False)
    monkeypatch.setattr(pipeline, "STAGES", (Squash(),))
    monkeypatch.setattr(diskspace, "free_bytes", lambda path: 0)
    with pytest.raises(diskspace.DiskSpaceError, match="for the squashfs") as info:
        pipeline.run_stages(ctx)
    log.close()
    assert info.value.stage == "squash"
    assert log.timings == [] and ctx.tree_stats is None
    assert "stage squash" not in (tmp_path / "build.log").read_text()
    assert not (work.output / "filesystem.squashfs.partial").exists()


def test_the_squash_stage_refuses_to_run_without_its_check(tmp_path: Path) -> None:
    """A pipeline that skipped check() must fail loudly, not squash an unmeasured tree."""
    log = BuildLog()
    log.open(tmp_path / "build.log")
    ctx = BuildContext(conftest.parse({"name": "t"}), log, Runner(log), WorkTree(tmp_path / "w"),
                       tmp_path / "out", tmp_path / "cache", make_iso=False)
    with pytest.raises(RuntimeError, match="without its space check"):
        Squash().run(ctx)
    log.close()


def test_full_disk_is_recognised_through_a_masking_log_error() -> None:
    try:
        try:
            raise CommandError(["mksquashfs"], 1, ["FATAL ERROR: Failed to write"], None)
        except CommandError:
            raise OSError(errno.ENOSPC, "No space left on device") from None
    except OSError as exc:
        masked = exc
    assert diskspace.is_disk_full(masked)
    assert isinstance(diskspace.root_error(masked), CommandError)
    assert not diskspace.is_disk_full(CommandError(["false"], 1, ["nothing"], None))


# -- mirror faults ----------------------------------------------------------------------

APT_LINES = {
    "file not found": [
        "Err:1 http://127.0.0.1:8/x/debian bookworm/main amd64 hello amd64 2.10-3",
        "  404  Not Found [IP: 127.0.0.1 8]",
        "E: Failed to fetch http://127.0.0.1:8/x/debian/pool/main/h/hello/hello_2.10-3_amd64.deb"
        "  404  Not Found [IP: 127.0.0.1 8]",
    ],
    "hash sum mismatch": [
        "E: Failed to fetch http://127.0.0.1:8/x/debian/dists/bookworm/main/binary-amd64/"
        "by-hash/SHA256/abc  Hash Sum mismatch",
    ],
    "bad signature": [
        "W: GPG error: http://127.0.0.1:8/x/debian bookworm InRelease: The following "
        "signatures were invalid: BADSIG 6ED0E7B82643E131 Debian Archive Automatic Signing Key",
        "E: The repository 'http://127.0.0.1:8/x/debian bookworm InRelease' is not signed.",
    ],
    "unreachable": [
        "Err:1 http://127.0.0.1:9/debian bookworm InRelease",
        "  Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)",
    ],
}


@pytest.mark.parametrize("kind", sorted(APT_LINES))
def test_apt_mirror_faults_are_named_with_their_url(kind: str) -> None:
    found = mirrorfault.diagnose(APT_LINES[kind])
    assert found is not None
    fault, url = found
    assert kind.split()[0] in fault
    assert url is not None and url.startswith("http://127.0.0.1:")


def test_explain_names_mirror_and_keeps_the_exit_status() -> None:
    cfg = conftest.parse({"name": "x", "mirror": "http://127.0.0.1:8/x/debian"}, None)
    error = CommandError(["mmdebstrap"], 1, APT_LINES["bad signature"], None)
    explained = mirrorfault.explain(error, cfg)
    assert str(explained).startswith("mirror http://127.0.0.1:8/x/debian: bad signature")
    assert "InRelease" in str(explained).splitlines()[0]
    assert explained.exit_code == 1
    other = CommandError(["false"], 1, ["nothing to see"], None)
    assert mirrorfault.explain(other, cfg) is other


class _Mirror(http.server.BaseHTTPRequestHandler):
    """A mirror with Release but no signature, and a 500 that clears on the second try."""

    hits: dict[str, int] = {}  # noqa: RUF012 - shared by the handler instances

    def do_GET(self) -> None:
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path.startswith("/flaky/") and self.hits[self.path] == 1:
            self.send_response(503)
            self.end_headers()
            return
        if self.path.endswith("/Release") or self.path.startswith("/flaky/"):
            body = b"Origin: Debian\nArchitectures: amd64\nComponents: main\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local_mirror(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(dl_http, "RETRY_DELAY", 0.01)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_unsigned_mirror_is_refused_naming_the_file(local_mirror: str) -> None:
    with pytest.raises(archive.ArchiveError) as info:
        archive.fetch_release(local_mirror + "/unsigned/debian", "bookworm")
    text = str(info.value)
    assert text.startswith(f"mirror {local_mirror}/unsigned/debian: ")
    assert "dists/bookworm/Release is not signed" in text and "Release.gpg" in text


def test_transient_errors_are_retried_a_bounded_number_of_times(local_mirror: str) -> None:
    release = archive.fetch_release(local_mirror + "/flaky/debian", "bookworm")
    assert release["Architectures"] == "amd64"
    assert _Mirror.hits["/flaky/debian/dists/bookworm/InRelease"] == 2


def test_unreachable_mirror_names_url_after_bounded_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dl_http, "RETRY_DELAY", 0.01)
    from tests.extended.faultkit import free_port

    mirror = f"http://127.0.0.1:{free_port()}/debian"
    with pytest.raises(archive.ArchiveError) as info:
        archive.fetch_release(mirror, "bookworm")
    text = str(info.value)
    assert text.startswith(f"mirror {mirror} is unreachable: {mirror}/dists/bookworm/InRelease")
    assert f"tried {dl_http.RETRIES + 1} times" in text


# -- bad input --------------------------------------------------------------------------


# Command-line and build-time cases go through the CLI in the CI tier.
FILE_CASES = [c for c in BAD_CONFIGS if not c.args and c.validate]


@pytest.mark.parametrize("case", FILE_CASES, ids=lambda c: c.id)
def test_bad_config_names_file_and_key(case: BadConfig, tmp_path: Path) -> None:
    path = case.write(tmp_path)
    with pytest.raises((config.ConfigError, BadInputError)) as info:
        preflight.check_paths(conftest.load(path))
    text = str(info.value)
    assert text.startswith(f"{path.resolve()}: ") or text.startswith(f"{path}: ")
    assert case.key in text
    assert getattr(info.value, "exit_code", None) == 2


def test_at_least_thirty_bad_configs() -> None:
    assert len(BAD_CONFIGS) >= 30
    assert len({c.id for c in BAD_CONFIGS}) == len(BAD_CONFIGS)


def test_confined_hook_inside_the_tree_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks/h.sh").write_text("#!/bin/sh\n")
    (tmp_path / "c.yaml").write_text("name: x\nhook_confined: true\nhook: hooks/h.sh\n")
    cfg = conftest.load(tmp_path / "c.yaml")
    assert cfg.hook_path == tmp_path / "hooks/h.sh"
    (tmp_path / "hooks/h.sh").chmod(0o755)
    preflight.check_paths(cfg)


def test_unconfined_hook_may_live_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "h.sh").write_text("#!/bin/sh\n")
    (tmp_path / "c/c.yaml").write_text("name: x\nhook: ../h.sh\n")
    hook = conftest.load(tmp_path / "c/c.yaml").hook_path
    assert hook is not None and hook.resolve() == tmp_path / "h.sh"


# -- clean, loop devices, signatures ----------------------------------------------------


def test_clean_refuses_a_tree_that_is_not_deblives(tmp_path: Path) -> None:
    victim = tmp_path / "important"
    (victim / "data").mkdir(parents=True)
    with pytest.raises(clean.CleanError, match="not a deblive work tree"):
        clean.clean(victim, tmp_path)
    assert (victim / "data").is_dir()


def test_clean_refuses_a_busy_tree_naming_the_holder(tmp_path: Path) -> None:
    tree = tmp_path / "base" / "w"
    (tree / "rootfs").mkdir(parents=True)
    (tmp_path / "base").chmod(0o700)
    (tree / clean.MARKER).write_text("1\n")
    (tree / "build.log").write_text("12:00:00 [main] building w\n")
    with workdir_lock(tree):
        outcomes = clean.clean(None, tmp_path / "base")
        assert [o.removed for o in outcomes] == [False]
        assert f"(PID {os.getpid()})" in outcomes[0].reason
        with pytest.raises(clean.CleanError, match=f"PID {os.getpid()}"):
            clean.clean(tree, tmp_path / "base")
    assert tree.is_dir()
    assert clean.clean(None, tmp_path / "base")[0].removed
    assert not tree.exists()


def test_lock_is_not_inherited_by_children(tmp_path: Path) -> None:
    """A child that outlives deblive must not keep its work directory locked."""
    tree = tmp_path / "w"
    with workdir_lock(tree):
        child = subprocess.Popen(["sleep", "30"])
    try:
        fd = os.open(tmp_path / ".w.lock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    finally:
        child.kill()
        child.wait()


def _source_files() -> list[Path]:
    return [p for p in SRC.rglob("*") if p.suffix in (".py", ".sh", ".j2") and p.is_file()]


def test_deblive_attaches_no_loop_devices() -> None:
    """Nothing to detach if nothing is attached: the efi.img is made with mtools, not mounted."""
    words = ("losetup", "/dev/loop", "LOOP_SET_FD", "LOOP_CTL", "-o loop", "udisksctl")
    hits = [f"{p.name}: {w}" for p in _source_files() for w in words if w in p.read_text()]
    assert hits == []


def test_signature_checks_are_never_turned_off() -> None:
    words = ("trusted=yes", "allow-insecure", "AllowInsecureRepositories", "--no-check-gpg",
             "AllowUnauthenticated", "allow-unauthenticated", "Trusted: yes", "--no-check-sig",
             "AllowDowngradeToInsecureRepositories")
    hits = [f"{p.name}: {w}" for p in _source_files() for w in words if w in p.read_text()]
    assert hits == []
