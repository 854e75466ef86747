"""Fault injection for real builds: run the CLI, hit it, and check the host afterwards.

Shared by the extended tier (tests/extended/test_faults.py, every case) and the
CI subset (tests/integration/test_faults.py). Builds run the real CLI in a
subprocess with their own work directory under WORK_BASE and their own package
cache, as root. A case is watched through the build's console lines
("stage X: start"), hit (a signal, a filling disk, a bad mirror), and then the
host is checked: no mount left below the work tree or anywhere new in the
host's mount table, no loop device, /dev unchanged, no process left in the
build's mount namespace, and no result-looking file in the output directory.
"""

from __future__ import annotations

import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEBLIVE = [sys.executable, "-m", "deblive"]
WORK_BASE = Path("/var/tmp/deblive-faults")
CACHE = Path("/var/cache/deblive-faults")
RESULT_NAMES = ("report.json", "filesystem.squashfs", "SHA256SUMS", "build.log")
LOOP_GRACE = 10.0  # seconds the kernel may take to clear a dead namespace's loop devices
STAGE_RE = re.compile(r"stage (?P<stage>[\w-]+): (?P<what>start|done|FAILED)")


# -- the host's state -----------------------------------------------------------------


def dev_nodes() -> int:
    """Device nodes in the host's /dev (pts and shm change with terminals; skipped)."""
    count = 0
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in ("/dev/pts",
                                                                              "/dev/shm")]
        for name in filenames:
            try:
                mode = os.lstat(os.path.join(dirpath, name)).st_mode
            except OSError:
                continue
            if (mode & 0o170000) in (0o020000, 0o060000):
                count += 1
    return count


def host_mounts() -> list[str]:
    return [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]


def loop_devices() -> list[str]:
    proc = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False)
    return [line for line in proc.stdout.splitlines() if line.strip()]


def namespace_members(ns: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") == ns:
                    found.append(int(entry))
            except OSError:
                continue
    return found


@dataclass
class HostSnapshot:
    dev: int
    mounts: list[str]
    loops: list[str]

    @classmethod
    def take(cls) -> HostSnapshot:
        return cls(dev_nodes(), host_mounts(), loop_devices())


# -- running a build ------------------------------------------------------------------


@dataclass
class Run:
    """One `deblive` process, its console lines collected as they come."""

    proc: subprocess.Popen[str]
    workdir: Path
    outdir: Path
    lines: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    ns: str | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _reader: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 900) -> str:
        """Block until a console line matches pattern; fail if the build ends first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if regex.search(line):
                        return line
                seen = len(self.lines)
                if self.proc.poll() is not None and not (
                    self._reader and self._reader.is_alive()
                ):
                    raise AssertionError(
                        f"build ended (status {self.proc.returncode}) before {pattern!r}:\n"
                        + "\n".join(self.lines[-40:])
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {pattern!r} in {timeout} s")
                self._cond.wait(min(left, 1.0))

    def deblive_pid(self) -> int:
        """The deblive process (the Popen one, or a child when a shell wraps it)."""
        pids = [self.proc.pid]
        while pids:
            pid = pids.pop(0)
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            program = cmdline[0].rsplit(b"/", 1)[-1]
            if program.startswith(b"python") and b"deblive" in cmdline:
                return pid
            pids.extend(children(pid))
        raise AssertionError("no deblive process found")

    def remember_namespace(self) -> str:
        """The build's own mount namespace (entered before the first stage)."""
        pid = self.deblive_pid()
        self.ns = os.readlink(f"/proc/{pid}/ns/mnt")
        return self.ns

    def kill(self, sig: signal.Signals) -> float:
        """Send sig to deblive now; returns the time it was sent.

        SIGINT goes to deblive's whole process group, as a terminal's Ctrl-C
        does; SIGTERM and SIGKILL to the deblive process only, as kill(1) does.
        """
        pid = self.deblive_pid()
        if self.ns is None:
            self.remember_namespace()
        if sig == signal.SIGINT:
            os.killpg(os.getpgid(pid), sig)
        else:
            os.kill(pid, sig)
        return time.monotonic()

    def finish(self, timeout: float = 900) -> int:
        code = self.proc.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=30)
        return code


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def case_dirs(name: str) -> tuple[Path, Path]:
    """A fresh work directory and output directory for one case."""
    workdir = WORK_BASE / name
    outdir = WORK_BASE / f"{name}-out"
    for path in (workdir, outdir):
        if path.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)
    return workdir, outdir


