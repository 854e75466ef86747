"""`deblive publish`: many builds' output directories into one release tree.

The layout follows Debian's cdimage: RELEASE/<arch>/iso-hybrid/ holds each
image's ISO, disk image, SBOM and package list (and screens/ the boot
tests' menu screenshots), RELEASE/<arch>/netboot/<image>/ a netboot tree;
each of those directories has SHA256SUMS and SHA512SUMS (clearsigned with
a key when asked). RELEASE/report.json merges the builds' reports and boot
results; RELEASE/index.html shows them.

Everything is checked before the first byte is written (PublishError names
the OUTDIR or file), then the tree is made beside RELEASE and renamed into
place, so a failure leaves no half release and a reader never sees one. The
same inputs give byte-identical sums, report and page: nothing depends on
the clock or the order of a directory listing.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from deblive.core import interrupt
from deblive.core.errors import DebliveError
from deblive.core.files import CHUNK, write_atomic
from deblive.core.runner import Runner
from deblive.host import deletion, diskspace
from deblive.release.index import ReleasedBoot, ReleasedImage, render_index
from deblive.release.outdir import BuildOutput, PublishError, Verified, read_outdir, release_name

FORMAT = 1
SUM_FILES = (("SHA256SUMS", "sha256"), ("SHA512SUMS", "sha512"))
# link() failing for these reasons means: copy instead (another file system,
# protected_hardlinks on a file of another user, too many links, no links at all).
COPY_INSTEAD = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES}

__all__ = ["PublishError", "PublishResult", "publish"]


@dataclass(frozen=True)
class PublishResult:
    """What a publish made, for the CLI to report (and CI to act on passed)."""

    release: Path
    images: tuple[str, ...]  # basenames, sorted
    files: tuple[Path, ...]  # every file written, under release, sorted
    passed: bool  # every boot test that ran passed


@dataclass(frozen=True)
class Placement:
    """One verified file and where it lands: root (a summed directory) / rel."""

    source: Verified
    image: str
    root: PurePosixPath  # release-relative: amd64/iso-hybrid, amd64/netboot/<image>
    rel: str  # below root, with slashes in a netboot tree

    @property
    def dest(self) -> PurePosixPath:
        return self.root / self.rel


def _placements(build: BuildOutput) -> list[Placement]:
    arch, image = build.architecture, build.basename
    found = []
    for output in build.outputs:
        name = release_name(output.name, image)
        if name is None:
            continue
        if name.startswith("netboot/"):
            rel = name.removeprefix(f"netboot/{image}/")
            found.append(Placement(output.file, image,
                                   PurePosixPath(arch, "netboot", image), rel))
        else:
            found.append(Placement(output.file, image, PurePosixPath(arch, "iso-hybrid"),
                                   name.removeprefix("iso-hybrid/")))
    for run in build.boots:
        if run.screenshot is not None:
            found.append(Placement(run.screenshot, image, PurePosixPath(arch, "iso-hybrid"),
                                   f"screens/{image}-{run.mode}.png"))
    return found


def plan(builds: Sequence[BuildOutput]) -> list[Placement]:
    """Every file's place in the release; two images or files on one path are refused."""
    by_image: dict[str, BuildOutput] = {}
    for build in builds:
        same = by_image.get(build.basename)
        if same is not None:
            raise PublishError(f"{build.outdir} and {same.outdir} both hold the image "
                               f"{build.basename}: publish one of them")
        by_image[build.basename] = build
    taken: dict[PurePosixPath, Placement] = {}
    sums = {name for name, _ in SUM_FILES} | {f"{name}.asc" for name, _ in SUM_FILES}
    for build in builds:
        for placement in _placements(build):
            other = taken.get(placement.dest)
            if other is not None or placement.rel in sums:
                first = other.source.path if other is not None else "the release's checksums"
                raise PublishError(f"{placement.source.path} and {first} would both be "
                                   f"published as {placement.dest}")
            taken[placement.dest] = placement
    return sorted(taken.values(), key=lambda p: str(p.dest))


