"""CI tier: real builds from the host's mirror, shared per session, as root.

Each kind of image is built once per session (session-scoped fixtures) with
the real CLI in a subprocess, exactly as a user runs it; tests then inspect
the outputs. The package cache is shared with normal builds, so a warm
machine downloads nothing.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import archives

REPO = Path(__file__).resolve().parents[2]
# Reports, serial logs and screenshots of the session, kept for people and CI.
ARTIFACTS = REPO / "test-artifacts"
DEBLIVE = [sys.executable, "-m", "deblive"]


@pytest.fixture(scope="session", autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the CI tier builds images and must run as root (make test does)")


@dataclass
class Build:
    """One finished (or failed) run of `deblive build`."""

    config: Path
    outdir: Path
    workdir: Path
    returncode: int
    output: str

    def path(self, name: str) -> Path:
        return self.outdir / name

    @property
    def iso(self) -> Path:
        """The build's one ISO."""
        isos = list(self.outdir.glob("*.iso"))
        assert len(isos) == 1, isos
        return isos[0]


def extract_iso(iso: Path, dest: Path) -> Path:
    """The ISO's files, extracted with xorriso (no loop device, no mount)."""
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(dest)],
        check=True, capture_output=True,
    )
    return dest


def run_deblive(*args: str | Path, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEBLIVE, *map(str, args)], capture_output=True, text=True, timeout=timeout,
        cwd=REPO, stdin=subprocess.DEVNULL,
    )


def build(config: Path, base: Path, *extra: str) -> Build:
    outdir, workdir = base / "out", base / "work"
    proc = run_deblive("build", config, "-o", outdir, "--workdir", workdir, *extra)
    (base / "deblive-output.txt").write_text(proc.stdout + proc.stderr)
    return Build(config, outdir, workdir, proc.returncode, proc.stdout + proc.stderr)


def unsquash(squashfs: Path, dest: Path, *paths: str) -> Path:
    """Extract some paths of a squashfs (the whole tree if none) for inspection."""
    subprocess.run(
        ["unsquashfs", "-q", "-n", "-f", "-d", str(dest), str(squashfs), *paths],
        check=True, capture_output=True,
    )
    return dest


@pytest.fixture(scope="session")
def default_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The embedded default image, ISO included: built once per session."""
    base = tmp_path_factory.mktemp("default")
    config = base / "default.yaml"
    # The embedded default, written out so the test runs the same code path.
    from deblive.host.configfile import default_config_text

    config.write_text(default_config_text())
    result = build(config, base)
    assert result.returncode == 0, result.output[-4000:]
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(result.path("report.json"), ARTIFACTS / "default-report.json")
    return result


HOOK = """\
#!/bin/sh
set -eu
. "$DEBLIVE_LIB"
test "$1" = "$DEBLIVE_ROOT"
test -d "$1/proc/self"            # proc is mounted while the hook runs
test -x "$1/usr/sbin/policy-rc.d" # services are blocked
dl_write /etc/deblive-marker 0600 <<MARKER
root=$1
name=$DEBLIVE_NAME
suite=$DEBLIVE_SUITE
requested=$DEBLIVE_SUITE_REQUESTED
arch=$DEBLIVE_ARCH
apt_mirror=$DEBLIVE_APT_MIRROR
user=$DEBLIVE_USER
build_id=$DEBLIVE_BUILD_ID
MARKER
# apt works from the hook, against the build mirror
dl_install hello
# What a careless (or hostile) hook leaves: absolute links to host files where
# the later stages read, write, empty and delete (tests/integration/test_safety.py).
SENTINEL=__SENTINEL__
ln -sfn "$SENTINEL/file" "$1/etc/machine-id"
ln -sfn "$SENTINEL/file" "$1/var/log/dpkg.log"
ln -sfn "$SENTINEL/file" "$1/etc/ssh/ssh_host_planted_key"
ln -sfn "$SENTINEL/file" "$1/etc/apt/sources.list"
ln -sfn "$SENTINEL/file" "$1/var/lib/apt/lists/planted_InRelease"
ln -sfn "$SENTINEL/file" "$1/var/cache/apt/archives/planted_1_all.deb"
ln -sfn "$SENTINEL/file" "$1/tmp/planted"
ln -sfn "$SENTINEL/dir" "$1/var/tmp/planted-dir"
ln -sfn "$SENTINEL/file" "$1/boot/planted"
# The hook library works inside the image: a link to a host path is replaced.
ln -sfn "$SENTINEL/file" "$1/etc/deblive-link"
echo "written by dl_write" | dl_write /etc/deblive-link 0644
echo "hook finished"
"""

CUSTOM_PASSWORD = "alicepw731"
APT_MIRROR = "http://apt.example.org/debian"


SENTINEL_TEXT = "deblive-host-sentinel-7f3a"


@dataclass
class Sentinels:
    """Host files the custom build's hook links to from inside the image."""

    base: Path
    before: dict[str, tuple[str, int, int]]

    @staticmethod
    def state(base: Path) -> dict[str, tuple[str, int, int]]:
        out = {}
        for path in sorted(base.rglob("*")):
            st = path.lstat()
            data = path.read_bytes() if path.is_file() else b""
            out[str(path)] = (hashlib.sha256(data).hexdigest(), st.st_mode, st.st_mtime_ns)
        return out

    def intact(self) -> bool:
        return self.state(self.base) == self.before


