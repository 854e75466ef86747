"""Where builds work: the work base, one lock per work tree, safe removal, `deblive clean`.

/var/tmp is world-writable, so another local user could create the work base
(/var/tmp/deblive, DEBLIVE_WORKDIR) before deblive does and fill it with
symlinks where deblive expects its lock and work tree. So:

* the work base is made root-owned and 0700, and an existing one that is not
  owned by this user or is writable by group or others is refused (exit 2);
* a work tree is made 0700; one that is a symlink is refused;
* locks are opened without following symlinks (core.files);
* removal walks with directory descriptors, never follows a symlink and never
  crosses a mount (host.deletion), after the mount table shows nothing
  mounted below the tree;
* `deblive clean` removes only trees with deblive's marker file AND a build
  log written by deblive, never on the word of a marker alone, never through
  a symlink, and never a tree whose lock a running build holds.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deblive.core.errors import BadInputError, DebliveError
from deblive.core.files import LockBusy, exclusive_lock
from deblive.host import deletion, sandbox

DEFAULT_WORK_BASE = Path(os.environ.get("DEBLIVE_WORKDIR", "/var/tmp/deblive"))
MARKER = ".deblive-work"
LOG_NAMES = ("build.log", "builder.log")  # a build's, a builder VM run's


class WorkBaseError(BadInputError):
    """The work base or a work tree is not safe to use."""


class BusyError(BadInputError):
    """Another deblive build holds the work tree."""


def _check_private_dir(path: Path, what: str) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise WorkBaseError(f"{what} {path} is a symlink; refusing to use it")
    if not stat.S_ISDIR(st.st_mode):
        raise WorkBaseError(f"{what} {path} is not a directory")
    if st.st_uid != os.geteuid():
        raise WorkBaseError(
            f"{what} {path} is owned by uid {st.st_uid}, not by this user: another user may "
            "have made it; remove it or choose another with DEBLIVE_WORKDIR or --workdir"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise WorkBaseError(
            f"{what} {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            "make it 0700 or choose another"
        )


def ensure_private_dir(path: Path, what: str = "work base") -> Path:
    """Make path (0700) if missing, else check that it is ours and nobody else can write it."""
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    _check_private_dir(path, what)
    return path


def lock_path(workdir: Path) -> Path:
    return workdir.parent / f".{workdir.name}.lock"


@contextlib.contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """One build per work tree: a second one is refused, naming the holder."""
    if workdir.parent == DEFAULT_WORK_BASE:
        ensure_private_dir(workdir.parent, "work base")
    workdir.parent.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive_lock(lock_path(workdir), record_pid=True):
            yield
    except LockBusy as exc:
        raise BusyError(
            f"work directory {workdir} is in use by another deblive build (PID {exc.holder})"
        ) from None


def make_work_tree(workdir: Path) -> None:
    """A fresh, private work tree (what was there before is removed safely)."""
    if os.path.lexists(workdir):
        if os.path.islink(workdir):
            raise WorkBaseError(f"work directory {workdir} is a symlink; refusing to use it")
        remove(workdir)
    os.mkdir(workdir, 0o700)
    os.chmod(workdir, 0o700)  # whatever the umask
    (workdir / MARKER).write_text(f"{os.getpid()}\n")


def remove(path: Path) -> None:
    """Delete a work tree: nothing may be mounted below it, nothing is followed."""
    mounted = sandbox.mounts_under(path)
    if mounted:
        raise deletion.DeletionError(
            f"refusing to delete {path}: still mounted below it: " + ", ".join(map(str, mounted))
        )
    deletion.remove_tree(path)


@dataclass
class Outcome:
    path: Path
    removed: bool
    reason: str


class CleanError(BadInputError):
    pass


def is_work_tree(path: Path) -> bool:
    """deblive's own trees: a real directory with deblive's marker and a deblive build log."""
    if path.is_symlink() or not path.is_dir():
        return False
    marker = path / MARKER
    if marker.is_symlink() or not marker.is_file():
        return False
    for name in LOG_NAMES:
        log = path / name
        if log.is_symlink() or not log.is_file():
            continue
        try:
            with log.open(encoding="utf-8", errors="replace") as f:
                if " [main] " in f.read(4096):  # deblive's log line format
                    return True
        except OSError:
            continue
    return False


def clean_one(path: Path) -> Outcome:
    """Remove one work tree if it is safe; never raises for a busy or mounted tree."""
    if not os.path.lexists(path):
        return Outcome(path, False, "does not exist")
    if path.is_symlink():
        return Outcome(path, False, "is a symlink: not following it")
    if not is_work_tree(path):
        return Outcome(path, False, f"not a deblive work tree (no {MARKER} and deblive log)")
    try:
        with workdir_lock(path):
            remove(path)
    except BusyError as exc:
        return Outcome(path, False, str(exc))
    except DebliveError as exc:
        return Outcome(path, False, str(exc))
    return Outcome(path, True, "removed")


def candidates(base: Path) -> list[Path]:
    """Work trees directly below the work base."""
    if base.is_symlink() or not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if is_work_tree(p))


def clean(workdir: Path | None, base: Path) -> list[Outcome]:
    """Clean one named work tree (refusing loudly) or every idle one under base."""
    if workdir is not None:
        path = Path(os.path.abspath(workdir))
        outcome = clean_one(path)
        if not outcome.removed:
            raise CleanError(f"{path}: {outcome.reason}")
        return [outcome]
    if base.exists():
        _check_private_dir(base, "work base")
    return [clean_one(path) for path in candidates(base)]
