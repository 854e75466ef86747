"""The build pipeline: stages in the seed's order, each undone in reverse on failure.

Temporary changes to the tree (chroot mounts, the package cache mount, the
service block, the host's resolv.conf, the build mirror's sources) are entered
into one ExitStack, so whatever fails, they are undone deepest first before
the error is reported. Results are written into the work tree's output/ and
moved into the output directory only when the whole build has succeeded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deblive.apt import mirrorfault, plan
from deblive.apt.pkgcache import PackageCache
from deblive.build import chroot, report
from deblive.build.context import BuildContext, WorkTree
from deblive.build.stages import bootstrap, clean, hook, packages, sources, squash, users
from deblive.core import interrupt
from deblive.core.interrupt import Interrupted
from deblive.core.log import BuildLog, format_seconds
from deblive.core.runner import DebliveError, Runner
from deblive.host import diskspace, preflight, sandbox
from deblive.host import workbase as clean_mod
from deblive.model.config import ImageConfig

DEFAULT_CACHE = Path(os.environ.get("DEBLIVE_CACHE", "/var/cache/deblive"))
DEFAULT_WORK_BASE = Path(os.environ.get("DEBLIVE_WORKDIR", "/var/tmp/deblive"))
RESULT_MARKER = "report.json"


class OutputExistsError(DebliveError):
    exit_code = 2


class BusyError(DebliveError):
    exit_code = 2


@dataclass
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
    return DEFAULT_WORK_BASE / f"{config.name}-{config.codename}-{config.architecture}"


@contextlib.contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """One build per work directory: a second one is refused, naming the holder."""
    workdir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = workdir.parent / f".{workdir.name}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise BusyError(
                f"work directory {workdir} is in use by another deblive build (PID {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def check_outdir(outdir: Path, force: bool) -> None:
    if (outdir / RESULT_MARKER).exists() and not force:
        raise OutputExistsError(
            f"output directory {outdir} already holds a build (report.json); "
            "use --force to replace it, or -o for another directory"
        )
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputExistsError(f"output directory {outdir}: {exc.strerror}") from None
    if not os.access(outdir, os.W_OK):
        raise OutputExistsError(f"output directory {outdir} is not writable")


def publish(files: list[Path], outdir: Path) -> list[Path]:
    """Move finished files into outdir, each appearing under its name only when complete."""
    published = []
    for src in files:
        dest = outdir / src.name
        tmp = outdir / f".{src.name}.partial"
        try:
            os.replace(src, dest)
        except OSError:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
            src.unlink()
        published.append(dest)
    return published


def check_no_mounts(log: BuildLog, root: Path) -> None:
    """After teardown nothing may be mounted below the work tree; say so in the log."""
    left = sandbox.mounts_under(root)
    log.info(f"mounts below the work tree after teardown: {len(left)}")
    if left:
        log.error("left mounted (unmounting now): " + ", ".join(map(str, left)))
        sandbox.unmount_all_under(root)


def _chroot_session(ctx: BuildContext, stack: contextlib.ExitStack) -> None:
    """Mounts, cache, service block and resolv.conf: everything undone by the stack."""
    rootfs = ctx.rootfs
    stack.enter_context(sandbox.chroot_mounts(rootfs))
    stack.enter_context(sandbox.bind_mount(ctx.apt_archives, rootfs / "var/cache/apt/archives"))
    stack.enter_context(chroot.service_block(rootfs, ctx.runner))
    ctx.initramfs = stack.enter_context(chroot.initramfs_deferred(rootfs, ctx.runner))
    stack.enter_context(chroot.host_resolv_conf(rootfs))
    sources.use_build_mirror(ctx)


def run_stages(ctx: BuildContext, make_iso: bool) -> list[Path]:
    """All stages in order; returns the files to publish."""
    log = ctx.log
    cache = PackageCache(ctx.cache / "archives", ctx.work.root / "archives", log)
    cache.stage_in()
    ctx.archives = cache.archives
    try:
        with log.stage("bootstrap"):
            bootstrap.run(ctx)
        with contextlib.ExitStack() as stack:
            with log.stage("chroot-setup"):
                _chroot_session(ctx, stack)
            with log.stage("packages"):
                packages.run(ctx)
            with log.stage("users"):
                users.run(ctx)
            with log.stage("hook"):
                hook.run(ctx)
            with log.stage("initramfs"):
                assert ctx.initramfs is not None
                versions = ctx.initramfs.generate()
                log.info("initramfs made once for " + (", ".join(versions) or "no kernel"))
            with log.stage("sources"):
                sources.use_image_sources(ctx)
            with log.stage("chroot-teardown"):
                stack.close()
    finally:
        # Even a failed build keeps what it downloaded for the next try.
        ctx.facts["downloaded_bytes"] = cache.stage_out()
    with log.stage("clean"):
        clean.run(ctx)
    tree = squash.check_space(ctx)  # before the stage: it refuses, or the stage only writes
    with log.stage("squash"):
        squashfs = squash.run(ctx, tree)
    outputs = [squashfs, ctx.work.output / "filesystem.packages"]
    if make_iso:
        from deblive.build.stages import iso

        # The squashfs is hard-linked into the medium; the ISO is about its size.
        needed = squashfs.stat().st_size + diskspace.ISO_EXTRA
        log.info(diskspace.require(ctx.work.root, needed, "the ISO", stage="iso"))
        outputs.append(iso.run(ctx, squashfs))
    return outputs


def failed_stage(log: BuildLog) -> str:
    """The innermost stage that did not finish (stages record their timing innermost first)."""
    failed = next((t.name for t in log.timings if not t.ok), None)
    if failed is None and log.current_stage != "main":
        # Stopped between a stage's start line and its body: no timing yet.
        failed = log.current_stage
    return failed or "setup"


def _remove_failed_tree(root: Path, error: BaseException) -> None:
    """--remove-failed-workdir: the same safe deletion as a successful build's."""
    try:
        sandbox.safe_rmtree(root)
    except (DebliveError, OSError, subprocess.CalledProcessError) as exc:
        print(f"deblive: could not remove the work tree {root}: {exc}", file=sys.stderr)
        return
    if isinstance(error, Interrupted):
        error.workdir_kept = False


