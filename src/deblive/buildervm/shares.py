"""What the builder guest sees of the host: a few directories over 9p, and nothing else.

Read-only, at the host's own paths (so config, hook and messages name the
same paths inside and out): the config's directory and the directories of
the files it names. Writable, each fresh for this run and at a guest path of
its own: the output directory the inner build publishes into, the result
directory (its status, a failed build's logs), and the guest package cache
(persistent, used by builder guests only: the host never reads, runs or
trusts anything in it). Writable shares map the guest's owners, modes,
symlinks and device nodes into extended attributes (Share: mapped-xattr).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from deblive.core.errors import BadInputError
from deblive.model.config import ImageConfig
from deblive.vm.command import Share

GUEST_SCRATCH = "/var/tmp/deblive-builder"
GUEST_WORK = GUEST_SCRATCH + "/work"
GUEST_CTL = "/run/deblive-ctl"
GUEST_RESULT = "/run/deblive-result"
GUEST_OUT = "/run/deblive-out"
GUEST_CACHE = "/run/deblive-cache"
# Directories a share must not hide in the guest: the builder's own system.
GUEST_SYSTEM = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/var/lib", "/opt/deblive",
                "/proc", "/sys", "/dev", "/run", GUEST_SCRATCH)


class ShareError(BadInputError):
    pass


def hides_system(path: Path) -> bool:
    text = str(path)
    return text == "/" or any(
        text == sysdir or sysdir.startswith(text.rstrip("/") + "/") or text.startswith(sysdir + "/")
        for sysdir in GUEST_SYSTEM
    )


def config_shares(config: ImageConfig, extra: Iterable[tuple[Path, str]] = ()) -> list[Share]:
    """Read-only shares of the config's directory and of every file it names, parents
    first, none inside another; ShareError for one that would hide the guest's system."""
    wanted: list[tuple[Path, str]] = []
    if config.source is not None:
        wanted.append((config.base_dir.resolve(), "the config's directory"))
    named = [(path, key) for key, path in config.referenced_paths().items()]
    for path, what in [*named, *extra]:
        real = path.resolve()
        wanted.append((real if real.is_dir() else real.parent, what))
    chosen: list[Path] = []
    for directory, what in wanted:
        if hides_system(directory):
            raise ShareError(
                f"{what}: {directory} cannot be shared with the builder VM at the same path "
                "(it would hide the builder's own system); move it elsewhere"
            )
        if not any(directory.is_relative_to(p) for p in chosen):
            chosen = [p for p in chosen if not p.is_relative_to(directory)] + [directory]
    ordered = sorted(chosen, key=lambda p: (len(p.parts), str(p)))
    return [Share(f"dlcfg{i}", path, writable=False) for i, path in enumerate(ordered)]


def run_shares(ctl: Path, result: Path, out: Path, cache: Path) -> list[tuple[Share, str]]:
    """The run's own shares with their guest paths: control (read-only), the rest writable."""
    return [
        (Share("dlctl", ctl, writable=False), GUEST_CTL),
        (Share("dlres", result, writable=True), GUEST_RESULT),
        (Share("dlout", out, writable=True), GUEST_OUT),
        (Share("dlcache", cache, writable=True), GUEST_CACHE),
    ]
