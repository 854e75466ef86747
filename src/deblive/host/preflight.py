"""Checks made before a build touches the system.

Everything that can be known in advance is checked here, so a bad config, a
missing tool, an unreachable mirror or a suite the mirror lacks ends the run
in seconds with exit status 2, not half an hour into a build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from debian import deb822

from deblive.build.stages import hook as hook_stage
from deblive.core.runner import DebliveError
from deblive.host import hostapt
from deblive.model.config import ConfigError, ImageConfig

REQUIRED_TOOLS = {
    "chroot": "coreutils",
    "mksquashfs": "squashfs-tools",
    "unsquashfs": "squashfs-tools",
    "dpkg-deb": "dpkg",
}
ISO_TOOLS = {
    "xorriso": "xorriso",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mmd": "mtools",
}
QEMU_USER = {
    "arm64": "aarch64", "armhf": "arm", "armel": "arm", "i386": "i386", "amd64": "x86_64",
    "ppc64el": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "mips64el": "mips64el",
}


class PreflightError(DebliveError):
    exit_code = 2


def missing_tools(config: ImageConfig, with_iso: bool) -> list[str]:
    tools = dict(REQUIRED_TOOLS)
    tools[config.bootstrap.backend] = config.bootstrap.backend
    if with_iso:
        tools.update(ISO_TOOLS)
    return [f"{tool} (package {pkg})" for tool, pkg in tools.items() if shutil.which(tool) is None]


# Transient faults (refused or reset connections, timeouts, HTTP 5xx) are
# retried this many times, RETRY_DELAY seconds apart, doubling; a 404 is not.
RETRIES = 2
RETRY_DELAY = 1.0


def _get(url: str, timeout: float) -> bytes:
    """GET url; transient errors retried a bounded number of times, then raised."""
    delay = RETRY_DELAY
    for attempt in range(RETRIES + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == RETRIES:
                raise
        except (urllib.error.URLError, OSError):
            if attempt == RETRIES:
                raise
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def fetch_release(mirror: str, codename: str, timeout: float = 20) -> deb822.Release:
    """The suite's Release fields from the mirror (signature checked later, by apt).

    A mirror without InRelease must at least have Release.gpg: an unsigned
    archive is refused here, never accepted by turning apt's checks off.
    """
    url = f"{mirror}/dists/{codename}/InRelease"
    try:
        try:
            data = _get(url, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            release_url = url.removesuffix("InRelease") + "Release"
            try:
                data = _get(release_url, timeout)
            except urllib.error.HTTPError:
                raise exc from None
            try:
                _get(release_url + ".gpg", timeout)
            except urllib.error.HTTPError as gpg_exc:
                raise PreflightError(
                    f"mirror {mirror}: {release_url} is not signed: {url} and "
                    f"{release_url}.gpg answered HTTP {exc.code} and {gpg_exc.code}; "
                    "deblive never builds from an unsigned archive"
                ) from None
    except urllib.error.HTTPError as exc:
        raise PreflightError(
            f"mirror {mirror}: {url} answered HTTP {exc.code}: the mirror does not carry "
            f"{codename}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PreflightError(
            f"mirror {mirror} is unreachable: {url}: {reason} "
            f"(tried {RETRIES + 1} times)"
        ) from None
    return deb822.Release(data.decode("utf-8", errors="replace"))


def check_mirror(config: ImageConfig) -> None:
    assert config.mirror is not None
    if config.mirror.startswith("file:"):
        path = Path(config.mirror.removeprefix("file://")) / "dists" / config.codename
        if not path.is_dir():
            raise PreflightError(f"mirror {config.mirror}: no {path}")
        return
    release = fetch_release(config.mirror, config.codename)
    arches = release.get("Architectures", "").split()
    if arches and config.architecture not in arches:
        where = config.source or "<config>"
        raise PreflightError(
            f"{where}: architecture: {config.architecture} is not in {config.codename} on "
            f"{config.mirror} (it has: {' '.join(arches)})"
        )
    components = release.get("Components", "").split()
    for component in config.components:
        if components and component not in components:
            raise PreflightError(
                f"{config.source or '<config>'}: components: {component} is not in "
                f"{config.codename} (it has: {' '.join(components)})"
            )


def ensure_binfmt(architecture: str) -> None:
    """Foreign architectures run through qemu-user binfmt: make sure it is there."""
    if architecture == hostapt.host_architecture():
        return
    if shutil.which("arch-test") and subprocess.run(
        ["arch-test", "-n", architecture], capture_output=True
    ).returncode == 0:
        return
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], check=False)
    qemu = QEMU_USER.get(architecture, architecture)
    if shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", f"qemu-{qemu}"], capture_output=True)
    if not (binfmt / f"qemu-{qemu}").exists():
        raise PreflightError(
            f"architecture: {architecture} is foreign here and no qemu-user binfmt handler "
            f"is registered for it (install qemu-user-static and binfmt-support)"
        )


def check(config: ImageConfig, *, with_iso: bool, network: bool = True) -> None:
    if os.geteuid() != 0:
        raise PreflightError("deblive build must run as root (debootstrap makes device nodes)")
    missing = missing_tools(config, with_iso)
    if missing:
        raise PreflightError("missing tools: " + ", ".join(missing))
    hook_stage.check_hook(config)
    splash = config.splash_path
    if splash is not None and not splash.is_file():
        raise ConfigError(f"{config.source or '<config>'}: boot.splash: {splash} does not exist")
    if network:
        check_mirror(config)
    ensure_binfmt(config.architecture)
