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

from deblive.core.runner import DebliveError, Result, Runner

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


NO_OP_INITRAMFS = (
    "#!/bin/sh\n"
    "# deblive: update-initramfs deferred while packages are installed; the\n"
    "# initramfs is made once, after the hook\n"
    'echo "deblive: update-initramfs deferred ($*)" >&2\n'
    "exit 0\n"
)
# Earlier in PATH than /usr/sbin: ours, and, through DPkg::Path (apt's PATH
# for dpkg and maintainer scripts, /usr/sbin:/usr/bin:/sbin:/bin by default),
# that of every apt run in the chroot, the hook's too.
INITRAMFS_SHADOW = "usr/local/sbin/update-initramfs"
DPKG_PATH_CONF = "etc/apt/apt.conf.d/00deblive-dpkg-path"


class InitramfsDeferral:
    """Makes the initramfs once, after every package and the hook, instead of per trigger.

    Installing a kernel and live-boot makes the initramfs twice (the kernel's
    postinst hook, then the trigger live-boot activates); a hook that installs
    more makes it again. Each run costs about 18 s here and a quarter of an
    hour in a TCG builder VM. Every caller (the kernel's postinst.d hook,
    initramfs-tools' trigger) runs `update-initramfs` by name, so a no-op in
    /usr/local/sbin, put first in apt's PATH for dpkg, shadows it for the
    install and the hook. It is not a
    dpkg diversion: live-tools diverts update-initramfs itself, and two
    diversions of one file clash. generate() then makes one initramfs per
    installed kernel from the finished tree, so the hook's changes to the
    initramfs configuration count too.
    """

    def __init__(self, root: Path, runner: Runner) -> None:
        self.root = root
        self.chroot = Chroot(root, runner)
        self.active = False

    @property
    def _shadow(self) -> Path:
        return self.root / INITRAMFS_SHADOW

    @property
    def _saved(self) -> Path:
        return self._shadow.with_name("update-initramfs.deblive-saved")

    def start(self) -> None:
        if self._saved.exists() or self._saved.is_symlink():
            raise DebliveError(f"{self._saved} exists: a previous build did not restore it")
        if self._shadow.exists() or self._shadow.is_symlink():
            os.rename(self._shadow, self._saved)  # the image's own: put back afterwards
        self._shadow.parent.mkdir(parents=True, exist_ok=True)
        self._shadow.write_text(NO_OP_INITRAMFS)
        self._shadow.chmod(0o755)
        (self.root / DPKG_PATH_CONF).write_text(f'DPkg::Path "{CHROOT_PATH}";\n')
        self.active = True

    def restore(self) -> None:
        """Take the no-op away again (also after a failure); safe to call twice."""
        if not self.active:
            return
        self._shadow.unlink(missing_ok=True)
        (self.root / DPKG_PATH_CONF).unlink(missing_ok=True)
        if self._saved.exists() or self._saved.is_symlink():
            os.rename(self._saved, self._shadow)
        self.active = False

    def kernels(self) -> list[str]:
        """Kernel versions with both modules and an image in /boot."""
        modules = self.root / "lib/modules"
        if not modules.is_dir():
            return []
        return sorted(
            v.name for v in modules.iterdir()
            if (self.root / "boot" / f"vmlinuz-{v.name}").exists()
        )

    def generate(self) -> list[str]:
        """Restore update-initramfs and make each kernel's initramfs; returns the versions."""
        self.restore()
        if not os.path.lexists(self.root / "usr/sbin/update-initramfs"):
            return []  # no initramfs-tools in the image: nothing to make
        versions = self.kernels()
        for version in versions:
            mode = "-u" if (self.root / "boot" / f"initrd.img-{version}").exists() else "-c"
            self.chroot.run(["update-initramfs", mode, "-k", version],
                            what=f"making the initramfs for {version}")
        return versions


@contextmanager
def initramfs_deferred(root: Path, runner: Runner) -> Iterator[InitramfsDeferral]:
    deferral = InitramfsDeferral(root, runner)
    deferral.start()
    try:
        yield deferral
    finally:
        deferral.restore()


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
