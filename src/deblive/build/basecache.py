"""The base cache: the configured tree before the hook, squashed once, keyed on its inputs.

Everything the stages up to the live user make (bootstrap, packages, users)
depends only on inputs deblive knows before it starts: its own version, the
release and architecture, the build mirror's indexes and the package versions
the plan resolved from them, and the config's keys that shape the system. A
digest of all of them names a cache entry: the base tree as one squashfs,
compressed once. A layered build with a hit mounts that squashfs as the lower
layer of an overlay and runs only the stages after it (build.stages.base).

The key is made from named parts, so a miss can say which input changed
against the newest entry of the same image. Keys the base stages never read
(the hook, the boot menu, the installer, the squashfs options, the image's
apt mirror) are left out, so changing them is a hit; every other config key is
in, so a key added later is a miss until it is listed here, never a stale base.

An entry is a directory <key>/ with base.squashfs and meta.json, made under a
temporary name and renamed into place whole: a reader sees a complete entry or
none. A build holds a shared lock on the entry it uses, so `deblive cache
prune` never removes it under a running build.

An entry may stand on another: a build whose config adds packages to a cached
base installs them in an overlay over it and stores only that overlay's upper
directory, keyed on its own inputs, with the base as its parent
(build.stages.packagelayer). Its squashfs is a layer, whiteouts and opaque
directories included; the chain from the root base up is the entry's tree, and
a later build of the same config hits it without running apt at all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deblive import __version__
from deblive.core.errors import DebliveError
from deblive.core.files import open_lock_file, write_atomic
from deblive.host import deletion
from deblive.model.config import ImageConfig

FORMAT = 2  # 2: the base is cleaned before it is squashed (build.stages.base.BaseClean)
SQUASHFS = "base.squashfs"
META = "meta.json"
MAX_CHAIN = 4  # squashfs images in a chain (the base and package layers): /live stays small
# Config keys read only after the base point: changing them keeps the base.
AFTER_BASE_KEYS = frozenset({
    "hook", "overlay", "confine_paths", "boot", "volume_id", "installer", "apt_mirror",
})


def password_digest(password: str) -> str:
    """A slow digest of the live user's password: a changed password is a miss, and
    meta.json does not hand out a cheap way to test guesses."""
    return hashlib.scrypt(password.encode(), salt=b"deblive-base-cache", n=2**14, r=8,
                          p=1).hex()


@functools.cache
def code_digest() -> str:
    """sha256 of deblive's own files: a changed stage (an upgrade, a patch) is a miss,
    whether or not the version number moved."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class BaseInputs:
    """The named inputs of a base tree and the packages the plan resolved for it."""

    parts: tuple[tuple[str, str], ...]  # (input, digest), sorted
    packages: tuple[str, ...]  # name=version, sorted
    requested: tuple[str, ...] = ()  # the names the config asks apt for, sorted

    @property
    def key(self) -> str:
        return _digest([FORMAT, list(self.parts)])[:32]

    def as_dict(self) -> dict[str, str]:
        return dict(self.parts)

    def changed_from(self, parts: dict[str, str], packages: list[str]) -> list[str]:
        """What differs from an entry's inputs, in words, for the miss line."""
        mine = self.as_dict()
        changed = [name for name in sorted(set(mine) | set(parts))
                   if mine.get(name) != parts.get(name) and name != "packages"]
        if mine.get("packages") != parts.get("packages"):
            old, new = set(packages), set(self.packages)
            names_old = {p.split("=", 1)[0] for p in old - new}
            names_new = {p.split("=", 1)[0] for p in new - old}
            words = [f"+{n}" for n in sorted(names_new - names_old)]
            words += [f"-{n}" for n in sorted(names_old - names_new)]
            words += [f"~{n}" for n in sorted(names_old & names_new)]
            shown = " ".join(words[:8]) + (f" (+{len(words) - 8} more)" if len(words) > 8 else "")
            changed.append(f"packages {shown}".rstrip())
        return changed


# The parts a base with fewer packages may differ in and still carry this build
# (the extra packages go into a package layer, build.stages.packagelayer).
PACKAGE_PARTS = frozenset({"selection", "packages"})


