"""A layered build's initramfs, made again only when what it is made from changed.

The initramfs is the largest stage of a rebuild whose base came from the cache
(about 20 s of 25 s here). It is made from the kernel, its modules and
firmware, initramfs-tools' and live-boot's hooks and scripts, the binaries
and libraries those copy, and a few files of /etc; all of those are in the
base, except what the layer above it changes. So the initramfs of a base is
kept beside the cache entry with the list of the files it holds
(`lsinitramfs`), and a later build of the same base takes it when no entry of
its layer can reach it. An entry can, if it is:

* one of the files the kept initramfs holds (a changed binary or library), or one
  its scripts name and would copy if it were there (a program added by a package);
* below what initramfs-tools reads whole: its own hooks, scripts and
  configuration, the kernel's modules and firmware, /boot, udev's rules,
  live-boot's scripts (ALWAYS), and the directories of /etc in ETC_READ;
* a directory made anew (opaque), which hides the base's files below it, or
  anything but a directory where one of those files' directories was.

A hook that writes /etc/motd, a package that adds /usr/bin/hello and its
documentation: the kept initramfs. A changed /etc/initramfs-tools, a new
kernel module or firmware file, a replaced libc: a new one. The initramfs's
own outputs (/boot/initrd.img-*) do not count, so the digest taken before
making it equals the one taken after, when it is stored.

The layer is read through an ImageTree like any image tree: its content is
the hook's and the packages'.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from deblive.build.basecache import Entry
from deblive.build.chroot import Chroot
from deblive.core.files import write_atomic
from deblive.host import deletion
from deblive.host.imagetree import ImageTree

# What of /etc initramfs-tools, its hooks (udev, kmod, console-setup, cryptsetup,
# mdadm, lvm, live-boot) and the linker read.
ETC_READ = frozenset({
    "initramfs-tools", "modprobe.d", "modules", "modules-load.d", "udev", "default",
    "console-setup", "crypttab", "fstab", "live", "ld.so.conf", "ld.so.conf.d",
    "ld.so.cache", "mdadm", "lvm", "iscsi", "cryptsetup-initramfs", "kernel", "plymouth",
    "alternatives", "kbd", "keyboard", "X11",
})
# Trees initramfs-tools and its hooks read whole (both spellings: merged /usr or not).
_LIB_TREES = ("/lib/modules", "/lib/firmware", "/lib/udev", "/lib/modprobe.d",
              "/lib/modules-load.d", "/lib/klibc", "/lib/initramfs-tools", "/lib/live")
ALWAYS = (*_LIB_TREES, *(f"/usr{path}" for path in _LIB_TREES), "/usr/share/initramfs-tools",
          "/boot", "/usr/sbin/mkinitramfs", "/usr/sbin/update-initramfs")
OUTPUTS = "/boot/initrd.img-*"  # what making it writes: never one of its inputs
STATE = "/var/lib/initramfs-tools"
LISTING = "files.txt"
# The scripts that decide what goes into the initramfs: a file they name is copied
# when it is there (live-boot's hook takes /sbin/mount.cifs, /etc/hosts... if present),
# so it is an input whether or not the kept initramfs holds it.
HOOK_SCRIPTS = ("/usr/share/initramfs-tools/hooks", "/etc/initramfs-tools/hooks",
                "/usr/share/initramfs-tools/conf-hooks.d", "/etc/initramfs-tools/conf-hooks.d")
HOOK_FILES = ("/usr/share/initramfs-tools/hook-functions", "/usr/sbin/mkinitramfs")
# An absolute path written literally: not after a word, a variable or another path's part.
_LITERAL_PATH = re.compile(r"(?<![\w$}/.-])(/(?:etc|usr|lib|lib32|lib64|libx32|bin|sbin)"
                           r"(?:/[A-Za-z0-9_.+-]+)+)(?![A-Za-z0-9_.+*?\[$/-])")


def may_reach_initramfs(path: str, listed: frozenset[str] = frozenset()) -> bool:
    """Whether a file at this image path (/a/b) is an input of the initramfs
    whose files (as image paths) are listed."""
    if path in listed:
        return True
    if fnmatch.fnmatchcase(path, OUTPUTS):
        return False
    parts = path.strip("/").split("/")
    if parts[0] == "etc":
        return len(parts) > 1 and parts[1] in ETC_READ
    return any(path == tree or path.startswith(tree + "/") for tree in ALWAYS)


def _ancestors(paths: frozenset[str]) -> frozenset[str]:
    found: set[str] = set()
    for path in paths:
        parts = path.strip("/").split("/")
        found.update("/" + "/".join(parts[:n]) for n in range(1, len(parts)))
    return frozenset(found)


def _entry_line(layer: ImageTree, path: str, st: os.stat_result) -> str:
    kind = stat.S_IFMT(st.st_mode)
    head = f"{path} {kind:o} {stat.S_IMODE(st.st_mode):o} {st.st_uid}:{st.st_gid}"
    if stat.S_ISREG(st.st_mode):
        digest = hashlib.sha256()
        with layer.open_read(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return f"{head} {digest.hexdigest()}"
    if stat.S_ISLNK(st.st_mode):
        return f"{head} -> {layer.readlink(path)}"
    return f"{head} dev={st.st_rdev}"  # 0/0: a whiteout, a deletion from the base


def inputs_digest(layers: Sequence[ImageTree], listed: frozenset[str]) -> str:
    """sha256 over the layers' entries that may reach the initramfs (mtimes left out).

    layers: what stands over the base, the lowest first (cached package layers,
    then the build's upper directory); an entry of a higher layer replaces a
    lower one's at its path, and a directory it makes anew (opaque) or a file
    where a directory was hides everything of the lower layers below it.
    Directories count only when made anew: any change below the base copies its
    directories up, and that alone changes nothing of what is read.
    """
    ancestors = _ancestors(listed) | _ancestors(frozenset(ALWAYS)) | {"/etc"}

    def descend(path: str) -> bool:
        return path in ancestors or may_reach_initramfs(path, listed)

    lines: dict[str, str] = {}
    for index, layer in enumerate(layers):
        for path, st in layer.walk(descend=descend):
            is_dir = stat.S_ISDIR(st.st_mode)
            if index and (not is_dir or layer.is_opaque(path)):
                below = path + "/"
                for hidden in [p for p in lines if p.startswith(below)]:
                    del lines[hidden]
            if is_dir:
                if layer.is_opaque(path):
                    lines[path] = f"{path} opaque"
            elif path in ancestors or may_reach_initramfs(path, listed):
                lines[path] = _entry_line(layer, path, st)  # a file, link or whiteout
            else:
                lines.pop(path, None)
    digest = hashlib.sha256()
    for path in sorted(lines):
        digest.update(lines[path].encode("utf-8", errors="surrogateescape") + b"\n")
    return digest.hexdigest()


def _top_links(tree: ImageTree) -> dict[str, str]:
    """The image's top-level relative links (lib -> usr/lib where /usr is merged)."""
    links = {}
    for name in tree.listdir("/"):
        target = tree.readlink(f"/{name}")
        if target and not target.startswith("/") and ".." not in target.split("/"):
            links[name] = target.strip("/")
    return links


def _spelled(path: str, links: dict[str, str]) -> str | None:
    parts = path.strip().strip("/").split("/")
    if not parts[0] or parts[0] == ".":
        return None
    parts[0] = links.get(parts[0], parts[0])
    return "/" + "/".join(parts)


def named_paths(tree: ImageTree) -> frozenset[str]:
    """The absolute paths initramfs-tools' and the hooks' scripts name literally
    (as the tree stores them): the files they copy when present."""
    links = _top_links(tree)
    scripts = [path for directory in HOOK_SCRIPTS for path in tree.glob(directory, "*")]
    found = set()
    for script in (*scripts, *HOOK_FILES):
        if not tree.is_file(script):
            continue
        for match in _LITERAL_PATH.finditer(tree.read_text(script)):
            spelled = _spelled(match.group(1), links)
            if spelled is not None:
                found.add(spelled)
    return frozenset(found)


def contents(tree: ImageTree, chroot: Chroot, versions: list[str]) -> frozenset[str]:
    """Image paths of the files the made initramfs holds (lsinitramfs, in the image)
    and of those its scripts would copy if present, spelled as the tree stores them
    (lib/x -> usr/lib/x where /lib is a link)."""
    links = _top_links(tree)
    listed = set(named_paths(tree))
    for version in versions:
        output = chroot.run(["lsinitramfs", f"/boot/initrd.img-{version}"], capture=True,
                            quiet=True, what=f"listing the initramfs of {version}").output
        for line in output.splitlines():
            spelled = _spelled(line, links)
            if spelled is not None:
                listed.add(spelled)
    return frozenset(listed)


def _files(version: str) -> tuple[str, ...]:
    return (f"/boot/initrd.img-{version}", f"{STATE}/{version}")


def lookup(entry: Entry, layers: Sequence[ImageTree], versions: list[str]
           ) -> tuple[Path, str] | None:
    """A kept initramfs of every kernel that no entry of the layers over the base entry
    can reach, and the digest it was found under; None if there is none."""
    kept = entry.directory / "initramfs"
    for stored in sorted(kept.iterdir()) if kept.is_dir() else []:
        if stored.name.startswith(".") or not (stored / "complete").is_file():
            continue
        if not all((stored / f"initrd.img-{v}").is_file() for v in versions):
            continue
        try:
            listed = frozenset((stored / LISTING).read_text(encoding="utf-8").splitlines())
        except OSError:
            continue
        digest = inputs_digest(layers, listed)
        if digest == stored.name:
            return stored, digest
    return None


def restore(stored: Path, tree: ImageTree, versions: list[str]) -> None:
    """Put the stored initramfs (and update-initramfs's record of it) into the image."""
    for version in versions:
        initrd, record = _files(version)
        tree.copy_in(stored / f"initrd.img-{version}", initrd, 0o644)
        saved = stored / f"state-{version}"
        if saved.is_file():  # only what update-initramfs made: the layer stays the same
            tree.mkdir(STATE)
            tree.copy_in(saved, record, 0o644)


def store(entry: Entry, layers: Sequence[ImageTree], tree: ImageTree, versions: list[str],
          listed: frozenset[str]) -> str:
    """Keep what update-initramfs made beside the base entry, under the digest of the
    entries of the layers over it that can reach it; returns that digest."""
    digest = inputs_digest(layers, listed)
    final = entry.directory / "initramfs" / digest
    if final.exists():
        return digest
    staging = final.with_name(f".{digest}.{os.getpid()}.tmp")
    deletion.remove_tree(staging)
    staging.mkdir(parents=True, mode=0o700)
    try:
        for version in versions:
            initrd, record = _files(version)
            tree.copy_out(initrd, staging / f"initrd.img-{version}")
            if tree.is_file(record) and not tree.is_symlink(record):
                tree.copy_out(record, staging / f"state-{version}")
        write_atomic(staging / LISTING, "".join(f"{p}\n" for p in sorted(listed)))
        write_atomic(staging / "complete", " ".join(versions) + "\n")
        with contextlib.suppress(OSError):  # another build stored it first
            os.rename(staging, final)
    finally:
        deletion.remove_tree(staging)
    return digest