def _images(builds: Sequence[BuildOutput], placements: Sequence[Placement]
            ) -> list[ReleasedImage]:
    images = []
    for build in sorted(builds, key=lambda b: b.basename):
        mine = [p for p in placements if p.image == build.basename]
        files = tuple(sorted(str(p.dest) for p in mine))
        iso = next((p for p in mine if p.root.name == "iso-hybrid"
                    and p.rel == f"{build.basename}.iso"), None)
        boot = {}
        for run in build.boots:
            screen = (str(PurePosixPath(build.architecture, "iso-hybrid", "screens",
                                        f"{build.basename}-{run.mode}.png"))
                      if run.screenshot is not None else None)
            boot[run.mode] = ReleasedBoot(run.result, run.seconds_to_login, screen)
        images.append(ReleasedImage(
            image=build.basename, architecture=build.architecture, name=build.name,
            codename=build.codename, files=files, build=build.report, boot=boot,
            iso=str(iso.dest) if iso else None, iso_bytes=iso.source.size if iso else None))
    return images


def _check_release(release: Path, builds: Sequence[BuildOutput], force: bool) -> None:
    if release.is_symlink():
        raise PublishError(f"{release} is a symlink: give the directory itself")
    if os.path.lexists(release):
        if not release.is_dir():
            raise PublishError(f"{release} exists and is not a directory")
        if any(release.iterdir()) and not force:
            raise PublishError(f"{release} exists and is not empty: use --force to replace "
                               "it, or publish into another directory")
    real = release.resolve()
    for build in builds:
        if build.outdir.resolve().is_relative_to(real):
            raise PublishError(f"{build.outdir} is inside the release directory {release}, "
                               "which publishing replaces")


def _check_key(runner: Runner, key: str, home: Path | None) -> None:
    """The signing key must be there before anything is written."""
    where = f"GnuPG home {home}" if home is not None else "the default GnuPG home"
    try:
        result = runner.run([*_gpg(home), "--list-secret-keys", "--", key], check=False,
                            capture=True, quiet=True, what="looking up the signing key")
    except DebliveError as exc:
        raise PublishError(f"cannot sign with {key!r}: {exc}") from None
    if result.returncode != 0:
        raise PublishError(f"signing key {key!r}: no secret key for it in {where}")


def _gpg(home: Path | None) -> list[str]:
    return ["gpg", "--batch", *(["--homedir", str(home)] if home is not None else [])]


