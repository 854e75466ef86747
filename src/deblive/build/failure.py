"""A failed or interrupted build: what to tell, what to keep.

The message names the stage that failed and the plain cause first (a full
disk, a mirror fault); the work tree is kept for debugging (or removed on
request, by the same safe deletion as a successful build's) with a failure
report in it, and nothing is published.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from pathlib import Path

from deblive.apt import mirrorfault
from deblive.build import report
from deblive.build.context import BuildContext
from deblive.core.errors import DebliveError
from deblive.core.interrupt import Interrupted
from deblive.core.log import BuildLog
from deblive.host import diskspace, sandbox, treeram, workbase


def failed_stage(log: BuildLog) -> str:
    """The innermost stage that did not finish (stages record their timing innermost first)."""
    failed = next((t.name for t in log.timings if not t.ok), None)
    if failed is None and log.current_stage != "main":
        # Stopped between a stage's start line and its body: no timing yet.
        failed = log.current_stage
    return failed or "setup"


def check_no_mounts(log: BuildLog, root: Path) -> None:
    """After teardown nothing may be mounted below the work tree; say so in the log."""
    left = sandbox.mounts_under(root)
    log.info(f"mounts below the work tree after teardown: {len(left)}")
    if left:
        log.error("left mounted (unmounting now): " + ", ".join(map(str, left)))
        sandbox.unmount_all_under(root)


def remove_failed_tree(root: Path, error: BaseException) -> None:
    """--remove-failed-workdir: the same safe deletion as a successful build's."""
    try:
        workbase.remove(root)
    except (DebliveError, OSError) as exc:
        print(f"deblive: could not remove the work tree {root}: {exc}", file=sys.stderr)
        return
    if isinstance(error, Interrupted):
        error.workdir_kept = False


def tree_ram_full_message(exc: BaseException, ctx: BuildContext, stage: str) -> str:
    """ENOSPC from the tmpfs the tree was built in: its memory cap, not a disk, ran out."""
    choice = ctx.tree_choice
    cap = choice.cap_bytes // treeram.MIB if choice is not None else 0
    first = diskspace.root_error(exc)
    return (f"the image tree outgrew its memory in stage {stage}: the tmpfs it is built in "
            f"(at most {cap} MiB) is full; build it on disk with --tree disk, or allow "
            f"more with {treeram.CAP_ENV}=MiB\n{first}")


def explain(exc: BaseException, ctx: BuildContext, outdir: Path) -> tuple[BaseException, str]:
    """The error to raise for exc, and the stage it happened in."""
    work = ctx.work.root
    stage = getattr(diskspace.root_error(exc), "stage", None) or failed_stage(ctx.log)
    log_error = ctx.runner.log_error
    full = diskspace.is_disk_full(exc) or (
        log_error is not None and diskspace.is_disk_full(log_error)
    )
    if full:
        ctx.log.detach_file()
    error: BaseException = exc
    if isinstance(exc, Interrupted):
        exc.stage, exc.workdir = stage, str(work)
    elif full and ctx.tree_ram is not None and ctx.tree_ram.full:
        error = diskspace.DiskFullError(tree_ram_full_message(exc, ctx, stage))
    elif full:
        error = diskspace.DiskFullError(diskspace.full_disk_message(exc, stage, [work, outdir]))
    elif not isinstance(exc, DebliveError):
        first = diskspace.root_error(exc)
        if isinstance(first, DebliveError):
            error = first
    if isinstance(error, DebliveError):
        error = mirrorfault.explain(error, ctx.config)
    return error, stage


def report_failure(exc: BaseException, ctx: BuildContext, started: dt.datetime, outdir: Path,
                   remove_tree: bool) -> BaseException:
    """Log and record a failed or interrupted build; returns the exception to raise."""
    log, work = ctx.log, ctx.work.root
    error, stage = explain(exc, ctx, outdir)
    try:
        failed = report.build_report(ctx, started, [], "failed", error=str(error))
        report.write_report(failed, work / "report.json")
    except OSError as write_error:
        log.warn(f"could not write the failure report: {write_error}")
    what = "interrupted" if isinstance(exc, Interrupted) else "failed"
    fate = "will be removed" if remove_tree else f"is kept at {work}"
    log.error(f"build {what} in stage {stage}; the work tree {fate}")
    with contextlib.suppress(OSError, ValueError):
        log.close()
    if remove_tree:
        remove_failed_tree(work, error)
    return error