def base_inputs(config: ImageConfig, packages: list[str], indexes: str,
                requested: tuple[str, ...] = (), local: str = "") -> BaseInputs:
    """The base's key parts: deblive, the release, the mirror's indexes, the resolved
    package versions and every config key the base stages read."""
    shaping = {key: value for key, value in config.public_dump().items()
               if key not in AFTER_BASE_KEYS}
    user = shaping.pop("user", {})
    # The base squashfs is compressed as configured; only the layout is not the base's.
    squashfs = {k: v for k, v in shaping.pop("squashfs", {}).items() if k != "layout"}
    bootstrap = shaping.pop("bootstrap", None)
    selection = [shaping.pop(key, None) for key in ("tasks", "packages", "kernel")]
    for key in ("mirror", "security_mirror"):
        shaping.pop(key, None)
    parts = {
        "deblive": f"{__version__} {code_digest()[:16]}",
        "release": f"{config.codename} {config.architecture}",
        "mirror": f"{config.mirror} {config.build_security_mirror}",
        "indexes": indexes,
        "packages": _digest(sorted(packages)),
        "selection": _digest(selection),
        "bootstrap": _digest(bootstrap),
        "squashfs": _digest(squashfs),
        "user": _digest([user, password_digest(config.user.password.get_secret_value())]),
        "system": _digest(shaping),
        "local": local,  # the local packages' content (a rebuilt .deb of the same version)
    }
    return BaseInputs(tuple(sorted(parts.items())), tuple(sorted(packages)),
                      tuple(sorted(set(requested))))