def _copy(source: Verified, dest: Path) -> None:
    """Copy source to dest, hashing what is copied: a file changed since it was
    checked is an error, not a release with wrong sums."""
    h256, h512 = hashlib.sha256(), hashlib.sha512()
    src_fd = os.open(source.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(src_fd, "rb") as src, dest.open("xb") as out:
        for block in iter(lambda: src.read(CHUNK), b""):
            h256.update(block)
            h512.update(block)
            out.write(block)
        os.fchmod(out.fileno(), 0o644)
        mtime = os.fstat(src_fd).st_mtime_ns
    os.utime(dest, ns=(mtime, mtime))
    if (h256.hexdigest(), h512.hexdigest()) != (source.sha256, source.sha512):
        raise DebliveError(f"{source.path} changed while it was published: publish again")


def place(source: Verified, dest: Path) -> str:
    """Hard-link source at dest (the same file system), else copy it; how, for the log."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source.path, dest, follow_symlinks=False)
        return "linked"
    except OSError as exc:
        if exc.errno not in COPY_INSTEAD:
            raise
    _copy(source, dest)
    return "copied"


def _write_sums(staging: Path, placements: Sequence[Placement]) -> list[Path]:
    """SHA256SUMS and SHA512SUMS in each summed directory, names relative to it, sorted."""
    roots: dict[PurePosixPath, list[Placement]] = {}
    for placement in placements:
        roots.setdefault(placement.root, []).append(placement)
    written = []
    for root, members in sorted(roots.items(), key=lambda item: str(item[0])):
        for name, algorithm in SUM_FILES:
            lines = [f"{getattr(p.source, algorithm)}  {p.rel}\n"
                     for p in sorted(members, key=lambda p: p.rel)]
            path = staging / root / name
            write_atomic(path, "".join(lines))
            written.append(path)
    return written


def _sign(runner: Runner, sums: Sequence[Path], key: str, home: Path | None) -> list[Path]:
    signed = []
    for path in sums:
        asc = path.with_name(f"{path.name}.asc")
        runner.run([*_gpg(home), "--local-user", key, "--clearsign", "--output", str(asc),
                    str(path)], quiet=True, what=f"signing {path.name}")
        signed.append(asc)
    return signed


def release_report(images: Sequence[ReleasedImage]) -> str:
    """RELEASE/report.json: every image's files, build report and boot results."""
    data = {
        "format": FORMAT,
        "passed": all(image.passed for image in images),
        "images": [image.to_json() for image in images],
    }
    return json.dumps(data, indent=2) + "\n"


def _fill(staging: Path, placements: Sequence[Placement], images: Sequence[ReleasedImage],
          runner: Runner, sign_key: str | None, gnupg_home: Path | None) -> list[Path]:
    """Write the whole release into staging; the files written."""
    log = runner.log
    how: dict[str, int] = {}
    for placement in placements:
        done = place(placement.source, staging / placement.dest)
        how[done] = how.get(done, 0) + 1
    log.info("release files: " + ", ".join(f"{n} {word}" for word, n in sorted(how.items())))
    sums = _write_sums(staging, placements)
    signed = _sign(runner, sums, sign_key, gnupg_home) if sign_key is not None else []
    write_atomic(staging / "report.json", release_report(images))
    write_atomic(staging / "index.html", render_index(images))
    return [*(staging / p.dest for p in placements), *sums, *signed,
            staging / "report.json", staging / "index.html"]


def _swap(staging: Path, release: Path) -> None:
    """staging becomes release; an existing release is renamed away, then deleted."""
    old = release.with_name(f".{release.name}.old")
    with interrupt.deferred():
        if os.path.lexists(release):
            deletion.remove_tree(old)
            os.rename(release, old)
            os.rename(staging, release)
            deletion.remove_tree(old)
        else:
            os.rename(staging, release)


def _check_space(placements: Sequence[Placement], release: Path) -> None:
    """Files on another file system are copied: their bytes must fit."""
    copied = sum(p.source.size for p in placements
                 if not diskspace.same_filesystem(p.source.path, release))
    if copied:
        diskspace.require(release.parent, copied + diskspace.MARGIN, "the release tree",
                          stage="publish")


def publish(
    outdirs: Sequence[Path], release: Path, *, force: bool = False,
    sign_key: str | None = None, gnupg_home: Path | None = None, runner: Runner,
) -> PublishResult:
    """Check every OUTDIR, then write the release tree at release whole, or not at all.

    Refusals (PublishError, exit 2) come before anything is written: an
    incomplete or failed build, a missing, symlinked or changed output, two
    images of one name, a non-empty release directory without force, a
    signing key that is not there.
    """
    log = runner.log
    if not outdirs:
        raise PublishError("no build output directory to publish")
    release = Path(os.path.abspath(release))
    builds = []
    for outdir in outdirs:
        build = read_outdir(outdir)
        log.info(f"{build.outdir}: {build.basename}: {len(build.outputs)} outputs verified, "
                 f"{len(build.boots)} boot test results")
        builds.append(build)
    placements = plan(builds)
    _check_release(release, builds, force)
    if sign_key is not None:
        _check_key(runner, sign_key, gnupg_home)
    _check_space(placements, release)
    images = _images(builds, placements)
    staging = release.with_name(f".{release.name}.partial")
    deletion.remove_tree(staging)
    try:
        release.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        written = _fill(staging, placements, images, runner, sign_key, gnupg_home)
        _swap(staging, release)
    except BaseException:
        deletion.remove_tree(staging)
        raise
    files = tuple(sorted(release / path.relative_to(staging) for path in written))
    passed = all(image.passed for image in images)
    log.info(f"published {len(images)} images into {release}"
             + ("" if passed else " (some boot tests failed)"))
    return PublishResult(release, tuple(image.image for image in images), files, passed)
