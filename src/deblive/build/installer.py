"""debian-installer on the live medium: where its kernel and initrds come from.

The config's `installer.sources` names the sources in order of preference:

- mirror: the suite's installer images on the mirror
  (dists/<suite>/main/installer-<arch>/current/images/). Trust runs along a
  chain: InRelease is checked with gpgv against Debian's archive keyring, its
  SHA256 list covers images/SHA256SUMS, and SHA256SUMS covers each kernel and
  initrd. A broken link anywhere rejects the source. (Not every mirror serves
  these directories; the error then says so and the next source is tried.)
- package: debian-installer-<version>-netboot-<arch> of the suite, fetched
  with apt in the chroot, so apt's own signature chain vouches for it. Its
  text/ and gtk/ trees hold the netboot kernel and initrds.
- directory: a local tree with text/linux, text/initrd.gz and (for the
  graphical installer) gtk/linux, gtk/initrd.gz.

All of them are *netboot* installers: d-i fetches its components and the
system it installs from the network mirror, not from the live squashfs. So
the installed system inherits neither the live user nor the locked root; d-i
asks for root and a user (or reads the answers from the preseed) as it does
on any netboot install (and Debian #866206, d-i's user-setup tripping over a
live image's locked root, cannot happen).

A preseed file is put on the medium as /preseed.cfg for people to read, and
as <installer dir>/preseed.cpio.gz, a one-file initramfs the boot menus load
after the installer's initrd: the kernel unpacks both into one root, and d-i
reads /preseed.cfg from its initrd without any boot parameter. (A netboot
d-i never mounts the CD, so preseed/file=/cdrom/... would not find it.)
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from debian import deb822

from deblive.apt import plan
from deblive.apt.keyring import DEBIAN_ARCHIVE_KEYRING, SignatureError, verify_clearsigned
from deblive.build.chroot import Chroot, download_packages
from deblive.core import http
from deblive.core.errors import DebliveError
from deblive.core.files import sha256_bytes
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.host import deletion
from deblive.host.imagetree import ImageTree
from deblive.model import bootmenu
from deblive.model.arch import Arch
from deblive.model.config import ImageConfig

# Paths inside the images/ tree of the mirror (as SHA256SUMS lists them).
MIRROR_FILES: Final = {
    "text": ("netboot/debian-installer/{arch}/linux", "netboot/debian-installer/{arch}/initrd.gz"),
    "gtk": (
        "netboot/gtk/debian-installer/{arch}/linux",
        "netboot/gtk/debian-installer/{arch}/initrd.gz",
    ),
}


class InstallerError(DebliveError):
    """No source gave a trustworthy installer kernel and initrd."""


@dataclass(frozen=True)
class InstallerImages:
    """One netboot installer: the text kernel and initrd, and the gtk pair if wanted."""

    origin: str
    text_kernel: Path
    text_initrd: Path
    gtk_kernel: Path | None = None
    gtk_initrd: Path | None = None


# -- the mirror: InRelease -> Release SHA256 -> SHA256SUMS -> files ---------------


def fetch(url: str) -> bytes:
    """GET url; InstallerError naming the URL on any failure."""
    try:
        return http.get(url, timeout=60, retries=1)
    except (http.HttpStatusError, http.UnreachableError) as exc:
        raise InstallerError(str(exc)) from None


def release_sha256(release_text: str) -> dict[str, tuple[str, int]]:
    """Path (relative to dists/<suite>/) -> (sha256, size) from the Release's SHA256 list."""
    release = deb822.Release(release_text)
    return {e["name"]: (e["sha256"], int(e["size"])) for e in release.get("SHA256", [])}


def parse_sha256sums(text: str) -> dict[str, str]:
    """'digest  ./path' lines -> {path: digest} (paths without the leading ./)."""
    sums = {}
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            sums[parts[1].strip().removeprefix("./")] = parts[0].lower()
    return sums


def check_digest(what: str, data: bytes, expected: str | None) -> None:
    if expected is None:
        raise InstallerError(f"{what}: not listed in its checksum file")
    actual = sha256_bytes(data)
    if actual != expected:
        raise InstallerError(f"{what}: sha256 {actual} does not match the listed {expected}")


