"""Running things inside the image: environment, apt, and the temporary changes
a build makes to the tree (service block, deferred initramfs, resolv.conf)
that must be undone.

Each temporary change is a context manager that restores exactly what was
there before, so a failure at any point leaves the tree as the packages made
it. Every host-side touch of the tree goes through its ImageTree.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from deblive.build.kernels import kernel_images
from deblive.core.errors import DebliveError
from deblive.core.files import copy_regular
from deblive.core.runner import Result, Runner
from deblive.host import cpus, deletion
from deblive.host.imagetree import ImageTree

CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A proxy in deblive's environment (a builder VM's, a site's) is apt's in the chroot too.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy")

# apt without progress bars, every package step still logged (seed point 17),
# Recommends on (seed point 14), the package's shipped conffiles kept, and no
# fsync of each unpacked file (the tree is scratch until it is squashed).
APT_OPTIONS = (
    "-y",
    "-q",
    "-o", "Dpkg::Use-Pty=0",
    "-o", "APT::Color=0",
    "-o", "APT::Install-Recommends=true",
    "-o", "Dpkg::Options::=--force-confdef",
    "-o", "Dpkg::Options::=--force-confold",
    "-o", "Dpkg::Options::=--force-unsafe-io",
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
INITRAMFS_SHADOW = "/usr/local/sbin/update-initramfs"
INITRAMFS_SAVED = "/usr/local/sbin/update-initramfs.deblive-saved"
DPKG_PATH_CONF = "/etc/apt/apt.conf.d/00deblive-dpkg-path"
POLICY_RC = "/usr/sbin/policy-rc.d"
POLICY_RC_SAVED = "/usr/sbin/policy-rc.d.deblive-saved"
RESOLV_CONF = "/etc/resolv.conf"
RESOLV_CONF_SAVED = "/etc/resolv.conf.deblive-saved"


# mkinitramfs starts about 19,000 small programs for MODULES=most (realpath and
# readlink several times per module, through copy_file): under C.UTF-8 each one
# loads the locale's files, under C none. Measured on bookworm's default image:
# 31 s against 35-44 s, the same initramfs byte for byte (its file list is sorted
# with LC_ALL=C either way).
INITRAMFS_LOCALE = {"LC_ALL": "C", "LANG": "C"}


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
    env.update({k: os.environ[k] for k in PROXY_VARIABLES if os.environ.get(k)})
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

    def __init__(self, tree: ImageTree, runner: Runner, apt_log: Path | None = None,
                 archives: Path | None = None) -> None:
        self.tree = tree
        self.runner = runner
        self.apt_log = apt_log
        # The build's archives directory, bound onto /var/cache/apt/archives in the tree
        # (build.stages.chrootsetup): where download_packages downloads, if given.
        self.archives = archives

    def run(
        self, argv: Sequence[str], *, what: str | None = None, input_data: str | None = None,
        capture: bool = False, quiet: bool = False, check: bool = True,
        env: dict[str, str] | None = None, cpu: int | None = None,
    ) -> Result:
        """cpu: run it on that one CPU (host.cpus), for a long chain of short programs."""
        return self.runner.run(
            cpus.on_cpu(cpu, chroot_argv(self.tree.root, argv)), env=chroot_env(env),
            inherit_env=False, what=what, input_data=input_data, capture=capture, quiet=quiet,
            check=check,
        )

    def apt_get(self, *args: str, what: str | None = None) -> Result:
        return self.runner.run(
            apt_get_argv(self.tree.root, args), env=chroot_env(), inherit_env=False,
            what=what or f"apt-get {args[0] if args else ''}".strip(), tee=self.apt_log,
        )


def _set_aside(tree: ImageTree, path: str, saved: str, what: str) -> bool:
    """Move the image's own file at path to saved (to be put back); True if there was one."""
    if tree.lexists(saved):
        raise DebliveError(f"{saved} exists in the image: a previous build did not restore {what}")
    if tree.lexists(path):
        tree.rename(path, saved)
        return True
    return False


def _put_back(tree: ImageTree, path: str, saved: str) -> None:
    tree.unlink(path)
    if tree.lexists(saved):
        tree.rename(saved, path)


