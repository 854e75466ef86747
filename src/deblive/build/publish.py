"""The output directory: checked before a build, filled only by a complete one.

Results are written into the work tree's output/ and moved into the output
directory when the whole build has succeeded, each file appearing under its
name only when complete, report.json last: its presence marks a result. A
failed build publishes nothing, so nothing in the output directory looks
like a result it did not make.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from deblive.core import interrupt
from deblive.core.errors import BadInputError
from deblive.core.files import move_into_place, publish
from deblive.host import deletion, diskspace

RESULT_MARKER = "report.json"


class OutputExistsError(BadInputError):
    pass


def check_outdir(outdir: Path, force: bool) -> None:
    """The output directory can take a result: writable, and empty of one unless --force."""
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


def publish_results(files: list[Path], logs: Path, report: Path, outdir: Path) -> list[Path]:
    """Move files, the logs directory and (last) the report into outdir."""
    if not diskspace.same_filesystem(report, outdir):
        # Across file systems publishing copies: check before the first byte.
        needed = sum(f.stat().st_size for f in _files(files)) + diskspace.MARGIN
        diskspace.require(outdir, needed, "the results in the output directory", stage="publish")
    with interrupt.deferred():
        (outdir / RESULT_MARKER).unlink(missing_ok=True)  # a replaced result is no result
        published = publish([f for f in files if not _is_tree(f)], outdir)
        published += [publish_tree(tree, outdir / tree.name) for tree in files if _is_tree(tree)]
        if logs.is_dir():
            dest = outdir / "logs"
            deletion.remove_tree(dest)
            dest.mkdir()
            for log in sorted(logs.iterdir()):
                if log.is_file() and not log.is_symlink():
                    move_into_place(log, dest / log.name)
        # report.json last: its presence marks a complete result.
        published += publish([report], outdir)
    return published


def _is_tree(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _files(paths: list[Path]) -> list[Path]:
    return [f for p in paths for f in ([*p.rglob("*")] if _is_tree(p) else [p]) if f.is_file()]


def publish_tree(src: Path, dest: Path) -> Path:
    """A directory output (the netboot tree) into place whole: built beside dest when
    it has to be copied, then renamed; a previous one is renamed away, then removed."""
    if not diskspace.same_filesystem(src, dest.parent):
        partial = dest.with_name(f".{dest.name}.partial")
        deletion.remove_tree(partial)
        shutil.copytree(src, partial, symlinks=True)
        deletion.remove_tree(src)
        src = partial
    old = dest.with_name(f".{dest.name}.old")
    deletion.remove_tree(old)
    if os.path.lexists(dest):
        os.rename(dest, old)
    os.rename(src, dest)
    if _is_tree(old):
        deletion.remove_tree(old)
    else:
        old.unlink(missing_ok=True)  # a file or symlink that stood there: never followed
    return dest
