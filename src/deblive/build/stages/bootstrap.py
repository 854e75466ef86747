"""Step 1: the base system, bootstrapped from the build mirror.

mmdebstrap by default (about 1.7x faster than debootstrap here, and it handles
foreign architectures through qemu-user binfmt itself); debootstrap as the
classic backend. Signatures are always checked against the Debian archive
keyring. The shared package cache is bind-mounted in, never copied.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from deblive.build.context import BuildContext
from deblive.host import sandbox
from deblive.model.config import ImageConfig

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
ARCHIVES = "var/cache/apt/archives"


def bootstrap_packages(config: ImageConfig) -> list[str]:
    """What the base needs beyond its variant: https needs CA certificates."""
    extra = []
    if config.mirror and config.mirror.startswith("https://"):
        extra.append("ca-certificates")
    return extra


def mmdebstrap_argv(config: ImageConfig, rootfs: Path, cache: Path) -> list[str]:
    assert config.mirror is not None
    argv = [
        "mmdebstrap",
        "--mode=root",
        f"--variant={config.bootstrap.variant}",
        f"--architectures={config.architecture}",
        f"--components={','.join(config.components)}",
        f"--keyring={KEYRING}",
        "--aptopt=Acquire::Retries \"3\"",
        "--skip=download/empty",
        # The cache is mounted over the image's archive directory for the
        # bootstrap and taken away before the tree is finished.
        f"--setup-hook=mkdir -p \"$1/{ARCHIVES}\" && mount --bind {shlex.quote(str(cache))} "
        f"\"$1/{ARCHIVES}\"",
        f"--customize-hook=umount \"$1/{ARCHIVES}\"",
    ]
    extra = bootstrap_packages(config)
    if extra:
        argv.append(f"--include={','.join(extra)}")
    argv += [config.codename, str(rootfs), config.mirror]
    return argv


def debootstrap_argv(config: ImageConfig, rootfs: Path, cache: Path) -> list[str]:
    assert config.mirror is not None
    argv = [
        "debootstrap",
        f"--arch={config.architecture}",
        f"--components={','.join(config.components)}",
        f"--keyring={KEYRING}",
        f"--cache-dir={cache}",
    ]
    if config.bootstrap.variant == "minbase":
        argv.append("--variant=minbase")
    extra = bootstrap_packages(config)
    if extra:
        argv.append(f"--include={','.join(extra)}")
    argv += [config.codename, str(rootfs), config.mirror]
    return argv


def run(ctx: BuildContext) -> None:
    config = ctx.config
    cache = ctx.apt_archives
    cache.mkdir(parents=True, exist_ok=True)
    if config.bootstrap.backend == "mmdebstrap":
        argv = mmdebstrap_argv(config, ctx.rootfs, cache)
    else:
        argv = debootstrap_argv(config, ctx.rootfs, cache)
    ctx.rootfs.mkdir(parents=True, exist_ok=True)
    try:
        ctx.runner.run(argv, what=f"bootstrapping {config.codename}/{config.architecture}")
    finally:
        # mmdebstrap's setup hook mounts the package cache and only its
        # customize hook unmounts it: an interrupted or failed mmdebstrap leaves
        # it (and its own /proc, /dev binds) mounted. The stage undoes that itself.
        sandbox.unmount_all_under_children(ctx.rootfs)
    drop_host_copies(ctx.rootfs)


def drop_host_copies(rootfs: Path) -> None:
    """mmdebstrap copies the host's resolv.conf and hostname in; the image must not ship them."""
    for rel in ("etc/resolv.conf", "etc/hostname"):
        inside, host = rootfs / rel, Path("/") / rel
        try:
            same = inside.is_file() and inside.read_bytes() == host.read_bytes()
        except OSError:
            same = False
        if same:
            inside.unlink()