def _fail(
    exc: BaseException, log: BuildLog, ctx: BuildContext, started: dt.datetime,
    options: BuildOptions,
) -> BaseException:
    """Report a failed or interrupted build; returns the exception to raise."""
    work = ctx.work.root
    stage = getattr(diskspace.root_error(exc), "stage", None) or failed_stage(log)
    log_error = ctx.runner.log_error
    full = diskspace.is_disk_full(exc) or (
        log_error is not None and diskspace.is_disk_full(log_error)
    )
    if full:
        log.detach_file()
    error: BaseException = exc
    if isinstance(exc, Interrupted):
        exc.stage, exc.workdir = stage, str(work)
    elif full:
        error = diskspace.DiskFullError(
            diskspace.full_disk_message(exc, stage, [work, options.outdir])
        )
    elif not isinstance(exc, DebliveError):
        first = diskspace.root_error(exc)
        if isinstance(first, DebliveError):
            error = first
    if isinstance(error, DebliveError):
        error = mirrorfault.explain(error, ctx.config)
    try:
        failed = report.build_report(ctx, started, [], "failed", error=str(error))
        report.write_report(failed, work / "report.json")
    except OSError as write_error:
        log.warn(f"could not write the failure report: {write_error}")
    what = "interrupted" if isinstance(exc, Interrupted) else "failed"
    fate = "will be removed" if options.remove_failed_workdir else f"is kept at {work}"
    log.error(f"build {what} in stage {stage}; the work tree {fate}")
    with contextlib.suppress(OSError, ValueError):
        log.close()
    return error


def build(config: ImageConfig, options: BuildOptions, log: BuildLog | None = None) -> BuildResult:
    """Build an image; raises DebliveError (with exit_code) on failure."""
    log = log or BuildLog(verbose=options.verbose)
    try:
        preflight.check(config, with_iso=options.make_iso, network=options.check_network)
        if options.check_network:  # resolve the package set first: unknown names exit 2
            plan.precheck(config, options.cache, log)
    except DebliveError as exc:  # a mirror fault is named as one (exit status kept)
        raise mirrorfault.explain(exc, config) from None
    check_outdir(options.outdir, options.force)
    sandbox.enter_private_mount_namespace()
    work = WorkTree(options.workdir)
    with workdir_lock(work.root):
        if work.root.exists():
            log.info(f"removing the previous work tree {work.root}")
            sandbox.safe_rmtree(work.root)
        work.root.mkdir(parents=True)
        # Marks the tree as deblive's, so `deblive clean` deletes nothing else.
        (work.root / clean_mod.MARKER).write_text(f"{os.getpid()}\n")
        log.open(work.log)
        runner = Runner(log)
        ctx = BuildContext(
            config=config, log=log, runner=runner, work=work, outdir=options.outdir,
            cache=options.cache,
        )
        if "SOURCE_DATE_EPOCH" in os.environ:
            # Reproducible builds: the date and the medium's id follow from the
            # inputs, so two builds of the same config give the same ISO.
            ctx.source_date_epoch = int(os.environ["SOURCE_DATE_EPOCH"])
            ctx.build_id = str(
                uuid.uuid5(uuid.NAMESPACE_URL, f"deblive:{config.digest()}:{ctx.source_date_epoch}")
            )
        started = dt.datetime.now(dt.UTC)
        log.info(
            f"building {config.name}: {config.codename} ({config.suite}) {config.architecture}, "
            f"work tree {work.root}"
        )
        try:
            files = run_stages(ctx, options.make_iso)
        except BaseException as exc:
            runner.terminate_children()
            check_no_mounts(log, work.root)
            error = _fail(exc, log, ctx, started, options)
            if options.remove_failed_workdir:
                _remove_failed_tree(work.root, error)
            if error is exc:
                raise
            raise error from None
        check_no_mounts(log, work.root)
        build_report = report.build_report(ctx, started, files, "success")
        report.write_report(build_report, work.output / "report.json")
        if options.make_iso:
            isos = [f for f in files if f.suffix == ".iso"]
            report.sha256sums(isos, work.output / "SHA256SUMS")
            files.append(work.output / "SHA256SUMS")
        logs_dir = work.output / "logs"
        log.info(f"build finished in {format_seconds(build_report['duration_seconds'])}")
        log.close()
        shutil.copyfile(work.log, work.output / "build.log")
        if not diskspace.same_filesystem(work.output, options.outdir):
            # Across file systems publishing copies: check before the first byte.
            needed = sum(f.stat().st_size for f in files) + diskspace.MARGIN
            diskspace.require(
                options.outdir, needed, "the results in the output directory", stage="publish"
            )
        with interrupt.deferred():
            published = publish([*files, work.output / "build.log"], options.outdir)
            if logs_dir.is_dir():
                dest = options.outdir / "logs"
                if dest.exists():
                    shutil.rmtree(dest)
                shutil.move(logs_dir, dest)
            # report.json last: its presence marks a complete result.
            published += publish([work.output / "report.json"], options.outdir)
        if not options.keep_workdir:
            sandbox.safe_rmtree(work.root)
        return BuildResult(options.outdir, published, build_report)
