"""`deblive matrix`: the image matrix as a GitLab CI pipeline, not a scheduler of our own.

Images are built where the field builds them, on an existing engine
(archiso's and grml-live's GitLab pipelines, Debian's salsa): one build job
per config and architecture on a runner of that architecture (or on amd64
runners through qemu-user with emulate), one boot-test job per image, an
optional second build compared by checksum, and one publish job that merges
everything into a release tree with `deblive publish`.

The file is a pure function of its inputs (the configs, as named, and the
options): regenerating it gives the same bytes, so it can be committed and
checked in review. Every value that reaches a job's shell script is quoted.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from deblive.model.arch import Arch

RUNNER_TAG = "deblive"
CACHE_DIR = ".deblive-cache"  # inside the project: GitLab caches only paths there
OUT = "out"
RELEASE = "release"
REBUILD = "rebuild"
DEFAULT_TEST_MODES = ("bios-cd", "uefi-usb")
EXPIRE = "1 week"
STAGES = ("build", "test", "reproducibility", "publish")


@dataclass(frozen=True)
class MatrixImage:
    """One cell of the matrix: a config built for one architecture."""

    config: str  # the config's path as given, relative to the repository
    name: str
    codename: str
    arch: Arch
    formats: tuple[str, ...]

    @property
    def basename(self) -> str:
        return f"{self.name}-{self.codename}-{self.arch}"

    @property
    def outdir(self) -> str:
        return f"{OUT}/{self.basename}"


def runner_arch(image: MatrixImage, emulate: bool) -> Arch:
    """Where the image's jobs run: its own architecture, or amd64 through qemu-user."""
    return Arch.AMD64 if emulate else image.arch


def test_target(image: MatrixImage, modes: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """What the test job boots and in which modes: the ISO, else the disk image, else
    the netboot tree in the PXE modes of the same firmware. An architecture booted
    by Open Firmware (ppc64el) boots its ISO in the Open Firmware modes of the same
    media instead (bios-cd: ofw-cd)."""
    layout = image.arch.boot
    if layout is not None and not layout.firmware.efi:
        media = (m.rsplit("-", 1)[1] for m in modes if not m.startswith("pxe-"))
        return (f"{image.outdir}/{image.basename}.iso",
                tuple(dict.fromkeys(f"ofw-{medium}" for medium in media)))
    for fmt, ext in (("iso", "iso"), ("disk", "img")):
        if fmt in image.formats:
            return f"{image.outdir}/{image.basename}.{ext}", tuple(modes)
    firmware = [m.removeprefix("pxe-").split("-", 1)[0] for m in modes]
    return f"{image.outdir}/netboot", tuple(dict.fromkeys(f"pxe-{f}" for f in firmware))


def _cmd(*words: str) -> str:
    return " ".join(shlex.quote(w) if not w.startswith("$") else w for w in words)


def build_job(image: MatrixImage, emulate: bool) -> dict[str, Any]:
    return {
        "stage": "build",
        "tags": [RUNNER_TAG, str(runner_arch(image, emulate))],
        "cache": {"key": f"deblive-{image.codename}-{image.arch}", "paths": [f"{CACHE_DIR}/"]},
        "script": [_cmd("$DEBLIVE", "build", image.config, "--arch", str(image.arch),
                        "--cache-dir", CACHE_DIR, "-o", image.outdir, "--force")],
        "artifacts": {"paths": [f"{image.outdir}/"], "expire_in": EXPIRE},
    }


def test_job(image: MatrixImage, modes: Sequence[str], emulate: bool) -> dict[str, Any]:
    target, chosen = test_target(image, modes)
    results = f"{image.outdir}/test-{target.rsplit('/', 1)[1].rsplit('.', 1)[0]}/"
    return {
        "stage": "test",
        "tags": [RUNNER_TAG, str(runner_arch(image, emulate))],
        "needs": [{"job": f"build:{image.basename}", "artifacts": True}],
        "script": [_cmd("$DEBLIVE", "test", target, "--mode", ",".join(chosen),
                        "--screenshot")],
        # Results, serial logs and screenshots, failed boots' above all.
        "artifacts": {"when": "always", "paths": [results], "expire_in": EXPIRE},
    }


def reproducibility_job(image: MatrixImage, emulate: bool) -> dict[str, Any]:
    again = f"{REBUILD}/{image.basename}"
    sums = f"{image.outdir}/SHA256SUMS"
    report = f"{again}/diffoscope.html"
    return {
        "stage": "reproducibility",
        "tags": [RUNNER_TAG, str(runner_arch(image, emulate))],
        "needs": [{"job": f"build:{image.basename}", "artifacts": True}],
        "script": [
            _cmd("$DEBLIVE", "build", image.config, "--arch", str(image.arch), "--no-cache",
                 "--cache-dir", CACHE_DIR, "-o", again, "--force"),
            # Identical outputs, by sha256; on a difference diffoscope says where.
            f"cmp {shlex.quote(sums)} {shlex.quote(again + '/SHA256SUMS')} || "
            f"{{ diffoscope --html {shlex.quote(report)} {shlex.quote(image.outdir)} "
            f"{shlex.quote(again)}; exit 1; }}",
        ],
        "artifacts": {"when": "on_failure", "paths": [report], "expire_in": EXPIRE},
    }


def publish_job(images: Sequence[MatrixImage], tested: bool) -> dict[str, Any]:
    needs = [{"job": f"build:{i.basename}", "artifacts": True} for i in images]
    if tested:
        needs += [{"job": f"test:{i.basename}", "artifacts": True} for i in images]
    return {
        "stage": "publish",
        "tags": [RUNNER_TAG],
        "needs": needs,
        "script": [_cmd("$DEBLIVE", "publish", *(i.outdir for i in images), "-o", RELEASE,
                        "--force")],
        "artifacts": {"paths": [f"{RELEASE}/"], "expire_in": EXPIRE},
    }


def check_images(images: Sequence[MatrixImage]) -> None:
    """Two cells with one output name would overwrite each other's artifacts."""
    seen: dict[str, str] = {}
    for image in images:
        if image.basename in seen:
            raise ValueError(f"{image.config} and {seen[image.basename]} both make "
                             f"{image.basename} (the same name, suite and architecture)")
        seen[image.basename] = image.config


def pipeline(images: Sequence[MatrixImage], *, test_modes: Sequence[str] | None,
             emulate: bool, reproducibility: bool, command_line: str) -> str:
    """The .gitlab-ci.yml text; test_modes None: no boot tests."""
    check_images(images)
    jobs: dict[str, Any] = {
        "stages": list(STAGES),
        # The deblive command on the runners (installed there as the README says).
        "variables": {"DEBLIVE": "deblive"},
    }
    for image in images:
        jobs[f"build:{image.basename}"] = build_job(image, emulate)
    if test_modes:
        for image in images:
            jobs[f"test:{image.basename}"] = test_job(image, test_modes, emulate)
    if reproducibility:
        for image in images:
            jobs[f"reproduce:{image.basename}"] = reproducibility_job(image, emulate)
    jobs["publish"] = publish_job(images, bool(test_modes))
    header = (
        "# Generated by deblive matrix: do not edit; regenerate with\n"
        f"#   {command_line}\n"
        "# Runners: shell executor as root, tagged 'deblive' and their architecture\n"
        "# (README: Building the matrix).\n"
    )
    body = yaml.safe_dump(jobs, sort_keys=False, default_flow_style=False, width=100)
    return header + body
