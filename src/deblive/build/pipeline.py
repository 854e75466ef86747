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
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from deblive.apt import archive, extras, localrepo, mirrorfault, plan
from deblive.build import basecache, failure, publish, report
from deblive.build.context import BuildContext, WorkTree
from deblive.build.stage import Stage
from deblive.build.stages.base import Base, BaseClean
from deblive.build.stages.bootloaders import Bootloaders
from deblive.build.stages.bootstrap import Bootstrap, PackageCacheIn
from deblive.build.stages.chrootsetup import ChrootSetup, ChrootTeardown
from deblive.build.stages.clean import Clean
from deblive.build.stages.disk import Disk
from deblive.build.stages.hook import Hook
from deblive.build.stages.initramfs import Initramfs
from deblive.build.stages.iso import Iso
from deblive.build.stages.medium import Medium
from deblive.build.stages.netboot import Netboot
from deblive.build.stages.overlay import Overlay
from deblive.build.stages.packagelayer import PackageLayer
from deblive.build.stages.packages import MediumPackages, Packages
from deblive.build.stages.sources import ImageSources
from deblive.build.stages.squash import Squash
from deblive.build.stages.users import Users
from deblive.core.errors import BadInputError, DebliveError
from deblive.core.log import BuildLog, format_seconds
from deblive.core.runner import Runner
from deblive.host import preflight, sandbox, treeram, workbase
from deblive.model.config import ImageConfig

DEFAULT_CACHE = Path(os.environ.get("DEBLIVE_CACHE", "/var/cache/deblive"))

