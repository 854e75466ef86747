"""Running things inside the image: environment, apt, and the temporary changes
a build makes to the tree (service block, resolv.conf) that must be undone.

Each temporary change is a context manager that restores exactly what was
there before, so a failure at any point leaves the tree as the packages made it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from deblive.runner import DebliveError, Result, Runner

CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# apt without progress bars, every package step still logged (seed point 17),
# Recommends on (seed point 14), and the package's shipped conffiles kept.
APT_OPTIONS = (
    "-y",
    "-q",
    "-o", "Dpkg::Use-Pty=0",
    "-o", "APT::Color=0",
    "-o", "APT::Install-Recommends=true",
    "-o", "Dpkg::Options::=--force-confdef",
    "-o", "Dpkg::Options::=--force-confold",
    "-o", "Acquire::Retries=3",
)

POLICY_RC_D = "#!/bin/sh\n# deblive: no services start while the image is built\nexit 101\n"
NO_OP_DAEMON = (
    "#!/bin/sh\n"
    "# deblive: start-stop-daemon diverted while the image is built\n"
    'echo "deblive: not running start-stop-daemon $*" >&2\n'
    "exit 0\n"
)


def chroot_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment: nothing of the host's locale, paths or terminal leaks in."""
    env = {
        "PATH": CHROOT_PATH,
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "DEBIAN_FRONTEND": "noninteractive",
        "DEBCONF_NONINTERACTIVE_SEEN": "true",
        "DEBCONF_NOWARNINGS": "yes",
        "APT_LISTCHANGES_FRONTEND": "none",
        "APT_LISTBUGS_FRONTEND": "none",
    }
    if extra:
        env.update(extra)
    return env


def chroot_argv(root: Path, argv: Sequence[str]) -> list[str]:
    return ["chroot", str(root), *argv]


def apt_get_argv(root: Path, args: Sequence[str]) -> list[str]:
    """The command line for apt-get inside the chroot."""
    return chroot_argv(root, ["apt-get", *APT_OPTIONS, *args])


class Chroot:
    """Runs commands in the image root with the chroot environment."""

    def __init__(self, root: Path, runner: Runner, apt_log: Path | None = None) -> None:
        self.root = root
        self.runner = runner
        self.apt_log = apt_log

    def run(
        self, argv: Sequence[str], *, what: str | None = None, input_text: str | None = None,
        capture: bool = False,
    ) -> Result:
        return self.runner.run(
            chroot_argv(self.root, argv), env=chroot_env(), inherit_env=False, what=what,
            input_text=input_text, capture=capture,
        )

    def apt_get(self, *args: str, what: str | None = None) -> Result:
        return self.runner.run(
            apt_get_argv(self.root, args), env=chroot_env(), inherit_env=False,
            what=what or f"apt-get {args[0] if args else ''}".strip(), tee=self.apt_log,
        )


@contextmanager
def service_block(root: Path, runner: Runner) -> Iterator[None]:
    """No daemon starts inside the chroot: policy-rc.d plus a diverted start-stop-daemon.

    An existing policy-rc.d is never clobbered: it is moved aside and put back.
    """
    policy = root / "usr/sbin/policy-rc.d"
    saved = policy.with_name("policy-rc.d.deblive-saved")
    if saved.exists():
        raise DebliveError(f"{saved} exists: a previous build did not restore policy-rc.d")
    if policy.exists() or policy.is_symlink():
        os.rename(policy, saved)
    policy.write_text(POLICY_RC_D)
    policy.chmod(0o755)
    daemon = Path("/usr/sbin/start-stop-daemon")
    if not (root / daemon.relative_to("/")).exists():
        daemon = Path("/sbin/start-stop-daemon")
    diverted = False
    chroot = Chroot(root, runner)
    try:
        if (root / daemon.relative_to("/")).exists():
            chroot.run(
                ["dpkg-divert", "--local", "--rename", "--add", str(daemon)],
                what="diverting start-stop-daemon",
            )
            diverted = True
            target = root / daemon.relative_to("/")
            target.write_text(NO_OP_DAEMON)
            target.chmod(0o755)
        yield
    finally:
        if diverted:
            (root / daemon.relative_to("/")).unlink(missing_ok=True)
            chroot.run(
                ["dpkg-divert", "--local", "--rename", "--remove", str(daemon)],
                what="restoring start-stop-daemon",
            )
        policy.unlink(missing_ok=True)
        if saved.exists() or saved.is_symlink():
            os.rename(saved, policy)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@contextmanager
def host_resolv_conf(root: Path, host: Path = Path("/etc/resolv.conf")) -> Iterator[None]:
    """The host's resolv.conf for the build; the image's own restored afterwards.

    If a package replaced the file during the build (its content is no longer
    the copy we put there), the package's version is kept, as debos does.
    """
    target = root / "etc/resolv.conf"
    saved = root / "etc/resolv.conf.deblive-saved"
    existed = target.exists() or target.is_symlink()
    if existed:
        os.rename(target, saved)
    if host.exists():
        shutil.copyfile(host, target)
    placed = _digest(target)
    try:
        yield
    finally:
        still_ours = target.is_file() and not target.is_symlink() and _digest(target) == placed
        if still_ours or not (target.exists() or target.is_symlink()):
            target.unlink(missing_ok=True)
            if existed:
                os.rename(saved, target)
        elif existed:
            saved.unlink(missing_ok=True)