class InitramfsDeferral:
    """Makes the initramfs once, after every package and the hook, instead of per trigger.

    Installing a kernel and live-boot makes the initramfs twice (the kernel's
    postinst hook, then the trigger live-boot activates); a hook that installs
    more makes it again. Each run costs about 18 s here and a quarter of an
    hour in a TCG builder VM. Every caller (the kernel's postinst.d hook,
    initramfs-tools' trigger) runs `update-initramfs` by name, so a no-op in
    /usr/local/sbin, put first in apt's PATH for dpkg, shadows it for the
    install and the hook. It is not a dpkg diversion: live-tools diverts
    update-initramfs itself, and two diversions of one file clash. generate()
    then makes one initramfs per installed kernel from the finished tree, so
    the hook's changes to the initramfs configuration count too.
    """

    def __init__(self, tree: ImageTree, runner: Runner) -> None:
        self.tree = tree
        self.chroot = Chroot(tree, runner)
        self.active = False
        self.compressors_unpinned = 0  # zstd processes given every CPU (host.cpus)

    def start(self) -> None:
        _set_aside(self.tree, INITRAMFS_SHADOW, INITRAMFS_SAVED, "update-initramfs")
        self.tree.mkdir("/usr/local/sbin")
        self.tree.write(INITRAMFS_SHADOW, NO_OP_INITRAMFS, 0o755)
        self.tree.write(DPKG_PATH_CONF, f'DPkg::Path "{CHROOT_PATH}";\n')
        self.active = True

    def restore(self) -> None:
        """Take the no-op away again (also after a failure); safe to call twice."""
        if not self.active:
            return
        self.tree.unlink(DPKG_PATH_CONF)
        _put_back(self.tree, INITRAMFS_SHADOW, INITRAMFS_SAVED)
        self.active = False

    def kernels(self) -> list[str]:
        """Kernel versions with both modules and an image in /boot."""
        images = kernel_images(self.tree)
        return [v for v in self.tree.listdir("/lib/modules") if v in images]

    def generate(self) -> list[str]:
        """Restore update-initramfs and make each kernel's initramfs; returns the versions."""
        self.restore()
        if not self.tree.lexists("/usr/sbin/update-initramfs"):
            return []  # no initramfs-tools in the image: nothing to make
        versions = self.kernels()
        # mkinitramfs starts its 19,500 programs one after another: on one CPU, but
        # the zstd at its end on all of them (host.cpus).
        cpu = cpus.quietest_cpu() if versions else None
        # Its scratch (a copy of every module it takes) on the session's /dev/shm tmpfs,
        # not in /var/tmp: the tree is left as a kept initramfs leaves it, so an overlay
        # layer is the same whether the initramfs was made or taken from the cache.
        env = {**INITRAMFS_LOCALE, **cpus.compressor_env(), "TMPDIR": "/dev/shm"}
        with cpus.compressors_unpinned(self.chroot.runner.running) as widened:
            for version in versions:
                mode = "-u" if self.tree.exists(f"/boot/initrd.img-{version}") else "-c"
                self.chroot.run(["update-initramfs", mode, "-k", version], env=env,
                                cpu=cpu, what=f"making the initramfs for {version}")
        self.compressors_unpinned = len(widened)
        return versions


@contextmanager
def initramfs_deferred(tree: ImageTree, runner: Runner) -> Iterator[InitramfsDeferral]:
    deferral = InitramfsDeferral(tree, runner)
    deferral.start()
    try:
        yield deferral
    finally:
        deferral.restore()


def _start_stop_daemon(tree: ImageTree) -> str | None:
    for path in ("/usr/sbin/start-stop-daemon", "/sbin/start-stop-daemon"):
        if tree.exists(path):
            return path
    return None


@contextmanager
def service_block(tree: ImageTree, runner: Runner) -> Iterator[None]:
    """No daemon starts inside the chroot: policy-rc.d plus a diverted start-stop-daemon.

    An existing policy-rc.d is never clobbered: it is moved aside and put back.
    """
    _set_aside(tree, POLICY_RC, POLICY_RC_SAVED, "policy-rc.d")
    tree.write(POLICY_RC, POLICY_RC_D, 0o755)
    daemon = _start_stop_daemon(tree)
    diverted = False
    chroot = Chroot(tree, runner)
    try:
        if daemon is not None:
            chroot.run(["dpkg-divert", "--local", "--rename", "--add", daemon],
                       what="diverting start-stop-daemon")
            diverted = True
            tree.write(daemon, NO_OP_DAEMON, 0o755)
        yield
    finally:
        if diverted and daemon is not None:
            tree.unlink(daemon)
            chroot.run(["dpkg-divert", "--local", "--rename", "--remove", daemon],
                       what="restoring start-stop-daemon")
        _put_back(tree, POLICY_RC, POLICY_RC_SAVED)


