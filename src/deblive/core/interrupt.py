"""SIGINT and SIGTERM end a build through its teardown, exactly once.

The first signal raises Interrupted in the main thread, so every `finally`
and ExitStack of the pipeline runs (children ended, mounts undone deepest
first). A second signal while that teardown runs must not cut it short: it
is noted and ignored; SIGKILL remains for the impatient, and the build's
private mount namespace plus its reaper make even that safe.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType


class Interrupted(BaseException):
    """SIGINT or SIGTERM: ends the build through its teardown, like KeyboardInterrupt.

    A BaseException, so `except Exception` in a stage cannot swallow it. The
    build fills in stage and workdir so the message says what was stopped.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.stage: str | None = None
        self.workdir: str | None = None
        self.workdir_kept = True
        super().__init__(signal.Signals(signum).name)

    @property
    def signame(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def describe(self) -> str:
        text = f"interrupted by {self.signame}"
        if self.stage is not None:
            text += f" in stage {self.stage}"
        if self.workdir is not None:
            if self.workdir_kept:
                text += (
                    f"; work tree kept at {self.workdir} "
                    f"(remove it with: deblive clean {self.workdir})"
                )
            else:
                text += f"; work tree {self.workdir} removed"
        return text


_state = {"interrupted": 0}


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if _state["interrupted"]:
        print(
            f"deblive: {signal.Signals(signum).name} again: still cleaning up, please wait",
            file=sys.stderr, flush=True,
        )
        return
    _state["interrupted"] = signum
    raise Interrupted(signum)


def install_handlers() -> None:
    """SIGINT and SIGTERM raise Interrupted (the first one only)."""
    _state["interrupted"] = 0
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def ignore_further() -> None:
    """After an interrupted build is torn down: a repeated Ctrl-C must not change the status.

    Python resets its handlers to the default at interpreter shutdown, so a
    second signal arriving then would kill the process (status -2, not 130);
    ignored signals are left alone.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def interrupted_by() -> int:
    """The signal that interrupted this process, 0 if none."""
    return _state["interrupted"]


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while results are published.

    Publishing moves several files; an interruption half way would leave an
    output directory with an ISO but no report.json. Blocked signals stay
    pending and are handled (as Interrupted) once publishing is complete.
    """
    signals = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
