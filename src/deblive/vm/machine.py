"""A running qemu: its process, serial console and QMP, for boot tests and builder VMs.

The process is started by the runner (core.runner.spawn), so a signal to
deblive ends it with every other child. The serial console is read into a
growing text that expect() searches from a cursor, so the same prompt is
never matched twice. QMP (through qemu.qmp) is used only for what the serial
console cannot do: screendump, pressing keys on the VM's keyboard, quit.
check_alive() tells a VM that died, a KVM that broke (its error line, or a
guest silent from the start) and a VM that is merely slow apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from deblive.core.runner import Process, Runner
from deblive.vm import screen
from deblive.vm.command import VMSpec, build_command
from deblive.vm.console import StreamBuffer, clean_serial
from deblive.vm.errors import ExpectTimeout, KvmFailure, QemuError, VMExited

KVM_ERROR_TEXT = "KVM internal error"

# qemu.qmp logs every failed connection attempt at ERROR level; deblive turns
# such failures into QemuError with its own message, so its log stays quiet.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


async def _qmp_execute(
    socket_path: Path, command: str, arguments: Mapping[str, object] | None, timeout: float
) -> object:
    from qemu.qmp import QMPClient

    client = QMPClient("deblive")
    await asyncio.wait_for(client.connect(str(socket_path)), timeout)
    try:
        return await asyncio.wait_for(client.execute(command, arguments), timeout)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), timeout)


def qmp_execute(socket_path: Path, command: str, arguments: Mapping[str, object] | None = None,
                timeout: float = 20.0) -> object:
    """Run one QMP command on a fresh connection (QMP takes one client at a time)."""
    return asyncio.run(_qmp_execute(socket_path, command, arguments, timeout))


@contextlib.contextmanager
def vm_workdir(prefix: str = "deblive-vm-") -> Iterator[Path]:
    """A private temp dir for the varstore copy, QMP socket and screendump; always removed."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Machine:
    """A running qemu with its serial console. Use as a context manager."""

    def __init__(self, spec: VMSpec, runner: Runner, serial_log: Path, workdir: Path,
                 extra_args: tuple[str, ...] = (), binary: str | None = None) -> None:
        self.spec = spec
        self.binary = binary  # another qemu-system program (a wrapper) than the spec's
        self.runner = runner
        self.serial_log = serial_log
        self.workdir = workdir
        self.extra_args = extra_args
        self.cursor = 0
        self.started = 0.0
        self.process: Process | None = None
        self._serial: StreamBuffer | None = None
        self._stderr: StreamBuffer | None = None
        self._log_file: IO[bytes] | None = None
        self._qmp_lock = threading.Lock()

    @property
    def argv(self) -> list[str]:
        argv = [*build_command(self.spec), *self.extra_args]
        if self.binary is not None:
            argv[0] = self.binary
        return argv

    def start(self) -> None:
        self.serial_log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.serial_log.open("ab")
        self.started = time.monotonic()
        self.process = self.runner.spawn(self.argv, cwd=self.workdir,
                                         what=f"qemu ({self.spec.name})")
        self._serial = StreamBuffer(self.process.stdout, self._log_file)
        self._stderr = StreamBuffer(self.process.stderr)

    def __enter__(self) -> Machine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End qemu if it still runs and close the log; safe to call twice."""
        if self.process is not None:
            self.process.stop()
        for buf in (self._serial, self._stderr):
            if buf is not None:
                buf.join()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- state

    @property
    def text(self) -> str:
        return self._serial.text if self._serial is not None else ""

    @property
    def stderr_text(self) -> str:
        return self._stderr.text if self._stderr is not None else ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def first_output_after(self) -> float | None:
        """Seconds from start to the first serial byte, None while silent."""
        if self._serial is None or self._serial.first_output is None:
            return None
        return self._serial.first_output - self.started

    def milestones(self, patterns: Mapping[str, re.Pattern[str]]) -> dict[str, float]:
        """Seconds from start to the first serial appearance of each pattern.

        Where a boot spends its time (firmware, boot loader, kernel, initramfs,
        userspace) shows in when their first words arrive on the console.
        """
        if self._serial is None:
            return {}
        text = self._serial.text
        arrivals = list(self._serial.arrivals)
        found: dict[str, float] = {}
        for name, pattern in patterns.items():
            match = pattern.search(text)
            if match is None:
                continue
            for when, received in arrivals:
                if received >= match.end():
                    found[name] = round(when - self.started, 1)
                    break
        return found

    def check_alive(self, silence_limit: float | None = None) -> None:
        """Raise when KVM broke, qemu ended, or the guest was silent too long from start."""
        if KVM_ERROR_TEXT in self.stderr_text:
            raise KvmFailure("qemu reported a KVM internal error")
        if not self.running:
            code = self.process.returncode if self.process is not None else None
            detail = self.stderr_text.strip().splitlines()[-3:]
            raise VMExited(f"qemu exited (status {code})" + (": " + " / ".join(detail)))
        if (silence_limit is not None and self.first_output_after is None
                and self.elapsed > silence_limit):
            raise KvmFailure(f"no serial output in the first {silence_limit:.0f} s")

    # -- serial

    def expect(self, pattern: str | re.Pattern[str], timeout: float,
               silence_limit: float | None = None, what: str | None = None) -> re.Match[str]:
        """Wait for pattern on serial after the cursor; move the cursor past it."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        assert self._serial is not None
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.text, self.cursor)
            if match is not None:
                self.cursor = match.end()
                return match
            self.check_alive(silence_limit)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ExpectTimeout(
                    f"timed out after {timeout:.0f} s waiting for {what or regex.pattern!r}"
                )
            with self._serial.changed:
                self._serial.changed.wait(min(remaining, 0.5))

    def send(self, text: str) -> None:
        """Type text on the serial console."""
        if self.process is None or self.process.stdin is None:
            raise QemuError("qemu is not running")
        try:
            self.process.stdin.write(text.encode())
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise VMExited("qemu exited (serial input closed)") from exc

    def tail(self, lines: int = 30) -> list[str]:
        """The last serial lines, without terminal escapes, for error reports."""
        return clean_serial(self.text).splitlines()[-lines:]

    def wait_exit(self, timeout: float) -> bool:
        """True if qemu ended within timeout."""
        if self.process is None:
            return True
        return self.process.wait(timeout) is not None

    # -- QMP

    def qmp(self, command: str, arguments: Mapping[str, object] | None = None) -> object:
        """One QMP command; any failure (VM gone, socket, QMP error) is a QemuError."""
        if self.spec.qmp_socket is None:
            raise QemuError("this VM has no QMP socket")
        with self._qmp_lock:
            try:
                return qmp_execute(self.spec.qmp_socket, command, arguments)
            except Exception as exc:
                raise QemuError(f"QMP {command} failed: {exc!r}") from exc

    def screendump(self) -> tuple[int, int, bytes]:
        """The screen as (width, height, RGB bytes)."""
        ppm = self.workdir / "screen.ppm"
        self.qmp("screendump", {"filename": str(ppm)})
        try:
            return screen.parse_ppm(ppm.read_bytes())
        except (OSError, ValueError) as exc:
            raise QemuError(f"unreadable screendump: {exc}") from exc
        finally:
            ppm.unlink(missing_ok=True)

    def screendump_png(self, dest: Path) -> float:
        """Save the screen as PNG; returns the share of its pixels drawn (screen.drawn_share)."""
        width, height, pixels = self.screendump()
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(screen.encode_png(width, height, pixels))
        return screen.drawn_share(pixels)

    def press_key(self, key: str) -> None:
        """Press a key on the VM's keyboard (qcode name, e.g. "ret")."""
        self.qmp("send-key", {"keys": [{"type": "qcode", "data": key}]})

    def type_text(self, text: str, delay: float = 0.05) -> None:
        """Type text on the VM's keyboard (US layout), for consoles without serial."""
        for char in text:
            keys = [{"type": "qcode", "data": qcode} for qcode in screen.char_qcodes(char)]
            self.qmp("send-key", {"keys": keys})
            time.sleep(delay)

    def quit(self) -> None:
        """Ask qemu to quit through QMP; ignore a VM that is already gone."""
        if self.spec.qmp_socket is None or not self.spec.qmp_socket.exists():
            return
        with contextlib.suppress(Exception):
            self.qmp("quit")
