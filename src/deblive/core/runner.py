"""The one place that starts external programs.

Each command line is logged, its output is streamed line by line into the
build log, and a failure raises CommandError carrying the command, its exit
status or signal, the last lines of its output and the path of the full log:
vmdebootstrap captured everything and printed it at the end, which hid
30-minute apt runs and lost the output on a crash.

Two kinds of child: run() runs a command to completion; spawn() starts a
long-running one (a VM) whose pipes belong to the caller and whose whole
process tree is ended when its context ends. Every child is remembered, so a
signal to deblive ends them all (terminate_children). No other module of
deblive imports subprocess (a unit test holds that).
"""

from __future__ import annotations

import collections
import contextlib
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from deblive.core.errors import DebliveError
from deblive.core.log import BuildLog
from deblive.core.procstat import process_table

TAIL_LINES = 25
NOTABLE_LINES = 20
# Lines worth quoting even when they scrolled out of the tail: apt's and
# dpkg's errors (a failed fetch names the mirror and URL), and a full disk.
NOTABLE_PREFIXES = ("E: ", "W: ", "Err:", "dpkg: error", "FATAL ERROR")
NOTABLE_WORDS = ("No space left on device", "Hash Sum mismatch", "NO_PUBKEY", "BADSIG")
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when a child is ended

Argv = Sequence[str | os.PathLike[str]]


def is_notable(line: str) -> bool:
    """Does this output line explain a failure (apt error, full disk, bad signature)?"""
    stripped = line.strip()
    return stripped.startswith(NOTABLE_PREFIXES) or any(w in stripped for w in NOTABLE_WORDS)