@dataclass(frozen=True)
class Entry:
    """One complete cache entry."""

    directory: Path
    meta: dict[str, Any] = field(hash=False, compare=False)

    @property
    def key(self) -> str:
        return self.directory.name

    @property
    def squashfs(self) -> Path:
        return self.directory / SQUASHFS

    @functools.cached_property
    def size(self) -> int:
        """Bytes on disk: the squashfs and the initramfs kept with it (measured once:
        prune still needs it after the entry is gone)."""
        total = 0
        for dirpath, _dirs, files in os.walk(self.directory):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_size
        return total

    @property
    def last_used(self) -> float:
        """When a build last used it (the entry directory's mtime, touched on each hit)."""
        return self.directory.stat().st_mtime

    @property
    def image(self) -> str:
        return str(self.meta.get("image", "?"))

    @property
    def parent(self) -> str | None:
        """The key of the entry this one's squashfs is a layer over; None for a base."""
        parent = self.meta.get("parent")
        return parent if isinstance(parent, str) and parent else None

    @property
    def facts(self) -> dict[str, Any]:
        facts = self.meta.get("facts", {})
        return facts if isinstance(facts, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return True


class CacheError(DebliveError):
    """The base cache could not be used."""


class KeyTakenError(CacheError):
    """Another build stored an entry of another kind under the key (a race)."""


class BaseCache:
    """The entries under <cache>/bases, with their locks beside them."""

    def __init__(self, cache: Path) -> None:
        self.root = cache / "bases"

    def _ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def entry(self, key: str) -> Entry | None:
        directory = self.root / key
        try:
            meta = json.loads((directory / META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if directory.is_symlink() or not (directory / SQUASHFS).is_file():
            return None
        return Entry(directory, meta if isinstance(meta, dict) else {})

    def entries(self) -> list[Entry]:
        if not self.root.is_dir():
            return []
        found = [self.entry(p.name) for p in self.root.iterdir()
                 if p.is_dir() and not p.name.startswith(".")]
        return sorted((e for e in found if e is not None), key=lambda e: e.last_used,
                      reverse=True)

    def chain(self, entry: Entry) -> list[Entry] | None:
        """The entries whose squashfs images make entry's tree, the root base first;
        None if one beneath it is gone (pruned) or the chain is longer than MAX_CHAIN."""
        chain = [entry]
        while chain[0].parent is not None:
            below = self.entry(chain[0].parent)
            if below is None or len(chain) >= MAX_CHAIN or below in chain:
                return None
            chain.insert(0, below)
        return chain

    def parent_for(self, inputs: BaseInputs) -> tuple[Entry, list[str]] | None:
        """An entry this build can start from with more packages: every input equal but
        the package selection, its packages (with versions) and requested names a subset
        of this build's. Returns it and the names to install on top, fewest first."""
        mine = inputs.as_dict()
        best: tuple[Entry, list[str]] | None = None
        for entry in self.entries():
            theirs = entry.meta.get("inputs", {})
            if not isinstance(theirs, dict) or entry.meta.get("format") != FORMAT:
                continue
            if any(mine.get(k) != theirs.get(k) for k in set(mine) | set(theirs)
                   if k not in PACKAGE_PARTS):
                continue
            packages = set(entry.meta.get("packages", []))
            requested = set(entry.meta.get("requested", []))
            if not requested or not packages <= set(inputs.packages) \
                    or not requested <= set(inputs.requested):
                continue
            extra = sorted(set(inputs.requested) - requested)
            chain = self.chain(entry)
            if chain is None or len(chain) >= MAX_CHAIN:  # no room for one more layer
                continue
            if extra and (best is None or len(extra) < len(best[1])):
                best = (entry, extra)
        return best

    def newest_for(self, image: str) -> Entry | None:
        mine = [e for e in self.entries() if e.image == image]
        return mine[0] if mine else None

    @contextlib.contextmanager
    def using(self, key: str) -> Iterator[None]:
        """A shared hold on an entry for a build's lifetime (prune skips held entries)."""
        self._ensure()
        fd = open_lock_file(self.root / f".{key}.lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def touch(self, entry: Entry) -> None:
        os.utime(entry.directory)

    def store(self, inputs: BaseInputs, squashfs: Path, image: str,
              facts: dict[str, Any], parent: Entry | None = None) -> Entry:
        """Move a verified squashfs in as the entry for inputs (a layer over parent's
        tree, if given). An entry of the same kind another build stored meanwhile
        wins (they are equal), and ours is dropped. One of the other kind (a whole
        base where ours is a layer, or a layer over another entry) is no stand-in
        for ours: then nothing is stored, squashfs is left where it was, and
        KeyTakenError says the build must use its own."""
        self._ensure()
        staging = self.root / f".{inputs.key}.{os.getpid()}.tmp"
        deletion.remove_tree(staging)
        staging.mkdir(mode=0o700)
        wanted_parent = parent.key if parent is not None else None
        try:
            os.replace(squashfs, staging / SQUASHFS)
            meta = {
                "format": FORMAT, "key": inputs.key, "image": image,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "inputs": inputs.as_dict(), "packages": list(inputs.packages),
                "requested": list(inputs.requested), "facts": facts,
            }
            if wanted_parent is not None:
                meta["parent"] = wanted_parent
            write_atomic(staging / META, json.dumps(meta, indent=2, sort_keys=True) + "\n")
            self._drop_if_stale(inputs.key)
            with contextlib.suppress(OSError):  # another build stored the same key first
                os.rename(staging, self.root / inputs.key)
            entry = self.entry(inputs.key)
            if entry is not None and entry.parent != wanted_parent:
                if (staging / SQUASHFS).exists():
                    os.replace(staging / SQUASHFS, squashfs)
                raise KeyTakenError(f"the base cache holds another kind of entry under "
                                    f"{inputs.key} now")
        finally:
            deletion.remove_tree(staging)
        if entry is None:
            raise CacheError(f"the base cache entry {self.root / inputs.key} was not stored")
        return entry

    def _drop_if_stale(self, key: str) -> None:
        """Move aside an entry under key that is no tree (a layer whose base was pruned),
        so the one being stored takes its place; no build can be using it."""
        old = self.entry(key)
        if old is None or self.chain(old) is not None:
            return
        doomed = self.root / f".{key}.{os.getpid()}.stale"
        with contextlib.suppress(OSError):  # another build moved it first
            os.rename(old.directory, doomed)
        deletion.remove_tree(doomed)

    def remove(self, entry: Entry) -> bool:
        """Remove an entry nobody uses; False when a build holds it."""
        fd = open_lock_file(self.root / f".{entry.key}.lock")
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            doomed = self.root / f".{entry.key}.{os.getpid()}.prune"
            os.rename(entry.directory, doomed)
            deletion.remove_tree(doomed)
            return True  # the lock file stays: a build may be waiting on it
        finally:
            os.close(fd)

    def leftovers(self) -> list[Path]:
        """What builds that were killed left: staging files and directories named
        .<key>.<pid>.<what> whose process is gone."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            parts = path.name.split(".")
            if len(parts) >= 4 and parts[0] == "" and parts[2].isdigit() \
                    and not _alive(int(parts[2])) and not path.name.endswith(".lock"):
                found.append(path)
        return sorted(found)

    def prune(self, max_bytes: int) -> list[Entry]:
        """Remove what killed builds left and layers whose base is gone, then the least
        recently used entries (each with the layers over it, which are no use
        without it) until the rest fit in max_bytes."""
        for path in self.leftovers():
            deletion.remove_tree(path)
        removed = [e for e in self.entries() if self.chain(e) is None and self.remove(e)]
        entries = self.entries()  # newest first
        chains = {e: self.chain(e) or [e] for e in entries}
        total = sum(e.size for e in entries)
        for entry in reversed(entries):
            if total <= max_bytes:
                break
            if entry in removed:
                continue
            # the layers over it, the longest chain first, then the entry itself
            group = sorted((e for e in entries if entry in chains[e] and e not in removed),
                           key=lambda e: len(chains[e]), reverse=True)
            for doomed in group:
                if not self.remove(doomed):
                    break  # held by a build (which holds what is beneath it too)
                total -= doomed.size
                removed.append(doomed)
        return removed
