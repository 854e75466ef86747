"""Step 9: lay out the medium's file tree the way live-boot and installers expect.

/live holds every kernel and initrd under its versioned name plus the newest
pair under the fixed names the boot menus use (hard links, not symlinks:
ISOLINUX reads plain ISO 9660 and would not follow a Rock Ridge symlink), the
squashfs and its package list. /.disk/info names the image, /.disk/id/<uuid>
is the per-build marker the EFI grub searches for (Debian #1024346: searching
/.disk/info finds the wrong disc when two Debian media are attached).

sha256sum.txt is written by write_checksums() as the very last change to the
tree, just before the ISO is made: later steps (boot loaders, /.disk/mkisofs)
still add files.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from debian.debian_support import Version

from deblive.build import installer
from deblive.build.context import BuildContext
from deblive.build.kernels import kernel_images
from deblive.build.stage import Stage
from deblive.build.stages.squash import FLAT, MODULE
from deblive.core.errors import DebliveError
from deblive.core.files import sha256_file
from deblive.host import deletion, diskspace, distroinfo
from deblive.host.imagetree import ImageTree, TreeError
from deblive.model import bootmenu

CHECKSUM_FILE = "sha256sum.txt"
# Files whose bytes in the ISO differ from the tree: xorriso writes a boot
# info table into isolinux.bin. The boot catalog is made by xorriso itself.
CHECKSUM_EXCLUDES = frozenset(
    {CHECKSUM_FILE, "isolinux/isolinux.bin", "isolinux/boot.cat", "boot/boot.cat"}
)


class MediumError(DebliveError):
    """The root filesystem lacks what the medium needs (a kernel, an initrd)."""


@dataclass(frozen=True)
class Kernel:
    version: str  # 6.1.0-50-amd64
    vmlinuz: str  # its path in the image
    initrd: str


def find_kernels(tree: ImageTree) -> list[Kernel]:
    """Kernels with their initrds in the image's /boot, oldest first (Debian version order)."""
    kernels = []
    for version, vmlinuz in kernel_images(tree).items():
        initrd = f"/boot/initrd.img-{version}"
        if not tree.is_file(initrd):
            raise MediumError(
                f"{vmlinuz} has no initrd (initrd.img-{version} missing): "
                "is initramfs-tools (and live-boot) installed in the image?"
            )
        kernels.append(Kernel(version, vmlinuz, initrd))
    if not kernels:
        raise MediumError("no kernel (vmlinuz-* or vmlinux-*) in the image's /boot: is a "
                          "linux-image package installed?")
    return sorted(kernels, key=lambda k: Version(k.version))


def place(src: Path, dest: Path, *, link: bool) -> None:
    """Put a file of deblive's own at dest: a hard link if link and one filesystem
    holds both, else a copy (mode 0644)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    if link:
        with contextlib.suppress(OSError):
            os.link(src, dest)
            return
    shutil.copyfile(src, dest)
    os.chmod(dest, 0o644)


def release_text(ctx: BuildContext) -> str:
    """'12.15 "Bookworm"' from the image's /etc/debian_version, else the release table."""
    codename = ctx.config.codename
    version = ""
    with contextlib.suppress(DebliveError):
        version = ctx.tree.read_text("/etc/debian_version").strip()
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        version = distroinfo.load().version_of(codename) or codename
    return f'{version} "{codename.capitalize()}"'


def disk_info(ctx: BuildContext) -> str:
    """The /.disk/info line, in debian-cd's shape, dated by SOURCE_DATE_EPOCH."""
    stamp = time.strftime("%Y%m%d-%H:%M", time.gmtime(ctx.source_date_epoch))
    cfg = ctx.config
    return (
        f"Debian GNU/Linux {release_text(ctx)} - Unofficial {cfg.architecture} "
        f"deblive {cfg.name} {stamp}"
    )