def start_build(
    config: Path, name: str, *extra: str, wrap: list[str] | None = None,
    workdir: Path | None = None, outdir: Path | None = None, cache: Path = CACHE,
    env: dict[str, str] | None = None,
) -> Run:
    """Start `deblive build` (optionally under a wrapper such as unshare + tmpfs)."""
    default_work, default_out = case_dirs(name)
    workdir = workdir or default_work
    outdir = outdir or default_out
    argv = [*DEBLIVE, "build", str(config), "-o", str(outdir), "--workdir", str(workdir),
            "--cache-dir", str(cache), *extra]
    full_env = dict(os.environ)
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env["COLUMNS"] = "400"  # rich wraps at 80 columns in a pipe; keep lines whole
    if env:
        full_env.update(env)
    proc = subprocess.Popen(
        [*(wrap or []), *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=REPO, stdin=subprocess.DEVNULL, env=full_env, start_new_session=True,
    )
    return Run(proc, workdir, outdir)


def error_line(text: str) -> str:
    """deblive's own final message (console lines of the build come before it)."""
    for line in text.splitlines():
        if line.startswith(("deblive: error: ", "deblive: interrupted by ")):
            return line
    return ""


def run_cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="400")
    return subprocess.run(
        [*DEBLIVE, *map(str, args)], capture_output=True, text=True, timeout=timeout,
        cwd=REPO, stdin=subprocess.DEVNULL, env=env,
    )


# -- after every case -----------------------------------------------------------------


def assert_host_intact(run: Run | None, before: HostSnapshot, workdir: Path,
                       outdir: Path | None) -> None:
    """The checks every case ends with (see the module docstring)."""
    workdir_real = os.path.realpath(workdir)
    after_mounts = host_mounts()
    below = [m for m in after_mounts if m == workdir_real or m.startswith(workdir_real + "/")]
    assert below == [], f"mounts left below {workdir}: {below}"
    new = [m for m in after_mounts if m not in before.mounts]
    ours = [m for m in new if str(WORK_BASE) in m or "/rootfs/" in m or m.endswith("/rootfs")]
    assert ours == [], f"new mounts in the host's table: {ours}"
    if run is not None and run.ns is not None:
        deadline = time.monotonic() + 15
        while namespace_members(run.ns) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = namespace_members(run.ns)
        assert left == [], f"processes left in the build's namespace: {describe_pids(left)}"
    # A loop device mounted in the build's namespace (a layered build's cached base)
    # is cleared by the kernel once that namespace's mounts are gone: after its last
    # process, and then in a work queue of its own, not by the time the build's exit
    # is seen. Gone within seconds it was no leak; still there, it is one.
    deadline = time.monotonic() + LOOP_GRACE
    while True:
        loops = loop_devices()
        ours_loops = [line for line in loops if str(WORK_BASE) in line or "deblive" in line]
        if (ours_loops == [] and len(loops) <= len(before.loops)) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert ours_loops == [] and len(loops) <= len(before.loops), f"loop devices: {loops}"
    assert dev_nodes() == before.dev, "the host's /dev changed"
    assert Path("/proc/self/mounts").is_file() and Path("/proc/1/stat").is_file()
    if outdir is not None:
        assert_no_result(outdir)


def assert_no_result(outdir: Path) -> None:
    if not outdir.exists():
        return
    names = sorted(p.name for p in outdir.iterdir())
    bad = [n for n in names if n in RESULT_NAMES or n.endswith((".iso", ".partial", ".broken",
                                                                ".squashfs"))]
    assert bad == [], f"result-looking files left in {outdir}: {bad}"