@pytest.fixture(scope="session")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Sentinels:
    base = tmp_path_factory.mktemp("host-sentinels")
    (base / "dir").mkdir()
    (base / "dir" / "keep").write_text(SENTINEL_TEXT)
    (base / "file").write_text(SENTINEL_TEXT)
    return Sentinels(base, Sentinels.state(base))


def make_overlay(root: Path, sentinels: Sentinels) -> None:
    """The custom build's overlay: owned by a plain user on the host, odd modes, a
    private directory, and links (one to a host sentinel) that must stay links."""
    files = {"etc/deblive-overlay/settings.conf": ("from the overlay\n", 0o640),
             "etc/deblive-overlay/private/secret": ("s3cret\n", 0o600),
             "usr/local/bin/overlay-tool": ("#!/bin/sh\necho overlay\n", 0o755)}
    for rel, (text, mode) in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        (root / rel).chmod(mode)
    (root / "etc/deblive-overlay/private").chmod(0o700)
    (root / "etc").chmod(0o700)  # the image has /etc: its own mode stays
    (root / "etc/deblive-overlay/hostname-link").symlink_to("/etc/hostname")
    (root / "etc/deblive-overlay/host-link").symlink_to(sentinels.base / "file")
    for path in [root, *root.rglob("*")]:
        os.lchown(path, 1234, 1234)


def make_archives(base: Path, home: Path) -> None:
    """A distribution's own software for the custom build: two signed archives (one
    shipped with a pin, one for the build only, keys armoured and binary) and local
    .deb files, one of which depends on a package of the mirror."""
    debs = base / "debs"
    debs.mkdir()
    shipped = archives.make_deb(base, "distro-tool", "1.0",
                                files={"usr/bin/distro-tool": "#!/bin/sh\necho distro\n"})
    build_only = archives.make_deb(base, "build-only-tool", "2.0",
                                   files={"usr/share/build-only-tool/marker": "b\n"})
    archives.make_deb(debs, "site-config", "1:3.0+local1", depends="sl",
                      files={"etc/site-config/site.conf": "local\n"})
    archives.make_deb(debs, "site-tool", "0.1", files={"usr/bin/site-tool": "#!/bin/sh\n"})
    arch = subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True,
                          text=True).stdout.strip()
    archives.make_archive(base / "archives" / "shipped", [shipped], home, suite="stable",
                          arch=arch)
    archives.make_archive(base / "archives" / "build-only", [build_only], home,
                          suite="stable", arch=arch)
    (base / "keys").mkdir()
    archives.export_key(home, base / "keys" / "distro.asc")
    archives.export_key(home, base / "keys" / "build.gpg", armour=False)


@pytest.fixture(scope="session")
def custom_build(tmp_path_factory: pytest.TempPathFactory, sentinels: Sentinels) -> Build:
    """A task-based image with its own apt mirror, user and hook; no serial console; sudo
    asks alice for her password; the hook plants links to host files. It carries an
    overlay, packages of two signed repositories served from 127.0.0.1 (one shipped
    in its sources) and local packages."""
    base = tmp_path_factory.mktemp("custom")
    with archives.gnupg_home() as home:
        make_archives(base, home)
    hook = base / "hooks" / "hook.sh"
    hook.parent.mkdir()
    hook.write_text(HOOK.replace("__SENTINEL__", shlex.quote(str(sentinels.base))))
    hook.chmod(0o755)
    make_overlay(base / "overlay", sentinels)
    config = base / "custom.yaml"
    config.write_text(textwrap.dedent(f"""\
        name: itest
        suite: stable
        tasks: [task-ssh-server, task-english]
        packages: [wpasupplicant]
        apt_mirror: {APT_MIRROR}
        user: {{name: alice, password: alicepw731, groups: [sudo, audio], sudo: password,
                fullname: "Anne \\"Nan\\" O'Brien"}}
        hostname: itest-host
        timezone: Europe/Berlin
        hook: hooks/hook.sh
        overlay: overlay
        squashfs: {{compression: lz4}}
        boot: {{serial_console: false, title: deblive VGA test}}
        repositories:
          - {{uri: "__URL__/shipped", suites: [stable], key: keys/distro.asc, priority: 600}}
          - {{uri: "__URL__/build-only", suites: [stable], key: keys/build.gpg, ship: false}}
        local_packages: [debs]
        """).replace("packages: [wpasupplicant]",
                     "packages: [wpasupplicant, distro-tool, build-only-tool]"))
    with archives.serve(base / "archives") as url:
        config.write_text(config.read_text().replace("__URL__", url))
        # On disk: the default image covers the tree in RAM (host.treeram), this one the disk.
        result = build(config, base, "--tree", "disk")
    assert result.returncode == 0, result.output[-4000:]
    return result


@pytest.fixture(scope="session")
def custom_tree(custom_build: Build, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unsquash(custom_build.path("filesystem.squashfs"), tmp_path_factory.mktemp("ct") / "t")


@pytest.fixture(scope="session")
def failing_hook_build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Build]:
    base = tmp_path_factory.mktemp("failhook")
    hook = base / "fail.sh"
    hook.write_text("#!/bin/sh\necho 'about to fail on purpose'\nexit 7\n")
    hook.chmod(0o755)
    config = base / "fail.yaml"
    config.write_text("name: failhook\nhook: fail.sh\nsquashfs: {compression: lz4}\n")
    yield build(config, base, "--no-iso", "--tree", "ram")  # the tree is copied to disk
