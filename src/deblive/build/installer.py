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
import hashlib
import io
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from debian import deb822

from deblive.apt import plan
from deblive.build.chroot import Chroot
from deblive.build.context import BuildContext
from deblive.core.runner import DebliveError
from deblive.model import bootmenu
from deblive.model.config import ImageConfig

KEYRING: Final = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
WORK_DIR: Final = "installer"  # below the work tree
CHOSEN: Final = "chosen"  # below WORK_DIR: the images the medium gets
DEBS_IN_CHROOT: Final = "var/tmp/deblive-installer-debs"
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


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(url: str, timeout: float = 60) -> bytes:
    """GET url (http, https or file); InstallerError naming the URL on any failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: bytes = response.read()
            return data
    except urllib.error.HTTPError as exc:
        raise InstallerError(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise InstallerError(f"{url}: {getattr(exc, 'reason', exc)}") from None


def verify_inrelease(signed: bytes, keyring: Path) -> str:
    """The Release text that gpgv found signed by a key in keyring (only that part)."""
    proc = subprocess.run(
        ["gpgv", "--keyring", str(keyring), "--output", "-", "-"],
        input=signed, capture_output=True,
    )
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise InstallerError(f"InRelease signature not valid with {keyring}: {detail[0]}")
    return proc.stdout.decode("utf-8", errors="replace")


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
    mirror: str, codename: str, arch: str, dest: Path, *, graphical: bool,
    keyring: Path = KEYRING, get: Callable[[str], bytes] = fetch,
) -> InstallerImages:
    """Download the netboot kernel and initrds, each checked along the signed chain."""
    dists = f"{mirror.rstrip('/')}/dists/{codename}"
    release = release_sha256(verify_inrelease(get(f"{dists}/InRelease"), keyring))
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


def from_tree(tree: Path, origin: str, *, graphical: bool) -> InstallerImages:
    """text/linux, text/initrd.gz, gtk/linux, gtk/initrd.gz below tree."""
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


def netboot_tree(unpacked: Path, arch: str) -> Path:
    """The text/ and gtk/ trees of an unpacked netboot package, per image tree layout:
    usr/lib/debian-installer/images/<version>/<arch>/{text,gtk}/debian-installer/<arch>/."""
    candidates = sorted(unpacked.glob(f"usr/lib/debian-installer/images/*/{arch}"))
    if not candidates:
        raise InstallerError(f"no usr/lib/debian-installer/images/*/{arch} in the package")
    base = candidates[-1]
    flat = unpacked / "flat"
    for flavour in ("text", "gtk"):
        src = base / flavour / "debian-installer" / arch
        if src.is_dir():
            (flat / flavour).mkdir(parents=True, exist_ok=True)
            for name in ("linux", "initrd.gz"):
                if (src / name).is_file():
                    os.replace(src / name, flat / flavour / name)
    return flat


def from_package(ctx: BuildContext, dest: Path, *, graphical: bool) -> InstallerImages:
    """apt-get download of the suite's netboot package in the chroot, unpacked on the host."""
    chroot = Chroot(ctx.rootfs, ctx.runner)
    names = chroot.run(["apt-cache", "pkgnames", "debian-installer-"], capture=True,
                       what="listing the installer packages").output.split()
    name = plan.netboot_package(names, ctx.config.architecture)
    if name is None:
        raise InstallerError(
            f"no debian-installer-<version>-netboot-{ctx.config.architecture} package in "
            f"{ctx.config.codename}"
        )
    inside = ctx.rootfs / DEBS_IN_CHROOT
    inside.mkdir(parents=True, exist_ok=True)
    os.chmod(inside, 0o777)  # apt downloads as the _apt user
    try:
        chroot.run(["sh", "-c", f'cd /{DEBS_IN_CHROOT} && exec apt-get -q download "$1"',
                    "sh", name], what=f"downloading {name}")
        debs = sorted(inside.glob(f"{name}_*.deb"))
        if not debs:
            raise InstallerError(f"apt-get download {name} left no .deb")
        unpacked = dest / "unpacked"
        if unpacked.exists():
            shutil.rmtree(unpacked)
        unpacked.mkdir(parents=True)
        ctx.runner.run(["dpkg-deb", "-x", debs[-1], unpacked], what=f"unpacking {debs[-1].name}")
    finally:
        shutil.rmtree(inside, ignore_errors=True)
    flat = netboot_tree(unpacked, ctx.config.architecture)
    images = from_tree(flat, f"package {debs[-1].name}", graphical=graphical)
    ctx.facts["installer_package"] = debs[-1].name
    return images


def obtain(ctx: BuildContext) -> InstallerImages:
    """Try the config's sources in order; InstallerError with every source's reason."""
    config = ctx.config
    assert config.installer is not None and config.mirror is not None
    graphical = config.installer.graphical
    dest = ctx.work.root / WORK_DIR
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    reasons = []
    for source in config.installer.sources:
        try:
            if source == "mirror":
                images = from_mirror(config.mirror, config.codename, config.architecture,
                                     dest / "mirror", graphical=graphical)
            elif source == "package":
                images = from_package(ctx, dest / "package", graphical=graphical)
            else:
                directory = config.installer_directory
                assert directory is not None
                images = from_tree(directory, f"directory {directory}", graphical=graphical)
        except InstallerError as exc:
            ctx.log.warn(f"installer source {source}: {exc}")
            reasons.append(f"{source}: {exc}")
            continue
        ctx.log.info(f"installer images from {images.origin}")
        ctx.facts["installer_origin"] = images.origin
        return keep(images, dest / CHOSEN)
    raise InstallerError("no installer source worked:\n  " + "\n  ".join(reasons))


def keep(images: InstallerImages, dest: Path) -> InstallerImages:
    """Copy the chosen images to dest in the directory layout, for the medium stage."""
    pairs = [("text/linux", images.text_kernel), ("text/initrd.gz", images.text_initrd),
             ("gtk/linux", images.gtk_kernel), ("gtk/initrd.gz", images.gtk_initrd)]
    for rel, src in pairs:
        if src is not None:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / rel)
    (dest / "ORIGIN").write_text(images.origin + "\n", encoding="utf-8")
    return from_tree(dest, images.origin, graphical=images.gtk_initrd is not None)


def chosen(work_root: Path, graphical: bool) -> InstallerImages:
    """The images obtain() kept in the work tree."""
    tree = work_root / WORK_DIR / CHOSEN
    origin_file = tree / "ORIGIN"
    origin = origin_file.read_text().strip() if origin_file.is_file() else str(tree)
    return from_tree(tree, origin, graphical=graphical)


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


def check_preseed(config: ImageConfig) -> None:
    """A preseed that is named must exist (checked before the build touches anything)."""
    path = config.preseed_path
    if path is not None and not path.is_file():
        raise InstallerError(f"installer.preseed: {path} does not exist")


def needed_files(arch: str, graphical: bool) -> Sequence[str]:
    """The medium paths the installer entries use (for tests and checks)."""
    top = bootmenu.installer_dir(arch)
    files = [f"{top}/vmlinuz", f"{top}/initrd.gz"]
    if graphical:
        files += [f"{top}/gtk/vmlinuz", f"{top}/gtk/initrd.gz"]
    return files
