"""One `deblive build` output directory, read and checked before anything is published.

Every OUTDIR comes from a CI job's artifacts: nothing in it is trusted. Its
report.json must describe a successful build, and every output it lists must
be a regular file (never through a symlink, not even a symlinked directory
on the way) whose size and sha256, recomputed here, are the listed ones; a
SHA256SUMS beside it must agree too. Boot-test results (test-*/results.json)
are optional; a screenshot they name is looked up by its file name in that
test directory only, since the path recorded is the test machine's. Names
that become release paths (image name, codename, architecture, boot modes)
must match what deblive itself would write, so no name leads out of the tree.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deblive.core.errors import BadInputError, DebliveError
from deblive.core.files import CHUNK, read_regular
from deblive.model.arch import Arch
from deblive.model.text import NAME_RE

REPORT = "report.json"
SUMS = "SHA256SUMS"
RESULTS = "results.json"
PACKAGES = "filesystem.packages"
NETBOOT = "netboot"
# Outputs published under the image's basename in iso-hybrid/ (the ISO is <basename>.iso).
IMAGE_SUFFIXES = (".iso", ".img", ".spdx.json")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
SUMS_LINE_RE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")
# Characters that would break a SHA*SUMS line or mean something to a shell or a browser.
UNSAFE_NAME_RE = re.compile(r"[\x00-\x1f\x7f\\]")


class PublishError(BadInputError):
    """An OUTDIR, a file in it or the release directory refused before anything is written."""


@dataclass(frozen=True)
class Verified:
    """A file checked against its listed digest, with both digests the release sums."""

    path: Path
    size: int
    sha256: str
    sha512: str


@dataclass(frozen=True)
class Output:
    name: str  # as report.json lists it: netboot/live/vmlinuz for a netboot tree's file
    file: Verified


@dataclass(frozen=True)
class BootRun:
    """One mode of a boot test, from a test-*/results.json."""

    mode: str
    result: str  # pass, fail, skipped; anything else is shown as it is, never trusted
    seconds_to_login: float | None
    screenshot: Verified | None
    source: Path  # the results.json it came from


@dataclass(frozen=True)
class BuildOutput:
    """A complete, checked build: its report, verified outputs and boot-test runs."""

    outdir: Path
    report: dict[str, Any]
    name: str
    codename: str
    architecture: str
    outputs: tuple[Output, ...]
    boots: tuple[BootRun, ...]

    @property
    def basename(self) -> str:
        """<name>-<codename>-<arch>: what the build named its ISO (config.image_basename)."""
        return f"{self.name}-{self.codename}-{self.architecture}"


def release_name(output: str, basename: str) -> str | None:
    """Where an output goes below RELEASE/<arch>/, or None when it is not published
    (the squashfs, boot-entries.json: they are inside the ISO or the netboot tree)."""
    if output.startswith(f"{NETBOOT}/"):
        return f"{NETBOOT}/{basename}/{output.removeprefix(NETBOOT + '/')}"
    if "/" in output:
        return None
    if output == PACKAGES:
        return f"iso-hybrid/{basename}.packages"
    for suffix in IMAGE_SUFFIXES:
        if output.endswith(suffix):
            return f"iso-hybrid/{basename}{suffix}"
    return None


def digests(path: Path, *, sha512: bool = True) -> tuple[int, str, str]:
    """Size, sha256 and sha512 ("" unless asked) of a regular file, never through a symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DebliveError(f"{path}: not a regular file")
        h256, h512 = hashlib.sha256(), hashlib.sha512() if sha512 else None
        size = 0
        for block in iter(lambda: f.read(CHUNK), b""):
            size += len(block)
            h256.update(block)
            if h512 is not None:
                h512.update(block)
    return size, h256.hexdigest(), h512.hexdigest() if h512 is not None else ""


def _relative_parts(name: str, where: str) -> list[str]:
    parts = name.split("/")
    if (not name or name.startswith("/") or UNSAFE_NAME_RE.search(name)
            or any(p in ("", ".", "..") for p in parts)):
        raise PublishError(f"{where}: {name!r} is not a plain relative file name")
    return parts