def lay_out_medium(ctx: BuildContext, squashfs: list[Path], packages_list: Path) -> None:
    """Create WorkTree.medium afresh with /live and /.disk (boot loaders come next)."""
    medium = ctx.work.medium
    deletion.remove_tree(medium)
    live = medium / "live"
    live.mkdir(parents=True)
    kernels = find_kernels(ctx.tree)
    for kernel in kernels:
        for inside in (kernel.vmlinuz, kernel.initrd):
            ctx.tree.copy_out(inside, live / inside.rsplit("/", 1)[1])
    newest = kernels[-1]
    # Hard links within the medium: xorriso stores the data once.
    # /live/vmlinuz whatever /boot calls it (riscv64's and ppc64el's are vmlinux-*).
    place(live / newest.vmlinuz.rsplit("/", 1)[1], medium / bootmenu.KERNEL_PATH.lstrip("/"),
          link=True)
    place(live / f"initrd.img-{newest.version}", medium / bootmenu.INITRD_PATH.lstrip("/"),
          link=True)
    for image in squashfs:
        place(image, live / image.name, link=True)
    place_devicetree(ctx, medium / bootmenu.DEVICETREE_PATH.lstrip("/"))
    place(packages_list, live / "filesystem.packages", link=False)

    disk = medium / ".disk"
    (disk / "id").mkdir(parents=True)
    (disk / "info").write_text(disk_info(ctx), encoding="utf-8")  # no newline, as debian-cd
    (disk / "id" / ctx.build_id).write_text(ctx.build_id + "\n", encoding="utf-8")
    ctx.facts.kernel = newest.version
    ctx.facts.kernels = [k.version for k in kernels]
    ctx.log.info(f"medium tree laid out: kernel {newest.version}, marker .disk/id/{ctx.build_id}")
    if ctx.config.installer is not None:
        place_installer(ctx, medium)


def place_devicetree(ctx: BuildContext, dest: Path) -> None:
    """The config's DTB under its fixed name: from beside the config, or out of the image
    (a regular file there, read the ImageTree way: no link leads out of the tree)."""
    wanted, host_file = ctx.config.devicetree, ctx.config.devicetree_file
    if wanted is None:
        return
    try:
        if host_file is not None:
            shutil.copyfile(host_file, dest)
        else:
            ctx.tree.copy_out(wanted, dest)
    except (OSError, TreeError) as exc:
        raise MediumError(f"{ctx.config.where}: devicetree: {wanted}: {exc}") from None
    ctx.log.info(f"devicetree {wanted} on the medium as {bootmenu.DEVICETREE_PATH}")


def place_installer(ctx: BuildContext, medium: Path) -> None:
    """d-i's kernel and initrds (obtained by the packages stage) and the preseed."""
    images = ctx.installer_images
    assert images is not None
    files = installer.place_on_medium(medium, ctx.config, images, ctx.source_date_epoch)
    ctx.facts.installer_files = files
    ctx.log.info(f"installer on the medium ({images.origin}): {', '.join(files)}")


def medium_files(medium: Path) -> Iterator[str]:
    """Relative paths of all regular files, sorted, so checksums are reproducible."""
    for dirpath, dirnames, filenames in os.walk(medium):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(medium).as_posix()


def write_checksums(medium: Path) -> Path:
    """sha256sum.txt over the tree, in `sha256sum -c` format with ./ paths (debian-cd's)."""
    lines = [
        f"{sha256_file(medium / rel)}  ./{rel}\n"
        for rel in sorted(medium_files(medium))
        if rel not in CHECKSUM_EXCLUDES
    ]
    out = medium / CHECKSUM_FILE
    out.write_text("".join(lines), encoding="utf-8")
    return out


def squashfs_images(ctx: BuildContext) -> list[Path]:
    """The image(s) for /live: the flat squashfs, or a layered build's base, its package
    layers, the top layer and the module file that tells live-boot to stack them in
    that order."""
    names = [*ctx.squashfs_stack, MODULE] if ctx.layered else [FLAT]
    return [ctx.work.output / name for name in names]


class Medium(Stage):
    name = "medium"

    def wanted(self, ctx: BuildContext) -> bool:
        return ctx.make_iso

    def check(self, ctx: BuildContext) -> None:
        # The squashfs is hard-linked into the medium; the ISO is about its size.
        images = squashfs_images(ctx)
        needed = sum(p.stat().st_size for p in images) + diskspace.ISO_EXTRA
        ctx.log.info(diskspace.require(ctx.work.root, needed, "the ISO", stage="iso"))

    def run(self, ctx: BuildContext) -> None:
        lay_out_medium(ctx, squashfs_images(ctx), ctx.work.output / "filesystem.packages")