def _digest(tree: ImageTree, path: str) -> str | None:
    if tree.is_symlink(path) or not tree.is_file(path):
        return None
    return hashlib.sha256(tree.read_bytes(path)).hexdigest()


@contextmanager
def host_resolv_conf(tree: ImageTree, host: Path = Path("/etc/resolv.conf")) -> Iterator[None]:
    """The host's resolv.conf for the build; the image's own restored afterwards.

    If a package replaced the file during the build (its content is no longer
    the copy we put there), the package's version is kept, as debos does.
    """
    existed = _set_aside(tree, RESOLV_CONF, RESOLV_CONF_SAVED, "resolv.conf")
    if host.exists():
        tree.write(RESOLV_CONF, host.read_bytes())
    placed = _digest(tree, RESOLV_CONF)
    try:
        yield
    finally:
        still_ours = placed is not None and _digest(tree, RESOLV_CONF) == placed
        if still_ours or not tree.lexists(RESOLV_CONF):
            tree.unlink(RESOLV_CONF)
            if existed:
                tree.rename(RESOLV_CONF_SAVED, RESOLV_CONF)
        elif existed:
            tree.unlink(RESOLV_CONF_SAVED)


ARCHIVES_INSIDE = "/var/cache/apt/archives"
# apt-get download without apt's binary caches (/var/cache/apt/*.bin): a download
# writes nothing into the image tree, so a rebuild that takes the same packages from
# the package cache (build.bootdebs) gives the same overlay layer, byte for byte.
NO_BINARY_CACHES = ("-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=")


def download_packages(chroot: Chroot, names: Sequence[str], dest: Path, what: str) -> list[Path]:
    """apt-get download in the chroot (apt checks each against the signed index), the
    .deb files then copied into dest (fresh); returns them.

    With chroot.archives, apt downloads into a scratch directory of the build's
    archives (bound into the tree), so nothing of the image tree changes; the
    files it left there are the chroot's, so only regular files are copied, no
    link followed. Without, into the tree's /var/tmp, copied out through it.
    """
    apt = f'exec apt-get -q {" ".join(NO_BINARY_CACHES)} download "$@"'
    if chroot.archives is None:
        return _download_in_tree(chroot, names, dest, what, apt)
    scratch = f"deblive-download-{os.getpid()}"
    host = chroot.archives / scratch
    deletion.remove_tree(host)
    host.mkdir()
    os.chmod(host, 0o777)  # apt downloads as the _apt user
    try:
        # apt's temporary files (made and removed in /tmp) there too: even that would
        # leave /tmp copied up into an overlay's upper directory
        inside = f"{ARCHIVES_INSIDE}/{scratch}"
        chroot.run(["sh", "-c", f"cd {inside} && {apt}", "sh", *names], what=what,
                   env={"TMPDIR": inside})
        dest.mkdir(parents=True, exist_ok=True)
        got = [dest / entry.name for entry in sorted(host.iterdir())
               if entry.name.endswith(".deb") and copy_regular(entry, dest / entry.name)]
    finally:
        deletion.remove_tree(host)
    return got


def _download_in_tree(chroot: Chroot, names: Sequence[str], dest: Path, what: str, apt: str,
                      scratch: str = "/var/tmp/deblive-download") -> list[Path]:
    tree = chroot.tree
    tree.rmtree(scratch)
    tree.mkdir(scratch)
    tree.chmod(scratch, 0o777)  # apt downloads as the _apt user
    try:
        chroot.run(["sh", "-c", f"cd {scratch} && {apt}", "sh", *names], what=what)
        dest.mkdir(parents=True, exist_ok=True)
        got = []
        for inside in tree.glob(scratch, "*.deb"):
            target = dest / inside.rsplit("/", 1)[1]
            tree.copy_out(inside, target)
            got.append(target)
    finally:
        tree.rmtree(scratch)
    return sorted(got)
