"""A stand-in for qemu-system: a script that plays getty, a shell and sudo on stdio.

Unit tests of the machine, the serial shell and the boot checks drive it instead
of a real guest. FAKE_QEMU picks a scenario (login, kvm-error, silent, exit);
FAKE_SUDO_N is the status `sudo -n true` reports; the password is "live".
"""

import sys
from pathlib import Path

SCRIPT = r"""
import os, subprocess, sys, time
scenario = os.environ.get("FAKE_QEMU", "login")
out = sys.stdout.buffer


def say(data):
    out.write(data)
    out.flush()


def readline():
    buf = b""
    while True:
        c = os.read(0, 1)
        if not c:
            sys.exit(0)
        if c == b"\r":
            return buf.decode()
        buf += c


if scenario == "kvm-error":
    say(b"SeaBIOS\r\n")
    sys.stderr.write("KVM internal error. Suberror: 1\n")
    sys.stderr.flush()
    time.sleep(30)
if scenario == "silent":
    time.sleep(30)
if scenario == "exit":
    say(b"boot\r\n")
    sys.exit(3)
say(b"[  OK  ] Started getty\r\n\r\nDebian GNU/Linux 12 debian ttyS0\r\n\r\ndebian login: ")
user = readline()
say(user.encode() + b"\r\nPassword: ")
if readline() != "live":
    say(b"\r\n\r\nLogin incorrect\r\ndebian login: ")
    time.sleep(30)
say(b"\r\nLinux debian 6.1.0-50-amd64\r\nuser@debian:~$ ")
while True:
    line = readline()
    if "sudo -S -p 'DL-SUDO-PASSWORD:' -v" in line:
        begin, _, rest = line.partition("sudo -S")
        subprocess.run(["sh", "-c", begin.rstrip().rstrip(";")])
        say(b"DL-SUDO-PASSWORD:")
        ok = readline() == "live"
        end = rest.split(";", 1)[1]
        result = subprocess.run(["sh", "-c", f"(exit {0 if ok else 1});" + end],
                                capture_output=True)
        say((result.stdout + result.stderr).replace(b"\n", b"\r\n"))
        continue
    if line.startswith("sudo -n poweroff"):
        sys.exit(0)
    line = line.replace("sudo -n true", "(exit ${FAKE_SUDO_N:-0})")
    result = subprocess.run(["sh", "-c", line], capture_output=True)
    say((result.stdout + result.stderr).replace(b"\n", b"\r\n"))
"""


def install(directory: Path) -> Path:
    """Write the script as an executable fake-qemu in directory and return its path."""
    path = directory / "fake-qemu"
    path.write_text(f"#!{sys.executable}\n{SCRIPT}")
    path.chmod(0o755)
    return path