# The seed's steps, in order. Each registers its own teardown. The ones marked
# in_base make the base tree, which a layered build can take from the cache.
STAGES: tuple[Stage, ...] = (
    PackageCacheIn(), Bootstrap(), ChrootSetup(), Packages(), Users(), BaseClean(),
    PackageLayer(), Base(), MediumPackages(), Overlay(), Hook(), Initramfs(), ImageSources(),
    ChrootTeardown(), Clean(), Squash(), Medium(), Bootloaders(), Iso(), Disk(),
    Netboot(),
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
    layout: str | None = None  # "flat" or "layered": overrides the config's squashfs.layout
    use_cache: bool = True  # a layered build may take its base from the cache and store it
    tree: treeram.TreePlace = treeram.TreePlace.AUTO  # where the image tree is built


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
            if stage.in_base and ctx.base_hit is not None:
                ctx.log.info(f"stage {stage.name}: from the base cache ({ctx.base_hit.key})")
                ctx.cached_stages.append(stage.name)
                continue
            if stage.wanted(ctx):
                stage.check(ctx)
                with ctx.log.stage(stage.name):
                    stage.run(ctx)
    return ctx.outputs


def check_before(config: ImageConfig, options: BuildOptions, log: BuildLog
                 ) -> tuple[plan.Plan | None, extras.Extras, treeram.TreeChoice]:
    """Everything that can fail on bad input, before anything is touched (exit 2).

    Returns the package plan (None without the network check): its versions
    and indexes are part of a layered build's base key; and the archives
    beside the mirror (repositories checked, the local packages' archive); and
    where the image tree is built (in RAM if the plan's installed size fits).
    """
    resolved = None
    try:
        preflight.check(config, Runner(log), with_iso=options.make_iso)
        found = extras.gather(config, Runner(log), options.cache,
                              check_network=options.check_network)
        if options.check_network:
            archive.check_mirror(config)
            resolved = plan.precheck(config, options.cache, log, found.all,
                                     found.local_names)  # unknown names exit 2
    except DebliveError as exc:  # a mirror fault is named as one (exit status kept)
        raise mirrorfault.explain(exc, config) from None
    tree_choice = treeram.choose(options.tree, resolved.installed_bytes if resolved else None,
                                 keep_workdir=options.keep_workdir)  # a bad cap: exit 2
    publish.check_outdir(options.outdir, options.force)
    return resolved, found, tree_choice


def choose_base(ctx: BuildContext, options: BuildOptions, resolved: plan.Plan | None) -> None:
    """A layered build's base: a cache entry for its inputs (a hit), or why not."""
    ctx.plan = resolved  # its verified lists go into the chroot (stages.sources)
    ctx.layered = (options.layout or ctx.config.squashfs.layout) == "layered"
    if not ctx.layered:
        return
    if not options.use_cache:
        ctx.base_miss = "the cache is off (--no-cache)"
    elif resolved is None:
        ctx.base_miss = "no package plan to key the base on (no network check)"
    else:
        ctx.base_cache = basecache.BaseCache(options.cache)
        local = localrepo.digest(ctx.local_packages) if ctx.local_packages else ""
        ctx.base_inputs = basecache.base_inputs(ctx.config, resolved.versions, resolved.indexes,
                                                resolved.requested_names, local)
        key = ctx.base_inputs.key
        ctx.teardown.enter_context(ctx.base_cache.using(key))  # prune leaves it alone
        entry = ctx.base_cache.entry(key)
        if entry is not None and take_base(ctx, entry):
            ctx.log.info(f"base cache: hit {key}" + (
                f", a package layer over {entry.parent}" if entry.parent else ""))
            return
        parent = ctx.base_cache.parent_for(ctx.base_inputs)
        if parent is not None and take_base(ctx, parent[0]):
            entry, ctx.extra_packages = parent
            ctx.log.info(f"base cache: hit {entry.key}, with packages on top: "
                         f"{' '.join(ctx.extra_packages)} (a new package layer)")
            return
        newest = ctx.base_cache.newest_for(ctx.config.name)
        if newest is None:
            ctx.base_miss = "no cached base for this image yet"
        else:
            changed = ctx.base_inputs.changed_from(
                dict(newest.meta.get("inputs", {})), list(newest.meta.get("packages", [])))
            ctx.base_miss = f"changed since {newest.key}: {', '.join(changed) or 'format'}"
    ctx.log.info(f"base cache: miss: {ctx.base_miss}")


def take_base(ctx: BuildContext, entry: basecache.Entry) -> bool:
    """Start from entry: hold and touch it and every entry beneath it; False if one
    beneath it is gone (pruned), and so is entry's tree."""
    assert ctx.base_cache is not None
    chain = ctx.base_cache.chain(entry)
    if chain is None:
        ctx.log.info(f"base cache: {entry.key} is a layer whose base is gone: not used")
        return False
    for held in chain:
        ctx.teardown.enter_context(ctx.base_cache.using(held.key))
    if any(ctx.base_cache.entry(held.key) is None for held in chain):  # pruned meanwhile
        return False
    for held in reversed(chain):  # a base is never less recently used than its layers
        ctx.base_cache.touch(held)
    ctx.base_hit, ctx.base_chain = entry, chain
    adopt_base_date(ctx, entry)
    return True


EPOCH_ORIGINS = {
    "environment": "from the environment",
    "snapshot": "the snapshot's time",
    "release": "the newest Date of the Release files used",
    "clock": "the clock (no package plan to date the build by)",
    "base": "the cached base's",
}


def build_date(config: ImageConfig, resolved: plan.Plan | None) -> tuple[int, str]:
    """SOURCE_DATE_EPOCH and where it came from: the environment's, else the snapshot's
    time, else the newest Date of the Release files the plan resolved from, else (no
    plan) the clock."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        text = os.environ["SOURCE_DATE_EPOCH"]
        if not text.isascii() or not text.isdigit():
            raise BadInputError(f"SOURCE_DATE_EPOCH={text!r} in the environment is not a "
                                "number of seconds since 1970")
        return int(text), "environment"
    if config.snapshot_epoch is not None and config.is_snapshot_uri(config.mirror or ""):
        return config.snapshot_epoch, "snapshot"
    if resolved is not None and resolved.release_epoch is not None:
        return resolved.release_epoch, "release"
    return int(time.time()), "clock"


def adopt_base_date(ctx: BuildContext, entry: basecache.Entry) -> None:
    """A build dated by the Release files takes its base's date: the security suite's
    Release is signed anew every few days with no package changed, and the base's
    files (the metapackage's version too) carry the date it was built with."""
    saved = entry.facts.get("source_date_epoch")
    if ctx.source_date_epoch_from != "release" or not isinstance(saved, int):
        return
    ctx.source_date_epoch, ctx.source_date_epoch_from = saved, "base"
    ctx.runner.fixed_env["SOURCE_DATE_EPOCH"] = str(saved)
    ctx.log.info(f"SOURCE_DATE_EPOCH {saved}: the cached base's")


def make_context(config: ImageConfig, options: BuildOptions, log: BuildLog,
                 date: tuple[int, str]) -> BuildContext:
    ctx = BuildContext(
        config=config, log=log, runner=Runner(log), work=WorkTree(options.workdir),
        outdir=options.outdir, cache=options.cache, make_iso=options.make_iso,
    )
    # Reproducible by default: the date and the medium's id follow from the
    # inputs, so two builds of the same config from one mirror state give the
    # same ISO. Every command sees the same date (chroots included), in UTC
    # (FAT's times are local times: the EFI image would follow the caller's zone).
    ctx.source_date_epoch, ctx.source_date_epoch_from = date
    ctx.runner.fixed_env.update({"SOURCE_DATE_EPOCH": str(ctx.source_date_epoch), "TZ": "UTC"})
    if ctx.source_date_epoch_from != "clock":
        digest = report.config_digest(config)
        ctx.build_id = str(uuid.uuid5(uuid.NAMESPACE_URL,
                                      f"deblive:{digest}:{ctx.source_date_epoch}"))
    return ctx


def finish(ctx: BuildContext, started: dt.datetime, options: BuildOptions) -> BuildResult:
    """Report, checksums and the build log into output/, then publish them."""
    work, log = ctx.work, ctx.log
    files = list(ctx.outputs)
    build_report = report.build_report(ctx, started, files, "success")
    # The image is in the verified squashfs now: its tree (about 3 s to delete on disk
    # here; a tree in RAM went with the teardown, and rootfs is an empty directory)
    # goes beside the checksums and the publishing; what the deletion raises is
    # raised here, by result().
    deleter = ThreadPoolExecutor(1, thread_name_prefix="remove rootfs")
    removal: Future[None] | None = (
        None if options.keep_workdir else deleter.submit(workbase.remove, ctx.rootfs))
    deleter.shutdown(wait=False)
    try:
        report.write_report(build_report, work.output / "report.json")
        summed = [f for f in report.output_files(files) if f.suffix in (".iso", ".img")
                  or f.name.endswith(".spdx.json") or f.parent != work.output]
        if summed:
            report.sha256sums(summed, work.output / "SHA256SUMS")
            files.append(work.output / "SHA256SUMS")
        log.info(f"build finished in {format_seconds(float(build_report['duration_seconds']))}")
        log.close()
        shutil.copyfile(work.log, work.output / "build.log")
        published = publish.publish_results(
            [*files, work.output / "build.log"], work.logs, work.output / "report.json",
            options.outdir,
        )
    finally:
        if removal is not None:
            removal.result()
    if not options.keep_workdir:
        workbase.remove(work.root)
    return BuildResult(options.outdir, published, build_report)


def build(config: ImageConfig, options: BuildOptions, log: BuildLog | None = None) -> BuildResult:
    """Build an image; raises DebliveError (with exit_code) on failure."""
    log = log or BuildLog(verbose=options.verbose)
    # The caller's umask must not reach the image (the directories deblive makes,
    # every maintainer script's files) or the outputs: a reproducible image is
    # the same under any umask.
    os.umask(0o022)
    resolved, found, tree_choice = check_before(config, options, log)
    date = build_date(config, resolved)  # a bad SOURCE_DATE_EPOCH: exit 2 here
    sandbox.enter_private_mount_namespace()
    with workbase.workdir_lock(options.workdir):
        if os.path.lexists(options.workdir):
            log.info(f"removing the previous work tree {options.workdir}")
        workbase.make_work_tree(options.workdir)
        ctx = make_context(config, options, log, date)
        ctx.tree_choice = tree_choice
        ctx.keep_tree, ctx.keep_failed_tree = (options.keep_workdir,
                                               not options.remove_failed_workdir)
        ctx.extras, ctx.local_archive = found.archives, found.local
        ctx.local_packages = found.local_packages
        log.open(ctx.work.log)
        started = dt.datetime.now(dt.UTC)
        log.info(f"building {config.name}: {config.codename} ({config.suite}) "
                 f"{config.architecture}, work tree {ctx.work.root}")
        log.info(f"SOURCE_DATE_EPOCH {ctx.source_date_epoch}: "
                 f"{EPOCH_ORIGINS[ctx.source_date_epoch_from]}")
        try:
            choose_base(ctx, options, resolved)
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