def regular_file(top: Path, name: str, where: str) -> Path:
    """top/name, refused unless every directory on the way is a real directory (no
    symlink) and the file itself a regular file."""
    parts = _relative_parts(name, where)
    path = top
    for index, part in enumerate(parts):
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise PublishError(f"{where}: {path} is missing") from None
        except OSError as exc:
            raise PublishError(f"{where}: {path}: {exc.strerror}") from None
        last = index == len(parts) - 1
        if stat.S_ISLNK(st.st_mode):
            raise PublishError(f"{where}: {path} is a symlink: refused, never followed")
        if not (stat.S_ISREG(st.st_mode) if last else stat.S_ISDIR(st.st_mode)):
            kind = "a regular file" if last else "a directory"
            raise PublishError(f"{where}: {path} is not {kind}")
    return path


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(read_regular(path))
    except FileNotFoundError:
        raise PublishError(f"{path}: missing: {what}") from None
    except OSError as exc:
        why = "a symlink: refused" if exc.errno == errno.ELOOP else exc.strerror
        raise PublishError(f"{path}: cannot be read: {why}") from None
    except DebliveError as exc:
        raise PublishError(str(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise PublishError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PublishError(f"{path}: holds no JSON object")
    return data


def _text(report: dict[str, Any], key: str, where: Path) -> str:
    value = report.get(key)
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise PublishError(f"{where}: {key} is {value!r}, not a name deblive writes "
                           "(a-z 0-9 . + _ -)")
    return value


def _listed(report: dict[str, Any], where: Path) -> list[tuple[str, int, str]]:
    """report.json's outputs as (name, bytes, sha256), each entry's form checked."""
    entries = report.get("outputs")
    if not isinstance(entries, list) or not entries:
        raise PublishError(f"{where}: lists no outputs: not a complete build")
    listed: list[tuple[str, int, str]] = []
    for index, entry in enumerate(entries):
        at = f"{where}: outputs[{index}]"
        if not isinstance(entry, dict):
            raise PublishError(f"{at} is not an object")
        name, size, sha = entry.get("name"), entry.get("bytes"), entry.get("sha256")
        if not isinstance(name, str):
            raise PublishError(f"{at} has no name")
        _relative_parts(name, at)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise PublishError(f"{at} ({name}): bytes is {size!r}, not a size")
        if not isinstance(sha, str) or not SHA256_RE.fullmatch(sha):
            raise PublishError(f"{at} ({name}): sha256 is {sha!r}, not a sha256 digest")
        if any(name == seen for seen, _, _ in listed):
            raise PublishError(f"{where}: lists the output {name} twice")
        listed.append((name, size, sha))
    return listed


def _verify_outputs(outdir: Path, report: dict[str, Any], basename: str) -> tuple[Output, ...]:
    where = outdir / REPORT
    outputs = []
    for name, size, sha in _listed(report, where):
        path = regular_file(outdir, name, str(where))
        try:
            real_size, real_sha, sha512 = digests(
                path, sha512=release_name(name, basename) is not None)
        except (OSError, DebliveError) as exc:
            raise PublishError(f"{path}: cannot be read: {exc}") from None
        if real_sha != sha or real_size != size:
            raise PublishError(f"{path}: checksum mismatch: its sha256 is {real_sha} "
                               f"({real_size} bytes); {where} lists {sha} ({size} bytes)")
        outputs.append(Output(name, Verified(path, real_size, real_sha, sha512)))
    return tuple(outputs)


def _check_sums(outdir: Path, outputs: tuple[Output, ...]) -> None:
    """OUTDIR/SHA256SUMS, when there, must agree with the files (already hashed)."""
    path = outdir / SUMS
    if not os.path.lexists(path):
        return
    try:
        text = read_regular(path).decode("utf-8")
    except (OSError, DebliveError, UnicodeDecodeError) as exc:
        raise PublishError(f"{path}: cannot be read: {exc}") from None
    known = {o.name: o.file for o in outputs}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = SUMS_LINE_RE.fullmatch(line)
        if match is None:
            raise PublishError(f"{path}: line {number} is not in sha256sum's format")
        digest, name = match[1].lower(), match[2]
        if name not in known:
            raise PublishError(f"{path}: line {number} names {name!r}, which "
                               f"{outdir / REPORT} does not list")
        if known[name].sha256 != digest:
            raise PublishError(f"{path}: checksum mismatch for {name}: the file's sha256 is "
                               f"{known[name].sha256}, SHA256SUMS says {digest}")


def _screenshot(test_dir: Path, value: object, where: str) -> Verified | None:
    """The screenshot a results.json names, found by its file name in test_dir only."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise PublishError(f"{where}: screenshot is {value!r}, not a path")
    name = value.rsplit("/", 1)[-1]
    if not name.endswith(".png"):
        raise PublishError(f"{where}: screenshot {value!r} is not a .png file")
    path = regular_file(test_dir, name, where)
    try:
        size, sha256, sha512 = digests(path)
    except (OSError, DebliveError) as exc:
        raise PublishError(f"{path}: cannot be read: {exc}") from None
    return Verified(path, size, sha256, sha512)


def _seconds(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PublishError(f"{where}: seconds_to_login is {value!r}, not a number")
    return float(value)


def _read_results(test_dir: Path) -> list[BootRun]:
    path = test_dir / RESULTS
    data = _read_json(path, "boot-test results")
    modes = data.get("modes")
    if not isinstance(modes, list):
        raise PublishError(f"{path}: has no list of modes")
    runs = []
    for index, entry in enumerate(modes):
        where = f"{path}: modes[{index}]"
        if not isinstance(entry, dict):
            raise PublishError(f"{where} is not an object")
        mode, result = entry.get("mode"), entry.get("result")
        if not isinstance(mode, str) or not NAME_RE.fullmatch(mode):
            raise PublishError(f"{where}: mode {mode!r} is not a boot mode's name")
        if not isinstance(result, str):
            raise PublishError(f"{where} ({mode}): result is {result!r}, not text")
        runs.append(BootRun(mode, result, _seconds(entry.get("seconds_to_login"), where),
                            _screenshot(test_dir, entry.get("screenshot"), where), path))
    return runs


def _boot_runs(outdir: Path) -> tuple[BootRun, ...]:
    """Every test-*/results.json's runs, one per mode (two of one mode are refused)."""
    runs: dict[str, BootRun] = {}
    try:
        entries = sorted(outdir.iterdir())
    except OSError as exc:
        raise PublishError(f"{outdir}: cannot be listed: {exc.strerror}") from None
    for entry in entries:
        if not entry.name.startswith("test-") or entry.is_symlink() or not entry.is_dir():
            continue
        if not os.path.lexists(entry / RESULTS):
            continue  # a test that never finished: nothing to publish
        for run in _read_results(entry):
            if run.mode in runs:
                raise PublishError(f"{run.source} and {runs[run.mode].source} both hold a "
                                   f"{run.mode} boot test: publish one")
            runs[run.mode] = run
    return tuple(runs.values())


def read_outdir(outdir: Path) -> BuildOutput:
    """One OUTDIR, checked whole (PublishError naming what is wrong), or nothing."""
    outdir = Path(os.path.abspath(outdir))
    if not outdir.is_dir():
        raise PublishError(f"{outdir}: not a directory (a deblive build's output directory)")
    where = outdir / REPORT
    report = _read_json(where, "not a complete deblive build output")
    if report.get("result") != "success":
        raise PublishError(f"{where}: the build's result is {report.get('result')!r}, "
                           "not 'success': only complete builds are published")
    name, codename = _text(report, "name", where), _text(report, "codename", where)
    try:
        arch = str(Arch(str(report.get("architecture"))))
    except ValueError:
        raise PublishError(f"{where}: architecture {report.get('architecture')!r} "
                           "is not one deblive builds") from None
    outputs = _verify_outputs(outdir, report, f"{name}-{codename}-{arch}")
    _check_sums(outdir, outputs)
    return BuildOutput(outdir, report, name, codename, arch, outputs, _boot_runs(outdir))
