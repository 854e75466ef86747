"""Logging in on a VM's serial console, and a shell there that tells output from noise.

Commands go through the serial shell framed by markers the typed text cannot
contain (printf assembles them), so echo, wrapped lines and kernel messages
between commands cannot fake a result. The password is typed only at a
prompt (getty's, sudo's) with echo off: it is in no command line, no serial
log and no message.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from deblive.vm.console import clean_serial
from deblive.vm.errors import ExpectTimeout, QemuError
from deblive.vm.machine import Machine

LOGIN_PROMPT = re.compile(r"login: *$", re.MULTILINE)
PASSWORD_PROMPT = re.compile(r"[Pp]assword: *$", re.MULTILINE)
AFTER_PASSWORD = re.compile(r"(?P<bad>Login incorrect)|(?P<prompt>[$#] *$)", re.MULTILINE)
SUDO_PROMPT = "DL-SUDO-PASSWORD:"


class LoginFailed(QemuError):
    """getty refused the user name or password."""


@dataclass(frozen=True)
class Marked:
    """The output and exit status of one command run through the serial shell."""

    rc: int
    output: str


def marked_command(token: int, command: str) -> str:
    """The line to type: command framed by markers that only printf can produce.

    The typed text holds 'DL-%s-%s' and the token separately, so an echoed
    command line never matches the begin or end marker.
    """
    return f"printf 'DL-%s-%s\\n' B {token}; {command}; printf 'DL-%s-%s=%s\\n' RC {token} \"$?\"\r"


def marker_regex(token: int) -> re.Pattern[str]:
    return re.compile(rf"DL-B-{token}\r*\n(?P<out>.*?)DL-RC-{token}=(?P<rc>\d+)", re.DOTALL)


def parse_marked(text: str, token: int) -> Marked | None:
    """The framed output for token in serial text, or None if it is not complete yet."""
    match = marker_regex(token).search(text)
    if match is None:
        return None
    return _marked_from_match(match)


def _marked_from_match(match: re.Match[str]) -> Marked:
    out = clean_serial(match.group("out"))
    lines = [line.rstrip() for line in out.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return Marked(int(match.group("rc")), "\n".join(lines))


class SerialShell:
    """A logged-in shell on the VM's serial console."""

    def __init__(self, vm: Machine, slowdown: float = 1.0) -> None:
        self.vm = vm
        self._token = 0
        self.slowdown = slowdown  # every timeout is multiplied by this
        self.root = False  # sudo -n works (passwordless, or validated with the password)

    def run(self, command: str, timeout: float = 60.0, secret: str | None = None) -> Marked:
        """Run command; secret, if given, is typed when sudo's prompt appears."""
        self._token += 1
        start = self.vm.cursor
        self.vm.send(marked_command(self._token, command))
        timeout *= self.slowdown
        what = f"output of {command!r}"
        if secret is not None:
            asked = re.compile(f"(?P<prompt>{re.escape(SUDO_PROMPT)})|DL-RC-{self._token}=")
            if self.vm.expect(asked, timeout, what=what).group("prompt"):
                self.vm.send(secret + "\r")
            self.vm.cursor = start  # the whole framed output, the prompt inside it
        match = self.vm.expect(marker_regex(self._token), timeout, what=what)
        return _marked_from_match(match)

    def prepare(self) -> None:
        """No echo, no prompt, no colours or pager: output is only what commands print."""
        self.vm.send(
            "stty -echo cols 250; export PS1= PS2= TERM=dumb SYSTEMD_COLORS=0 "
            "SYSTEMD_PAGER=cat PAGER=cat; unset PROMPT_COMMAND\r"
        )
        self.run("true", timeout=60)

    def sudo_without_password(self) -> Marked:
        result = self.run("sudo -n true 2>&1")
        self.root = self.root or result.rc == 0
        return result

    def sudo_with_password(self, password: str) -> Marked:
        """sudo -v answering its prompt; afterwards sudo -n works on this terminal."""
        result = self.run(f"sudo -S -p '{SUDO_PROMPT}' -v 2>&1", secret=password)
        self.root = self.root or result.rc == 0
        return result


def login(vm: Machine, user: str, password: str, timeout: float) -> None:
    """Answer getty's prompts; the login prompt itself was already seen."""
    for _attempt in range(3):
        time.sleep(0.5)  # let getty finish its prompt before we type
        vm.send(f"{user}\r")
        found = vm.expect(
            re.compile(f"{PASSWORD_PROMPT.pattern}|{LOGIN_PROMPT.pattern}", re.MULTILINE),
            timeout, what="Password: prompt",
        )
        if PASSWORD_PROMPT.search(found.group(0)):
            break
    else:
        raise ExpectTimeout("getty asked for the login name three times")
    vm.send(f"{password}\r")
    result = vm.expect(AFTER_PASSWORD, timeout, what="shell prompt after login")
    if result.group("bad"):
        raise LoginFailed(f"login as {user!r} failed: Login incorrect")