def from_mirror(
    runner: Runner, mirror: str, codename: str, arch: Arch, dest: Path, *, graphical: bool,
    keyring: Path = DEBIAN_ARCHIVE_KEYRING, get: Callable[[str], bytes] = fetch,
) -> InstallerImages:
    """Download the netboot kernel and initrds, each checked along the signed chain."""
    dists = f"{mirror.rstrip('/')}/dists/{codename}"
    try:
        release = release_sha256(verify_clearsigned(runner, get(f"{dists}/InRelease"), keyring))
    except SignatureError as exc:
        raise InstallerError(str(exc)) from None
    sums_rel = f"main/installer-{arch}/current/images/SHA256SUMS"
    if sums_rel not in release:
        raise InstallerError(
            f"{dists}/Release does not list {sums_rel}: the mirror carries no installer "
            f"images for {codename}/{arch}"
        )
    sums_data = get(f"{dists}/{sums_rel}")
    check_digest(sums_rel, sums_data, release[sums_rel][0])
    sums = parse_sha256sums(sums_data.decode("utf-8", errors="replace"))
    images = f"{dists}/main/installer-{arch}/current/images"
    got: dict[str, Path] = {}
    for flavour in ("text", "gtk") if graphical else ("text",):
        for template in MIRROR_FILES[flavour]:
            rel = template.format(arch=arch)
            try:
                data = get(f"{images}/{rel}")
            except InstallerError as exc:
                raise InstallerError(f"the mirror does not serve the installer images: {exc}") \
                    from None
            check_digest(rel, data, sums.get(rel))
            target = dest / flavour / Path(rel).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            got[f"{flavour}/{Path(rel).name}"] = target
    return InstallerImages(
        origin=f"mirror {images}",
        text_kernel=got["text/linux"], text_initrd=got["text/initrd.gz"],
        gtk_kernel=got.get("gtk/linux"), gtk_initrd=got.get("gtk/initrd.gz"),
    )


# -- a directory, or the netboot package unpacked -----------------------------------


def from_directory(tree: Path, origin: str, *, graphical: bool) -> InstallerImages:
    """text/linux, text/initrd.gz, gtk/linux, gtk/initrd.gz below a directory the
    config names (the config's author vouches for it)."""
    def need(rel: str) -> Path:
        path = tree / rel
        if not path.is_file():
            raise InstallerError(f"{origin}: {rel} missing (looked in {tree})")
        return path

    return InstallerImages(
        origin=origin,
        text_kernel=need("text/linux"), text_initrd=need("text/initrd.gz"),
        gtk_kernel=need("gtk/linux") if graphical else None,
        gtk_initrd=need("gtk/initrd.gz") if graphical else None,
    )


def from_unpacked(unpacked: Path, arch: Arch, dest: Path, origin: str, *,
                  graphical: bool) -> InstallerImages:
    """The images of an unpacked netboot package, copied out into dest's layout.

    The package lays them out as usr/lib/debian-installer/images/<version>/
    <arch>/{text,gtk}/debian-installer/<arch>/{linux,initrd.gz}; they are read
    through an ImageTree, so a symlink in the package cannot point elsewhere.
    """
    images_dir = "/usr/lib/debian-installer/images"
    with ImageTree(unpacked) as tree:
        versions = [v for v in tree.listdir(images_dir) if tree.is_dir(f"{images_dir}/{v}/{arch}")]
        if not versions:
            raise InstallerError(f"no {images_dir}/*/{arch} in the package")
        base = f"{images_dir}/{versions[-1]}/{arch}"
        for flavour in ("text", "gtk"):
            for name in ("linux", "initrd.gz"):
                inside = f"{base}/{flavour}/debian-installer/{arch}/{name}"
                if tree.is_file(inside):
                    (dest / flavour).mkdir(parents=True, exist_ok=True)
                    tree.copy_out(inside, dest / flavour / name)
    return from_directory(dest, origin, graphical=graphical)


