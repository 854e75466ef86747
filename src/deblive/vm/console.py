"""A VM's serial console: read by a thread into a growing text, searched by expect().

The console is qemu's stdio: pipes need no socket paths, cannot lose early
firmware output and die with the process. The reader thread appends what
arrives (and copies it raw into a log file), remembering when each part
arrived, so boot phases can be timed from the first appearance of their words.
"""

from __future__ import annotations

import codecs
import os
import re
import threading
import time
from typing import IO


class StreamBuffer:
    """Reads a pipe in a thread into text (and optionally a raw log file)."""

    def __init__(self, stream: IO[bytes] | None, log: IO[bytes] | None = None) -> None:
        self._parts: list[str] = []
        self._text = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._log = log
        self.changed = threading.Condition()
        self.last_output = time.monotonic()
        self.first_output: float | None = None
        # (time, characters received so far): when each part of the text arrived.
        self.arrivals: list[tuple[float, int]] = []
        self._received = 0
        self.eof = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            self.eof = True
            return
        fd = stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if self._log is not None and chunk:
                self._log.write(chunk)
                self._log.flush()
            with self.changed:
                if chunk:
                    decoded = self._decoder.decode(chunk)
                    self._parts.append(decoded)
                    now = time.monotonic()
                    self._received += len(decoded)
                    self.arrivals.append((now, self._received))
                    self.last_output = now
                    if self.first_output is None:
                        self.first_output = now
                else:
                    self.eof = True
                self.changed.notify_all()
            if not chunk:
                return

    @property
    def text(self) -> str:
        with self.changed:
            if self._parts:
                self._text += "".join(self._parts)
                self._parts.clear()
            return self._text

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)


ANSI_ESCAPE = re.compile(r"\x1b(\[[0-9;?=]*[ -/]*[@-~]|[()%][0-9A-Za-z@]|[0-~])")

CURSOR_MOVE = re.compile(r"\x1b\[\d*(;\d*)?[Hf]")


def clean_serial(text: str) -> str:
    """Serial text without terminal escapes, NULs and carriage returns.

    Cursor moves become line breaks: boot menus draw by positioning the cursor,
    and joined up they would make one unreadable line.
    """
    text = CURSOR_MOVE.sub("\n", text)
    text = ANSI_ESCAPE.sub("", text).replace("\x0e", "").replace("\x0f", "")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
