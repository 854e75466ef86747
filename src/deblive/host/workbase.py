"""`deblive clean`: remove work trees that a dead build left behind.

A build that lost power (or was SIGKILLed) keeps its work tree, and nothing
else removes it. Cleaning uses the same rules as a build: a tree is removed
only if it is deblive's (its marker or build.log is there), no running build
holds its lock (the holder's PID is named), nothing is mounted below it, and
deletion never crosses into another file system.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from deblive.core.runner import DebliveError
from deblive.host import sandbox

MARKER = ".deblive-work"


class CleanError(DebliveError):
    exit_code = 2


@dataclass
class Outcome:
    path: Path
    removed: bool
    reason: str


def is_work_tree(path: Path) -> bool:
    """deblive's own trees carry a marker; older ones at least a build log or rootfs."""
    return path.is_dir() and (
        (path / MARKER).is_file() or (path / "build.log").is_file()
        or ((path / "rootfs").is_dir() and (path / "output").is_dir())
    )


def clean_one(path: Path) -> Outcome:
    """Remove one work tree if it is safe; never raises for a busy or mounted tree."""
    from deblive.build.pipeline import BusyError, workdir_lock

    if not path.exists():
        return Outcome(path, False, "does not exist")
    if not is_work_tree(path):
        return Outcome(path, False, f"not a deblive work tree (no {MARKER} or build.log)")
    try:
        with workdir_lock(path):
            mounted = sandbox.mounts_under(path)
            if mounted:
                return Outcome(
                    path, False,
                    "still mounted below it: " + ", ".join(map(str, mounted)),
                )
            sandbox.safe_rmtree(path)
    except BusyError as exc:
        return Outcome(path, False, str(exc))
    except sandbox.SandboxError as exc:
        return Outcome(path, False, str(exc))
    return Outcome(path, True, "removed")


def candidates(base: Path) -> list[Path]:
    """Work trees directly below the default work base."""
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and is_work_tree(p))


def clean(workdir: Path | None, base: Path) -> list[Outcome]:
    """Clean one named work tree (refusing loudly) or every idle one under base."""
    if workdir is not None:
        path = Path(os.path.abspath(workdir))
        outcome = clean_one(path)
        if not outcome.removed:
            raise CleanError(f"{path}: {outcome.reason}")
        return [outcome]
    return [clean_one(path) for path in candidates(base)]
