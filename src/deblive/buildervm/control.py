"""Talking to the builder guest: what the host writes for it, and what it takes back.

The host writes the control directory (read-only to the guest): the shares
to mount and where, the environment, the one command to run, the host's apt
sources and distro-info. The guest writes its exit status and, on a failed
build, its logs into the result share, and the inner build publishes into
the output share. The guest is a stranger: the status must be one short
number; results are taken back by expected name only, as regular files
(never through a symlink), their sha256 computed by the host and checked
against what the inner build reported; anything else the guest left is
ignored. Only then are they published, report.json last.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deblive.build import basecache
from deblive.build.stages import netboot, squash
from deblive.core.errors import DebliveError
from deblive.core.files import sha256_file
from deblive.host import distroinfo, hostapt
from deblive.model.arch import Arch
from deblive.vm.command import Share

STATUS_RE = re.compile(r"\d{1,3}\n?")
MAX_SMALL_FILE = 64 << 20  # report.json, SHA256SUMS, logs: anything larger is refused
LOG_NAMES = ("apt.log", "term.log", "history.log", "dpkg.log")
FAILED_NAMES = ("build.log", "report.json", *LOG_NAMES)
XATTR_PREFIX = "user.virtfs."  # what 9p's mapped-xattr keeps the guest's metadata in


class GuestError(DebliveError):
    """The builder guest returned something that is not a build result."""


@dataclass(frozen=True)
class InnerCommand:
    """What the guest runs: the same `deblive build`, with host-resolved inputs."""

    config: Path | None
    overrides: Mapping[str, str]
    make_iso: bool = True
    verbose: bool = False
    layout: str | None = None  # --flat / --layered, as given on the host
    use_cache: bool = True

    def argv(self, outdir: str, cache: str, workdir: str) -> list[str]:
        argv = ["deblive", "build"]
        if self.config is not None:
            argv.append(str(self.config))
        for option, value in self.overrides.items():
            argv += [f"--{option}", value]
        argv += ["-o", outdir, "--workdir", workdir, "--cache-dir", cache, "--force"]
        if not self.make_iso:
            argv.append("--no-iso")
        if self.verbose:
            argv.append("--verbose")
        if self.layout is not None:
            argv.append(f"--{self.layout}")
        if not self.use_cache:
            argv.append("--no-cache")
        return argv


def write_control(ctl: Path, mounts: Iterable[tuple[Share, str]], argv: list[str],
                  env: Mapping[str, str], guest_ctl: str) -> None:
    """The files the guest's init reads: mounts (TAG PATH ro|rw), env, run."""
    ctl.mkdir(parents=True, exist_ok=True)
    (ctl / "mounts").write_text("".join(
        f"{share.tag} {path} {'rw' if share.writable else 'ro'}\n" for share, path in mounts
    ))
    apt = ctl / "apt"
    for name in ("sources.list", "sources.list.d"):
        source = hostapt.APT_ETC / name
        if source.is_file():
            apt.mkdir(exist_ok=True)
            shutil.copyfile(source, apt / name)
        elif source.is_dir():
            shutil.copytree(source, apt / name, dirs_exist_ok=True, symlinks=False)
    guest_env = {"DEBLIVE_APT_ETC": f"{guest_ctl}/apt", **env}
    if distroinfo.DEBIAN_CSV.is_file():
        shutil.copyfile(distroinfo.DEBIAN_CSV, ctl / "debian.csv")
        guest_env["DEBLIVE_DISTRO_INFO"] = f"{guest_ctl}/debian.csv"
    if "SOURCE_DATE_EPOCH" in os.environ:
        guest_env["SOURCE_DATE_EPOCH"] = os.environ["SOURCE_DATE_EPOCH"]
    (ctl / "env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in guest_env.items()))
    (ctl / "run").write_text("exec " + shlex.join(argv) + "\n")


def _regular(path: Path, limit: int | None = None) -> os.stat_result | None:
    """path's status if it is a regular file (not a symlink) within limit, else None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or (limit is not None and st.st_size > limit):
        return None
    return st


def read_status(result: Path) -> int | None:
    """The inner build's exit status; None when there is none; GuestError when it is not
    one short number."""
    path = result / "status"
    if not os.path.lexists(path):
        return None
    if _regular(path, 16) is None:
        raise GuestError(f"the builder VM's status {path} is not a small regular file")
    text = path.read_text(encoding="ascii", errors="replace")
    if not STATUS_RE.fullmatch(text):
        raise GuestError(f"the builder VM wrote an invalid status {text[:16]!r} (not a number)")
    return int(text)


def _take(source: Path, dest: Path, limit: int | None = None) -> str:
    """Move a regular file the guest wrote to dest (ours, mode 0644, the guest's metadata
    attributes dropped); returns its sha256, computed here."""
    if _regular(source, limit) is None:
        raise GuestError(f"{source.name} from the builder VM is not a regular file "
                         "(or is too large)")
    dest.unlink(missing_ok=True)
    try:
        os.rename(source, dest)
    except OSError:
        shutil.copyfile(source, dest, follow_symlinks=False)
    for name in os.listxattr(dest, follow_symlinks=False):
        if name.startswith(XATTR_PREFIX):
            os.removexattr(dest, name, follow_symlinks=False)
    os.chmod(dest, 0o644)
    return sha256_file(dest)


LAYERED_NAMES = (squash.LAYER, squash.MODULE,
                 *squash.stack_names(basecache.MAX_CHAIN)[1:])  # the package layers
NETBOOT = netboot.NETBOOT_DIR


def expected_outputs(image_basename: str, make_iso: bool,
                     formats: Sequence[str] = ("iso",)) -> tuple[list[str], list[str]]:
    """(required, optional) result file names of a build."""
    required = ["filesystem.squashfs", "filesystem.packages", "report.json", "build.log",
                f"{image_basename}.spdx.json"]
    if make_iso:
        required += ["SHA256SUMS", "boot-entries.json"]
        required += [f"{image_basename}.{ext}" for fmt, ext in (("iso", "iso"), ("disk", "img"))
                     if fmt in formats]
    return required, list(LOG_NAMES)


def take_results(out: Path, dest: Path, image_basename: str, make_iso: bool,
                 formats: Sequence[str] = ("iso",), arch: Arch | None = None,
                 devicetree: bool = False) -> list[Path]:
    """Take the guest's results into dest (fresh), checked; returns them, report.json last.

    A netboot tree comes back file by file, only the names such a tree of arch
    holds, each a regular file: the guest cannot bring a symlink or anything else.
    """
    required, optional = expected_outputs(image_basename, make_iso, formats)
    dest.mkdir(parents=True)
    digests: dict[str, str] = {}
    for name in required:
        if not os.path.lexists(out / name):
            raise GuestError(f"the builder VM's build left no {name}")
        small = None if name.endswith((".iso", ".img", ".squashfs")) else MAX_SMALL_FILE
        digests[name] = _take(out / name, dest / name, small)
    # A layered build's top layer, package layers and live-boot's list.
    for name in LAYERED_NAMES:
        if os.path.lexists(out / name):
            small = None if name.endswith(".squashfs") else MAX_SMALL_FILE
            digests[name] = _take(out / name, dest / name, small)
            required.append(name)
    if make_iso and "netboot" in formats and arch is not None:
        for name in netboot.tree_names(arch, devicetree):
            source, target = out / NETBOOT / name, dest / NETBOOT / name
            # No directory on the way may be a symlink of the guest's.
            through = [p for p in source.parents if p.is_relative_to(out / NETBOOT)]
            if any(os.path.islink(p) for p in through) or not os.path.lexists(source):
                raise GuestError(f"the builder VM's build left no {NETBOOT}/{name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            big = name.endswith((".squashfs", ".img")) or name.startswith("live/")
            digests[f"{NETBOOT}/{name}"] = _take(source, target, None if big else MAX_SMALL_FILE)
        required.append(NETBOOT)
    (dest / "logs").mkdir()
    for name in optional:
        if _regular(out / "logs" / name, MAX_SMALL_FILE) is not None:
            _take(out / "logs" / name, dest / "logs" / name, MAX_SMALL_FILE)
    check_digests(dest, digests)
    return [dest / name for name in required if name != "report.json"] + [dest / "report.json"]


def check_digests(dest: Path, digests: Mapping[str, str]) -> None:
    """The inner build's report and SHA256SUMS must name the digests the host computed."""
    try:
        report = json.loads((dest / "report.json").read_text(encoding="utf-8"))
        outputs = {o["name"]: o["sha256"] for o in report["outputs"]}
        ok = report["result"] == "success"
    except (ValueError, KeyError, TypeError) as exc:
        raise GuestError(f"the builder VM's report.json is not a build report: {exc}") from None
    if not ok:
        raise GuestError("the builder VM's report.json does not report a success")
    for name, digest in outputs.items():
        if name in digests and digests[name] != digest:
            raise GuestError(f"{name} from the builder VM does not match its report's sha256")
    sums = dest / "SHA256SUMS"
    if sums.exists():
        for line in sums.read_text(encoding="utf-8", errors="replace").splitlines():
            digest, _, name = line.partition("  ")
            if name in digests and digests[name] != digest:
                raise GuestError(f"{name} from the builder VM does not match its SHA256SUMS")


def take_failed_logs(result: Path, dest: Path) -> list[Path]:
    """A failed inner build's logs, by name, regular files only, into dest."""
    taken = []
    dest.mkdir(parents=True, exist_ok=True)
    for name in FAILED_NAMES:
        source = result / "failed" / name
        if _regular(source, MAX_SMALL_FILE) is not None:
            _take(source, dest / name, MAX_SMALL_FILE)
            taken.append(dest / name)
    return taken