class CommandError(DebliveError):
    """An external command failed."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int,
        tail: Sequence[str],
        log_path: Path | None,
        what: str | None = None,
        notable: Sequence[str] = (),
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.tail = list(tail)
        self.log_path = log_path
        self.what = what
        # Error lines from anywhere in the output (the tail may have lost them).
        self.notable = list(notable)
        super().__init__(self.describe())

    @property
    def status_text(self) -> str:
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = str(-self.returncode)
            return f"killed by signal {name}"
        if self.returncode == 127:
            return "exit status 127 (command not found)"
        return f"exit status {self.returncode}"

    def describe(self) -> str:
        head = f"{self.what}: " if self.what else ""
        lines = [f"{head}command failed with {self.status_text}: {shlex.join(self.argv)}"]
        earlier = [line for line in self.notable if line not in self.tail]
        if earlier:
            lines.append("error lines earlier in its output:")
            lines.extend(f"  {line}" for line in earlier)
        if self.tail:
            lines.append(f"last {len(self.tail)} lines of its output:")
            lines.extend(f"  {line}" for line in self.tail)
        if self.log_path is not None:
            lines.append(f"full log: {self.log_path}")
        return "\n".join(lines)


@dataclass
class Result:
    argv: list[str]
    returncode: int
    output: str  # standard output (merged with standard error unless stderr="capture")
    errors: str = ""  # standard error, with stderr="capture"


class Process:
    """A long-running child started by Runner.spawn: a VM and its pipes.

    The caller reads and writes the pipes; leaving the context (or stop())
    ends the child's whole process tree, SIGTERM first.
    """

    def __init__(self, popen: subprocess.Popen[bytes], runner: Runner) -> None:
        self.popen = popen
        self._runner = runner

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stdin(self) -> IO[bytes] | None:
        return self.popen.stdin

    @property
    def stdout(self) -> IO[bytes] | None:
        return self.popen.stdout

    @property
    def stderr(self) -> IO[bytes] | None:
        return self.popen.stderr

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status, or None if the child still runs after timeout seconds."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 3.0) -> None:
        """End the child and its tree (SIGTERM, SIGKILL after grace), close the pipes."""
        _end_tree(self.popen, grace)
        self._runner.forget(self.popen)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> Process:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Runner:
    """Runs commands, logs them, and remembers live children so a signal can end them."""

    def __init__(self, log: BuildLog) -> None:
        self.log = log
        self._children: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        # Set when the build log could not be written (full disk): the command
        # goes on and its own error, not the log's, is what gets reported.
        self._log_error: OSError | ValueError | None = None
        # What every command of one build sees, whatever its environment: the
        # build's SOURCE_DATE_EPOCH (a chroot's clean environment included), so
        # mkinitramfs, dpkg-deb, mksquashfs and xorriso all date by the inputs.
        self.fixed_env: dict[str, str] = {}

    @property
    def log_error(self) -> OSError | ValueError | None:
        """The first failure to write the build log or a tee file (full disk), if any."""
        return self._log_error or self.log.write_error

    def _log(self, method: str, line: str) -> None:
        try:
            getattr(self.log, method)(line)
        except OSError as exc:
            self.note_log_error(exc)

    def note_log_error(self, exc: OSError) -> None:
        """Remember the first failure to write a log (a full disk): the command goes on."""
        if self._log_error is None:
            self._log_error = exc

    def _start(self, args: list[str], what: str | None, **popen: object) -> subprocess.Popen[bytes]:
        """Popen in its own process group: a terminal's Ctrl-C reaches deblive only,
        which then ends the child's whole tree in order, instead of every process of
        the build getting SIGINT at once in no order."""
        self._log("debug", f"$ {shlex.join(args)}")
        try:
            proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
                args, process_group=0, **popen
            )
        except FileNotFoundError:
            raise CommandError(
                args, 127, [f"{args[0]}: command not found"], self.log.path, what
            ) from None
        with self._lock:
            self._children.add(proc)
        return proc

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._children.discard(proc)

    def run(
        self,
        argv: Argv,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        check: bool = True,
        capture: bool = False,
        input_data: str | bytes | None = None,
        what: str | None = None,
        quiet: bool = False,
        inherit_env: bool = True,
        tee: Path | None = None,
        stderr: Literal["merge", "capture"] = "merge",
    ) -> Result:
        """Run argv to its end, streaming its output into the log.

        env is added to the current environment, or with inherit_env=False is the
        whole environment (chroot commands must not see the host's locale or paths).
        capture keeps the output in the Result (it is still logged unless quiet);
        stderr="capture" keeps standard error apart (for parsers of standard output).
        input_data is written to the command's standard input and never logged.
        tee appends the output to a second file too (apt's own log of the build).
        """
        args = [os.fspath(a) for a in argv]
        full_env = dict(os.environ) if inherit_env else {}
        if env:
            full_env.update(env)
        full_env.update(self.fixed_env)
        proc = self._start(
            args, what,
            stdin=subprocess.PIPE if input_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if stderr == "merge" else subprocess.PIPE,
            env=full_env, cwd=cwd,
        )
        out = _Output(self, capture, quiet, tee)
        errors: list[str] = []
        threads: list[threading.Thread] = []
        try:
            if input_data is not None:
                data = input_data.encode() if isinstance(input_data, str) else input_data
                threads.append(_thread(_feed, proc.stdin, data))
            if proc.stderr is not None:
                threads.append(_thread(self._drain, proc.stderr, errors, quiet))
            assert proc.stdout is not None
            for raw in proc.stdout:
                out.line(_decode(raw))
            returncode = proc.wait()
            for thread in threads:
                thread.join()
        except BaseException:
            # Interrupted (a signal) or a crash while the command runs: end the
            # command's whole process tree before anything is torn down, so no
            # apt or mksquashfs outlives the build or holds its mounts.
            _end_tree(proc)
            raise
        finally:
            out.close()
            self.forget(proc)
        self._log("debug", f"exit status {returncode}: {args[0]}")
        if check and returncode != 0:
            out.tail.extend(errors[-TAIL_LINES:])
            raise CommandError(args, returncode, list(out.tail), self.log.path, what,
                               list(out.notable))
        return Result(args, returncode, _joined(out.captured), _joined(errors))

    def _drain(self, stream: IO[bytes], into: list[str], quiet: bool) -> None:
        for raw in stream:
            line = _decode(raw)
            into.append(line)
            if not quiet:
                self._log("output", line)

    def output(self, argv: Argv, **kwargs: object) -> str:
        """Run argv and return its output (logged quietly)."""
        result = self.run(argv, capture=True, quiet=True, **kwargs)  # type: ignore[arg-type]
        return result.output

    def spawn(
        self, argv: Argv, *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
        what: str | None = None, stderr: Literal["pipe", "merge"] = "pipe",
    ) -> Process:
        """Start a long-running command with pipes for all three streams (a VM); with
        stderr="merge" its standard error comes on standard output (one pipe to drain)."""
        args = [os.fspath(a) for a in argv]
        full_env = {**os.environ, **(env or {}), **self.fixed_env}
        proc = self._start(
            args, what, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if stderr == "pipe" else subprocess.STDOUT,
            cwd=cwd, env=full_env,
        )
        return Process(proc, self)

    def terminate_children(self, grace: float = STOP_GRACE) -> None:
        """End every running child: SIGTERM, then SIGKILL after grace seconds."""
        with self._lock:
            children = list(self._children)
        for proc in children:
            _end_tree(proc, grace)

    def running(self) -> list[int]:
        """PIDs of the commands running now (for tests and diagnostics)."""
        with self._lock:
            return [proc.pid for proc in self._children if proc.poll() is None]


class _Output:
    """Where a command's output lines go: the log, the tail and notable lines for an
    error, the captured text, and a tee file."""

    def __init__(self, runner: Runner, capture: bool, quiet: bool, tee: Path | None) -> None:
        self.runner = runner
        self.capture = capture
        self.quiet = quiet
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.notable: collections.deque[str] = collections.deque(maxlen=NOTABLE_LINES)
        self.captured: list[str] = []
        self.tee = tee.open("a", encoding="utf-8") if tee is not None else None

    def line(self, line: str) -> None:
        self.tail.append(line)
        if is_notable(line):
            self.notable.append(line)
        if self.capture:
            self.captured.append(line)
        if not self.quiet:
            self.runner._log("output", line)
        if self.tee is not None:
            try:
                self.tee.write(line + "\n")
            except OSError as exc:
                self.runner.note_log_error(exc)

    def close(self) -> None:
        if self.tee is not None:
            self.tee.close()


def _decode(raw: bytes) -> str:
    line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    # apt and friends redraw lines with \r; keep the last state only.
    return line.rsplit("\r", 1)[-1]


def _joined(lines: list[str]) -> str:
    return "\n".join(lines) + ("\n" if lines else "")


def _thread(target: object, *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def _feed(stream: IO[bytes], data: bytes) -> None:
    try:
        stream.write(data)
        stream.close()
    except BrokenPipeError:
        pass


def _end_tree(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGTERM to a command, its process group and all descendants; SIGKILL after grace."""
    if proc.poll() is not None and not _descendants(proc.pid):
        return
    _signal_tree(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    # Whatever is left of the tree (a dpkg under apt, a daemon the hook started
    # in the same group) gets SIGKILL.
    _signal_tree(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)


def _descendants(pid: int) -> list[int]:
    """All descendants of pid, from /proc (children files need CONFIG_PROC_CHILDREN)."""
    parents: dict[int, list[int]] = collections.defaultdict(list)
    for process in process_table():
        parents[process.ppid].append(process.pid)
    out: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        for child in parents.get(current, []):
            out.append(child)
            todo.append(child)
    return out


def _signal_tree(pid: int, sig: signal.Signals) -> None:
    """Signal pid, everything below it, and its process group (children are leaders)."""
    for target in [*_descendants(pid), pid]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
