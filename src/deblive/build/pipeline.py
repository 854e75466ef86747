"""The build pipeline: the seed's steps as a list of stages, each undone in reverse on failure.

Temporary changes to the tree (chroot mounts, the package cache mount, the
service block, the host's resolv.conf, the build mirror's sources) are
registered by the stage that makes them on the context's exit stacks, so
whatever fails, they are undone deepest first before the error is reported.
Results are written into the work tree's output/ and moved into the output
directory only when the whole build has succeeded (build.publish).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from deblive.apt import archive, mirrorfault, plan
from deblive.build import failure, publish, report
from deblive.build.context import BuildContext, WorkTree
from deblive.build.stage import Stage
from deblive.build.stages.bootloaders import Bootloaders
from deblive.build.stages.bootstrap import Bootstrap
from deblive.build.stages.chrootsetup import ChrootSetup, ChrootTeardown
from deblive.build.stages.clean import Clean
from deblive.build.stages.hook import Hook
from deblive.build.stages.initramfs import Initramfs
from deblive.build.stages.iso import Iso
from deblive.build.stages.medium import Medium
from deblive.build.stages.packages import Packages
from deblive.build.stages.sources import ImageSources
from deblive.build.stages.squash import Squash
from deblive.build.stages.users import Users
from deblive.core.errors import DebliveError
from deblive.core.log import BuildLog, format_seconds
from deblive.core.runner import Runner
from deblive.host import preflight, sandbox, workbase
from deblive.model.config import ImageConfig

DEFAULT_CACHE = Path(os.environ.get("DEBLIVE_CACHE", "/var/cache/deblive"))

# The seed's steps, in order. Each registers its own teardown.
STAGES: tuple[Stage, ...] = (
    Bootstrap(), ChrootSetup(), Packages(), Users(), Hook(), Initramfs(), ImageSources(),
    ChrootTeardown(), Clean(), Squash(), Medium(), Bootloaders(), Iso(),
)


@dataclass(frozen=True)
class BuildOptions:
    outdir: Path
    workdir: Path
    cache: Path = DEFAULT_CACHE
    keep_workdir: bool = False
    remove_failed_workdir: bool = False
    make_iso: bool = True
    force: bool = False
    verbose: bool = False
    check_network: bool = True


@dataclass
class BuildResult:
    outdir: Path
    outputs: list[Path]
    report: dict[str, object]


def default_outdir(config: ImageConfig) -> Path:
    return Path("out") / config.name


def default_workdir(config: ImageConfig) -> Path:
    return workbase.DEFAULT_WORK_BASE / config.image_basename


def run_stages(ctx: BuildContext) -> list[Path]:
    """Every wanted stage in order, inside the build's teardown; returns the outputs."""
    with ctx.teardown:
        for stage in STAGES:
            if stage.wanted(ctx):
                stage.check(ctx)
                with ctx.log.stage(stage.name):
                    stage.run(ctx)
    return ctx.outputs


def check_before(config: ImageConfig, options: BuildOptions, log: BuildLog) -> None:
    """Everything that can fail on bad input, before anything is touched (exit 2)."""
    try:
        preflight.check(config, Runner(log), with_iso=options.make_iso)
        if options.check_network:
            archive.check_mirror(config)
            plan.precheck(config, options.cache, log)  # unknown package names exit 2
    except DebliveError as exc:  # a mirror fault is named as one (exit status kept)
        raise mirrorfault.explain(exc, config) from None
    publish.check_outdir(options.outdir, options.force)


def make_context(config: ImageConfig, options: BuildOptions, log: BuildLog) -> BuildContext:
    ctx = BuildContext(
        config=config, log=log, runner=Runner(log), work=WorkTree(options.workdir),
        outdir=options.outdir, cache=options.cache, make_iso=options.make_iso,
    )
    if "SOURCE_DATE_EPOCH" in os.environ:
        # Reproducible builds: the date and the medium's id follow from the
        # inputs, so two builds of the same config give the same ISO.
        ctx.source_date_epoch = int(os.environ["SOURCE_DATE_EPOCH"])
        digest = report.config_digest(config)
        ctx.build_id = str(uuid.uuid5(uuid.NAMESPACE_URL,
                                      f"deblive:{digest}:{ctx.source_date_epoch}"))
    return ctx


def finish(ctx: BuildContext, started: dt.datetime, options: BuildOptions) -> BuildResult:
    """Report, checksums and the build log into output/, then publish them."""
    work, log = ctx.work, ctx.log
    files = list(ctx.outputs)
    build_report = report.build_report(ctx, started, files, "success")
    report.write_report(build_report, work.output / "report.json")
    isos = [f for f in files if f.suffix == ".iso"]
    if isos:
        report.sha256sums(isos, work.output / "SHA256SUMS")
        files.append(work.output / "SHA256SUMS")
    log.info(f"build finished in {format_seconds(float(build_report['duration_seconds']))}")
    log.close()
    shutil.copyfile(work.log, work.output / "build.log")
    published = publish.publish_results(
        [*files, work.output / "build.log"], work.logs, work.output / "report.json",
        options.outdir,
    )
    if not options.keep_workdir:
        workbase.remove(work.root)
    return BuildResult(options.outdir, published, build_report)


def build(config: ImageConfig, options: BuildOptions, log: BuildLog | None = None) -> BuildResult:
    """Build an image; raises DebliveError (with exit_code) on failure."""
    log = log or BuildLog(verbose=options.verbose)
    check_before(config, options, log)
    sandbox.enter_private_mount_namespace()
    with workbase.workdir_lock(options.workdir):
        if os.path.lexists(options.workdir):
            log.info(f"removing the previous work tree {options.workdir}")
        workbase.make_work_tree(options.workdir)
        ctx = make_context(config, options, log)
        log.open(ctx.work.log)
        started = dt.datetime.now(dt.UTC)
        log.info(f"building {config.name}: {config.codename} ({config.suite}) "
                 f"{config.architecture}, work tree {ctx.work.root}")
        try:
            run_stages(ctx)
        except BaseException as exc:
            ctx.runner.terminate_children()
            failure.check_no_mounts(log, ctx.work.root)
            error = failure.report_failure(exc, ctx, started, options.outdir,
                                           options.remove_failed_workdir)
            if error is exc:
                raise
            raise error from None
        failure.check_no_mounts(log, ctx.work.root)
        return finish(ctx, started, options)
