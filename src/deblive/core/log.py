"""Build logging: one log file with everything, a console that shows the work.

Every line an external command prints goes to the build log, labelled with the
stage that ran it. The console gets stage start/end lines with durations and,
on a terminal, a live status line with the latest output of long commands, so
a 20-minute apt run is visibly alive; in a pipe it gets plain lines instead.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.status import Status
from rich.text import Text


@dataclass
class StageTiming:
    """How long one stage took, for report.json."""

    name: str
    seconds: float
    ok: bool


@dataclass
class BuildLog:
    """The build log file plus the console view of it."""

    path: Path | None = None
    verbose: bool = False
    console: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))
    timings: list[StageTiming] = field(default_factory=list)
    current_stage: str = "main"
    _file: IO[str] | None = None
    _status: Status | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_plain: float = 0.0
    write_error: OSError | ValueError | None = None

    def open(self, path: Path) -> None:
        """Start writing to a log file (appending, so a resumed build keeps history)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8", errors="replace", buffering=1)

    def close(self) -> None:
        self.detach_file()

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal

    def _write(self, line: str) -> None:
        if self._file is None:
            return
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            try:
                self._file.write(f"{stamp} [{self.current_stage}] {line}\n")
            except (OSError, ValueError) as exc:
                # A full disk must not hide the build's real error behind the
                # log's own: from here on the console is the only record.
                self.write_error = exc
                self.detach_file()

    def detach_file(self) -> None:
        """Stop writing the log file (it cannot take more), keep the console."""
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError, ValueError):
                file.close()

    def _show(self, label: str, style: str, message: str) -> None:
        """A labelled console line; the message is plain text, never rich markup
        (a guest's console line such as "[/x]" must print as it is)."""
        self.console.print(Text.assemble((label, style), ": ", message), highlight=False)

    def info(self, message: str) -> None:
        """A line for both the console and the log."""
        self._write(message)
        self._show("deblive", "bold blue", message)

    def warn(self, message: str) -> None:
        self._write(f"WARNING: {message}")
        self._show("warning", "bold yellow", message)

    def error(self, message: str) -> None:
        self._write(f"ERROR: {message}")
        self._show("error", "bold red", message)

    def debug(self, message: str) -> None:
        """A line for the log only (and the console with --verbose)."""
        self._write(message)
        if self.verbose:
            self.console.print(Text(message, style="dim"), highlight=False)

    def output(self, line: str) -> None:
        """One line of an external command's output."""
        self._write(f"| {line}")
        if self.verbose:
            self.console.print(f"  {line}", highlight=False, markup=False)
        elif self._status is not None:
            self._status.update(Text(f"{self.current_stage}: {line[:100]}"))
        elif not self.interactive:
            # In a pipe, show that long work is alive without flooding: one line
            # every 15 seconds at most.
            now = time.monotonic()
            if now - self._last_plain >= 15:
                self._last_plain = now
                print(f"  ... {self.current_stage}: {line[:120]}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Log a stage's start, end and duration, and record its timing."""
        previous = self.current_stage
        self.current_stage = name
        start = time.monotonic()
        self.info(f"stage {name}: start")
        ok = False
        status_cm: contextlib.AbstractContextManager[object]
        if self.interactive and not self.verbose:
            self._status = self.console.status(Text(f"{name} ..."))
            status_cm = self._status
        else:
            status_cm = contextlib.nullcontext()
        try:
            with status_cm:
                yield
            ok = True
        finally:
            self._status = None
            seconds = time.monotonic() - start
            self.timings.append(StageTiming(name, round(seconds, 2), ok))
            word = "done" if ok else "FAILED"
            self.info(f"stage {name}: {word} in {format_seconds(seconds)}")
            self.current_stage = previous


def format_seconds(seconds: float) -> str:
    """1.2 s, 2 min 05 s: short and readable."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    return f"{minutes} min {sec:02d} s"