def from_package(config: ImageConfig, chroot: Chroot, dest: Path) -> InstallerImages:
    """apt-get download of the suite's netboot package in the chroot, unpacked on the host."""
    arch = config.architecture
    names = chroot.run(["apt-cache", "pkgnames", "debian-installer-"], capture=True,
                       quiet=True, what="listing the installer packages").output.split()
    name = plan.netboot_package(names, str(arch))
    if name is None:
        raise InstallerError(
            f"no debian-installer-<version>-netboot-{arch} package in {config.codename}")
    debs = download_packages(chroot, [name], dest / "debs", f"downloading {name}")
    if not debs:
        raise InstallerError(f"apt-get download {name} left no .deb")
    unpacked = dest / "unpacked"
    unpacked.mkdir(parents=True)
    chroot.runner.run(["dpkg-deb", "-x", debs[-1], unpacked], what=f"unpacking {debs[-1].name}")
    assert config.installer is not None
    return from_unpacked(unpacked, arch, dest / "images", f"package {debs[-1].name}",
                         graphical=config.installer.graphical)


def obtain(config: ImageConfig, chroot: Chroot, log: BuildLog, dest: Path) -> InstallerImages:
    """Try the config's sources in order; InstallerError with every source's reason."""
    assert config.installer is not None and config.mirror is not None
    graphical = config.installer.graphical
    deletion.remove_tree(dest)
    dest.mkdir(parents=True)
    reasons = []
    for source in config.installer.sources:
        try:
            if source == "mirror":
                images = from_mirror(chroot.runner, config.mirror, config.codename,
                                     config.architecture, dest / "mirror", graphical=graphical)
            elif source == "package":
                images = from_package(config, chroot, dest / "package")
            else:
                directory = config.installer_directory
                assert directory is not None
                images = from_directory(directory, f"directory {directory}", graphical=graphical)
        except InstallerError as exc:
            log.warn(f"installer source {source}: {exc}")
            reasons.append(f"{source}: {exc}")
            continue
        log.info(f"installer images from {images.origin}")
        return images
    raise InstallerError("no installer source worked:\n  " + "\n  ".join(reasons))


# -- onto the medium ---------------------------------------------------------------


def preseed_cpio(preseed: bytes, epoch: int = 0) -> bytes:
    """A gzip'd newc cpio holding /preseed.cfg only: an initramfs to load after d-i's.

    Written here rather than by cpio(1) so the bytes are the same on every
    build (fixed mtime, inode numbers and owner).
    """
    def header(name: str, mode: int, size: int, ino: int) -> bytes:
        fields = [ino, mode, 0, 0, 1, epoch, size, 0, 0, 0, 0, len(name) + 1, 0]
        head = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
        return _pad(head + name.encode() + b"\0")

    body = header("preseed.cfg", 0o100644, len(preseed), 1) + _pad(preseed)
    body += header("TRAILER!!!", 0, 0, 0)
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=epoch) as gz:
        gz.write(body)
    return out.getvalue()


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def place_on_medium(medium: Path, config: ImageConfig, images: InstallerImages,
                    epoch: int) -> list[str]:
    """Copy kernel and initrds to the installer directory (and the preseed); medium paths."""
    top = medium / bootmenu.installer_dir(config.architecture).lstrip("/")
    placed: list[tuple[Path, Path]] = [
        (images.text_kernel, top / "vmlinuz"), (images.text_initrd, top / "initrd.gz"),
    ]
    if images.gtk_kernel is not None and images.gtk_initrd is not None:
        placed += [(images.gtk_kernel, top / "gtk" / "vmlinuz"),
                   (images.gtk_initrd, top / "gtk" / "initrd.gz")]
    elif config.installer is not None and config.installer.graphical:
        raise InstallerError("the graphical installer is wanted but no gtk images were found")
    for src, dest in placed:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        os.chmod(dest, 0o644)
    preseed = config.preseed_path
    if preseed is not None:
        data = preseed.read_bytes()
        (medium / bootmenu.PRESEED_NAME).write_bytes(data)
        (top / bootmenu.PRESEED_INITRD).write_bytes(preseed_cpio(data, epoch))
    return sorted("/" + p.relative_to(medium).as_posix()
                  for p in medium.rglob("*") if p.is_file() and
                  (p.is_relative_to(top) or p.name == bootmenu.PRESEED_NAME))