def describe_pids(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmd = "?"
        out.append(f"{pid}: {cmd}")
    return out


def remove_tree(path: Path) -> None:
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


# -- configs --------------------------------------------------------------------------


def write_config(base: Path, name: str, text: str = "", hook: str | None = None,
                 compression: str = "zstd") -> Path:
    base.mkdir(parents=True, exist_ok=True)
    body = f"name: {name}\nsquashfs: {{compression: {compression}}}\n"
    if hook is not None:
        script = base / f"{name}-hook.sh"
        script.write_text(hook)
        script.chmod(0o755)
        body += f"hook: {script.name}\n"
    config = base / f"{name}.yaml"
    config.write_text(body + textwrap.dedent(text))
    return config


SLOW_HOOK = "#!/bin/sh\necho 'hook: sleeping'\nsleep 600\n"


@dataclass
class BadConfig:
    """A config (or command line) that must be refused with exit 2, naming file and key."""

    id: str
    text: str
    key: str
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # name: (content, mode)
    args: tuple[str, ...] = ()
    validate: bool = True  # also refused by `deblive validate`
    symlinks: dict[str, str] = field(default_factory=dict)

    def write(self, base: Path) -> Path:
        case = base / self.id
        case.mkdir(parents=True, exist_ok=True)
        for name, (content, mode) in self.files.items():
            path = case / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            path.chmod(mode)
        for name, target in self.symlinks.items():
            link = case / name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(target)
        config = case / "config.yaml"
        config.write_text(self.text)
        return config


HOOK_OK = ("#!/bin/sh\nexit 0\n", 0o755)
BAD_CONFIGS = [
    BadConfig("bad-name", "name: Bad Name\n", "name"),
    BadConfig("no-name", "suite: bookworm\n", "name"),
    BadConfig("unknown-suite", "name: x\nsuite: narnia\n", "suite"),
    BadConfig("unknown-arch", "name: x\narchitecture: sparc\n", "architecture"),
    BadConfig("bad-component", "name: x\ncomponents: [main, universe]\n", "components"),
    BadConfig("mirror-scheme", "name: x\nmirror: ftp://example.org/debian\n", "mirror"),
    BadConfig("apt-mirror-not-url", "name: x\napt_mirror: not a url\n", "apt_mirror"),
    BadConfig("security-mirror", "name: x\nsecurity_mirror: debian-security\n",
              "security_mirror"),
    BadConfig("task-not-task", "name: x\ntasks: [ssh-server]\n", "tasks"),
    BadConfig("package-name", "name: x\npackages: [Bad_Pkg]\n", "packages"),
    BadConfig("kernel-name", "name: x\nkernel: 'Linux!'\n", "kernel"),
    BadConfig("user-root", "name: x\nuser: {name: root}\n", "user.name"),
    BadConfig("user-upper", "name: x\nuser: {name: Alice}\n", "user.name"),
    BadConfig("user-group", "name: x\nuser: {groups: ['bad group']}\n", "user.groups"),
    BadConfig("user-unknown-key", "name: x\nuser: {nmae: bob}\n", "user.nmae"),
    BadConfig("hostname", "name: x\nhostname: -bad-\n", "hostname"),
    BadConfig("locale", "name: x\nlocale: english\n", "locale"),
    BadConfig("timezone", "name: x\ntimezone: ../etc/passwd\n", "timezone"),
    BadConfig("keyboard", "name: x\nkeyboard: US!\n", "keyboard"),
    BadConfig("debconf", "name: x\ndebconf: ['only two']\n", "debconf"),
    BadConfig("compression", "name: x\nsquashfs: {compression: bzip2}\n", "squashfs.compression"),
    BadConfig("level", "name: x\nsquashfs: {level: 99}\n", "squashfs.level"),
    BadConfig("block-size", "name: x\nsquashfs: {block_size: 2M}\n", "squashfs.block_size"),
    BadConfig("backend", "name: x\nbootstrap: {backend: cdebootstrap}\n", "bootstrap.backend"),
    BadConfig("variant", "name: x\nbootstrap: {variant: huge}\n", "bootstrap.variant"),
    BadConfig("boot-timeout", "name: x\nboot: {timeout: -1}\n", "boot.timeout"),
    BadConfig("boot-default", "name: x\nboot: {default: rescue}\n", "boot.default"),
    BadConfig("boot-cmdline", "name: x\nboot: {cmdline: 'quiet \"x\"'}\n", "boot.cmdline"),
    BadConfig("serial-console", "name: x\nboot: {serial_console: sometimes}\n",
              "boot.serial_console"),
    BadConfig("volume-id", f"name: x\nvolume_id: {'V' * 40}\n", "volume_id"),
    BadConfig("lock-root", "name: x\nlock_root: maybe\n", "lock_root"),
    BadConfig("unknown-key", "name: x\ncolour: blue\n", "colour"),
    BadConfig("hook-confined-value", "name: x\nhook_confined: yes please\n", "hook_confined"),
    BadConfig("hook-missing", "name: x\nhook: hooks/missing.sh\n", "hook"),
    BadConfig("hook-not-executable", "name: x\nhook: hook.sh\n", "hook",
              files={"hook.sh": ("#!/bin/sh\nexit 0\n", 0o644)}),
    BadConfig("hook-is-directory", "name: x\nhook: hooks\n", "hook",
              files={"hooks/keep": ("", 0o644)}),
    BadConfig("hook-outside", "name: x\nhook_confined: true\nhook: ../outside-hook.sh\n", "hook",
              files={"../outside-hook.sh": HOOK_OK}),
    BadConfig("hook-symlink-escape", "name: x\nhook_confined: true\nhook: hook.sh\n", "hook",
              files={"../escape-target.sh": HOOK_OK},
              symlinks={"hook.sh": "../escape-target.sh"}),
    BadConfig("arch-override", "name: x\n", "architecture", args=("--arch", "sparc")),
    BadConfig("suite-override", "name: x\n", "suite", args=("--suite", "narnia")),
    BadConfig("not-a-mapping", "- name\n- x\n", "mapping"),
    BadConfig("not-yaml", "name: [x\n", "not valid YAML"),
    BadConfig("splash-missing", "name: x\nboot: {splash: missing.png}\n", "boot.splash"),
    # Config text that would inject into a menu, a shell file or /etc/passwd.
    BadConfig("title-newline", 'name: x\nboot: {title: "Live\\nmenuentry x {"}\n', "boot.title"),
    BadConfig("fullname-colon", "name: x\nuser: {fullname: 'a:0:0'}\n", "user.fullname"),
    BadConfig("password-newline", 'name: x\nuser: {password: "pw\\nroot:x"}\n',
              "user.password"),
    BadConfig("shell-relative", "name: x\nuser: {shell: bash}\n", "user.shell"),
    BadConfig("sudo-none-group", "name: x\nuser: {sudo: none, groups: [sudo]}\n", "user"),
    BadConfig("locale-newline", 'name: x\nlocale: "en_US.UTF-8\\n"\n', "locale"),
    BadConfig("mirror-field", 'name: x\nmirror: "http://m/debian\\nSuites: x"\n', "mirror"),
    BadConfig("splash-confined", "name: x\nconfine_paths: true\nboot: {splash: s.png}\n",
              "boot.splash", files={"../outside.png": ("x", 0o644)},
              symlinks={"s.png": "../outside.png"}),
    BadConfig("preseed-confined", "name: x\nconfine_paths: true\n"
              "installer: {preseed: ../p.cfg}\n", "installer.preseed",
              files={"../p.cfg": ("", 0o644)}),
]


# -- a mirror that misbehaves ---------------------------------------------------------


MIRROR_FAULTS = ("good", "corrupt-packages", "bad-signature", "no-signature", "pool-404")
POOL_404 = "/hello_"  # the package the pool-404 mirror has lost
ARCHIVES = ("debian", "debian-security")


class FaultMirror:
    """A local HTTP mirror: the real dists/ files (fetched, maybe spoilt), pool/ redirected.

    URL http://127.0.0.1:PORT/<fault>/debian, fault one of MIRROR_FAULTS:
    corrupt-packages flips bytes in every binary-* index (hash sum mismatch),
    bad-signature changes one signed line of InRelease (BADSIG), no-signature
    has neither InRelease nor Release.gpg, pool-404 answers 404 for hello's .deb.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._cache: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()
        self.requests: list[tuple[str, int]] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.handle(self)

            def do_HEAD(self) -> None:
                mirror.handle(self, head=True)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, fault: str) -> str:
        assert fault in MIRROR_FAULTS
        return f"http://127.0.0.1:{self.port}/{fault}/debian"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def upstream_url(self, rest: str) -> str:
        if rest.startswith("../"):
            return f"{self.upstream.rsplit('/', 1)[0]}/{rest[3:]}"
        return f"{self.upstream}/{rest}"

    def fetch(self, rest: str) -> tuple[int, bytes]:
        with self._lock:
            if rest in self._cache:
                return self._cache[rest]
        try:
            with urllib.request.urlopen(self.upstream_url(rest), timeout=60) as response:
                result = (200, response.read())
        except urllib.error.HTTPError as exc:
            result = (exc.code, b"")
        with self._lock:
            self._cache[rest] = result
        return result

    def handle(self, req: http.server.BaseHTTPRequestHandler, head: bool = False) -> None:
        parts = req.path.lstrip("/").split("/", 2)
        if len(parts) < 3 or parts[0] not in MIRROR_FAULTS or parts[1] not in ARCHIVES:
            self._send(req, 404, b"", head)
            return
        fault, archive, rest = parts
        if archive != "debian":
            # The security archive beside it (apt_mirror + "-security"): passed through.
            fault, rest = "good", f"../{archive}/{rest}"
        if rest.startswith("pool/") or "/pool/" in rest:
            if fault == "pool-404" and POOL_404 in "/" + rest:
                self._send(req, 404, b"not here\n", head)
            else:
                req.send_response(302)
                req.send_header("Location", self.upstream_url(rest))
                req.send_header("Content-Length", "0")
                req.end_headers()
            self.requests.append((req.path, 302))
            return
        if fault == "no-signature" and rest.endswith(("InRelease", "Release.gpg")):
            self._send(req, 404, b"", head)
            return
        code, body = self.fetch(rest)
        if code == 200:
            body = spoil(fault, rest, body)
        self._send(req, code, body, head)

    def _send(self, req: http.server.BaseHTTPRequestHandler, code: int, body: bytes,
              head: bool) -> None:
        self.requests.append((req.path, code))
        req.send_response(code)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if not head:
            req.wfile.write(body)


def spoil(fault: str, rest: str, body: bytes) -> bytes:
    """The mirror's fault applied to one file."""
    if fault == "corrupt-packages" and "/binary-" in rest and "Release" not in rest:
        data = bytearray(body)
        for i in range(len(data) // 3, min(len(data), len(data) // 3 + 64)):
            data[i] ^= 0xFF
        return bytes(data)
    if fault == "bad-signature" and rest.endswith("InRelease"):
        return body.replace(b"Origin: Debian", b"Origin: Debiam", 1)
    return body


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- a small disk ---------------------------------------------------------------------


def tmpfs_wrapper(base: Path, size: str) -> list[str]:
    """argv prefix: run the build in a private mount namespace of the test, on a tmpfs at base.

    The tmpfs exists only in that namespace (propagation private), so it can
    never leak into the host, however the test ends. After deblive exits the
    shell reports what is left in the work tree (the build's namespace is gone
    by then, the test's is not), and exits with deblive's status.
    """
    script = textwrap.dedent(f"""\
        mkdir -p {base} && mount -t tmpfs -o size={size} deblive-faults {base} || exit 99
        "$@"
        rc=$?
        echo "AFTER: rootfs $(test -d {base}/w/rootfs/etc && echo kept || echo gone)"
        echo "AFTER: output $(ls -A {base}/w/output 2>/dev/null | tr '\\n' ' ')"
        echo "AFTER: mounts $(grep -c ' {base}/' /proc/self/mounts)"
        exit $rc
        """)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]


def fill(run: Run, base: Path, leave_mib: int) -> int:
    """Fill the build's tmpfs until leave_mib MiB are free; returns the bytes allocated.

    The tmpfs is visible through the wrapper shell's root (/proc/PID/root).
    """
    inside = Path(f"/proc/{run.proc.pid}/root") / base.relative_to("/")
    st = os.statvfs(inside)
    free = st.f_bavail * st.f_frsize
    size = max(free - leave_mib * 2**20, 0)
    fd = os.open(inside / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while size > 0:
            try:
                os.posix_fallocate(fd, 0, size)
                break
            except OSError:
                # The build wrote meanwhile: the disk is as full as wanted, or nearly.
                size -= 16 * 2**20
    finally:
        os.close(fd)
    return size


@contextmanager
def host_checked(workdir: Path, outdir: Path | None) -> Iterator[Callable[[Run | None], None]]:
    """Snapshot the host before a case; the yielded function checks it afterwards."""
    before = HostSnapshot.take()
    yield lambda run: assert_host_intact(run, before, workdir, outdir)


def host_mirror() -> str:
    from deblive.host import hostapt

    mirror = hostapt.host_mirror()
    assert mirror, "the host's apt sources name no mirror"
    return mirror


# -- the cases, shared by the CI subset and the extended tier -----------------------------

SIGNAL_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}


def signal_case(config: Path, name: str, stage: str, sig: signal.Signals,
                delay: float = 2.0) -> dict[str, float]:
    """Send sig once the build prints "stage <stage>: start"; check the end and the host.

    Returns measured times (seconds to reach the stage, to stop after the signal).
    """
    workdir, outdir = case_dirs(name)
    with host_checked(workdir, outdir) as check:
        extra = () if stage in ("iso", "medium", "bootloaders") else ("--no-iso",)
        run = start_build(config, name, *extra, workdir=workdir, outdir=outdir)
        try:
            run.wait_for(rf"stage {stage}: start")
            reached = time.monotonic() - run.started
            run.remember_namespace()
            time.sleep(delay)
            sent = run.kill(sig)
            code = run.finish(timeout=120)
            stopped = time.monotonic() - sent
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
        out = run.output
        assert code == SIGNAL_STATUS[sig], out[-3000:]
        if sig != signal.SIGKILL:
            assert stopped < 30, f"took {stopped:.1f} s to stop"
            expected = (f"deblive: interrupted by {sig.name} in stage {stage}; "
                        f"work tree kept at {workdir}")
            assert expected in out, out[-3000:]
            assert "mounts below the work tree after teardown: 0" in out
        check(run)
        assert workdir.is_dir(), "the work tree must be kept for inspection"
        cleaned = run_cli("clean", workdir)
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
        assert not workdir.exists()
        remove_tree(outdir)
    return {"reach": reached, "stop": stopped}


def bad_config_case(case: BadConfig, base: Path) -> None:
    """`deblive validate` and `deblive build` both refuse it: exit 2, file and key named."""
    config = case.write(base)
    workdir = WORK_BASE / f"badcfg-{case.id}"
    outdir = base / case.id / "out"
    remove_tree(workdir)
    runs = []
    if case.validate:
        runs.append(("validate", run_cli("validate", config, *case.args)))
    runs.append(("build", run_cli("build", config, *case.args, "-o", outdir, "--workdir",
                                  workdir, "--cache-dir", CACHE)))
    for what, proc in runs:
        text = proc.stdout + proc.stderr
        assert proc.returncode == 2, f"{what}: status {proc.returncode}: {text}"
        assert error_line(proc.stderr), f"{what}: {text}"
        assert str(config) in text or str(config.resolve()) in text, f"{what}: {text}"
        assert case.key in text, f"{what}: {text}"
        assert "Traceback" not in text
    assert not workdir.exists(), "a refused build touched its work directory"
    assert not (workdir.parent / f".{workdir.name}.lock").exists()
    assert not outdir.exists(), "a refused build created its output directory"


def disk_case(config: Path, name: str, size: str, fill_at: str | None, leave_mib: int,
              extra: tuple[str, ...] = ()) -> tuple[int, str]:
    """A build on a tmpfs of size in the test's own mount namespace; fill it at a stage.

    Returns deblive's exit status and the console output (with the AFTER: lines
    the wrapper shell prints about the work tree it still sees).
    """
    base = WORK_BASE / f"{name}-tmpfs"
    base.mkdir(parents=True, exist_ok=True)
    workdir = base / "w"
    outdir = WORK_BASE / f"{name}-out"
    remove_tree(outdir)
    with host_checked(base, outdir) as check:
        # The tree on disk (host.treeram): it is the disk that fills up here.
        run = start_build(config, name, *extra, "--tree", "disk", wrap=tmpfs_wrapper(base, size),
                          workdir=workdir, outdir=outdir)
        try:
            run.wait_for(r"stage bootstrap: start")
            run.remember_namespace()
            if fill_at is not None:
                run.wait_for(rf"stage {fill_at}: start")
                fill(run, base, leave_mib)
            code = run.finish(timeout=1200)
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
        check(run)
    out = run.output
    assert "Traceback" not in out, out[-4000:]
    assert "AFTER: mounts 0" in out, out[-2000:]
    remove_tree(outdir)
    with suppress(OSError):
        base.rmdir()
    return code, out
