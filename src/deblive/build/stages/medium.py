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
import hashlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from debian.debian_support import Version

from deblive.build.context import BuildContext
from deblive.core.runner import DebliveError
from deblive.model import bootmenu, suites

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
    vmlinuz: Path
    initrd: Path


def find_kernels(boot: Path) -> list[Kernel]:
    """Kernels with their initrds in a /boot, oldest first (Debian version order)."""
    kernels = []
    for vmlinuz in boot.glob("vmlinuz-*"):
        version = vmlinuz.name.removeprefix("vmlinuz-")
        initrd = boot / f"initrd.img-{version}"
        if not initrd.is_file():
            raise MediumError(
                f"{vmlinuz} has no initrd ({initrd.name} missing): "
                "is initramfs-tools (and live-boot) installed in the image?"
            )
        kernels.append(Kernel(version, vmlinuz, initrd))
    if not kernels:
        raise MediumError(f"no kernel (vmlinuz-*) in {boot}: is a linux-image package installed?")
    return sorted(kernels, key=lambda k: Version(k.version))


def place(src: Path, dest: Path, *, link: bool) -> None:
    """Put src at dest: a hard link if link and one filesystem holds both, else a copy.

    Files of the root filesystem are copied (link=False) so that giving them
    mode 0644 on the medium cannot change the tree the squashfs was made from.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    if link:
        try:
            os.link(src, dest)
            return
        except OSError:
            pass
    shutil.copyfile(src, dest)
    os.chmod(dest, 0o644)


def release_text(ctx: BuildContext) -> str:
    """'12.15 "Bookworm"' from the image's /etc/debian_version, else the release table."""
    codename = ctx.config.codename
    version = ""
    with contextlib.suppress(OSError):
        version = (ctx.rootfs / "etc/debian_version").read_text(encoding="utf-8").strip()
    if not re.match(r"^\d+(\.\d+)*$", version):
        known = {r.codename: r.version for r in suites.load_releases()}
        version = known.get(codename, "") or codename
    return f'{version} "{codename.capitalize()}"'


def disk_info(ctx: BuildContext) -> str:
    """The /.disk/info line, in debian-cd's shape, dated by SOURCE_DATE_EPOCH."""
    stamp = time.strftime("%Y%m%d-%H:%M", time.gmtime(ctx.source_date_epoch))
    cfg = ctx.config
    return (
        f"Debian GNU/Linux {release_text(ctx)} - Unofficial {cfg.architecture} "
        f"deblive {cfg.name} {stamp}"
    )


def lay_out_medium(ctx: BuildContext, squashfs: Path, packages_list: Path) -> None:
    """Create WorkTree.medium afresh with /live and /.disk (boot loaders come next)."""
    medium = ctx.work.medium
    if medium.exists():
        shutil.rmtree(medium)
    live = medium / "live"
    live.mkdir(parents=True)
    kernels = find_kernels(ctx.rootfs / "boot")
    for kernel in kernels:
        place(kernel.vmlinuz, live / kernel.vmlinuz.name, link=False)
        place(kernel.initrd, live / kernel.initrd.name, link=False)
    newest = kernels[-1]
    # Hard links within the medium: xorriso -hardlinks on stores the data once.
    place(live / newest.vmlinuz.name, medium / bootmenu.KERNEL_PATH.lstrip("/"), link=True)
    place(live / newest.initrd.name, medium / bootmenu.INITRD_PATH.lstrip("/"), link=True)
    place(squashfs, live / "filesystem.squashfs", link=True)
    place(packages_list, live / "filesystem.packages", link=False)

    disk = medium / ".disk"
    (disk / "id").mkdir(parents=True)
    (disk / "info").write_text(disk_info(ctx), encoding="utf-8")  # no newline, as debian-cd
    (disk / "id" / ctx.build_id).write_text(ctx.build_id + "\n", encoding="utf-8")
    ctx.facts["kernel"] = newest.version
    ctx.facts["kernels"] = [k.version for k in kernels]
    ctx.log.info(f"medium tree laid out: kernel {newest.version}, marker .disk/id/{ctx.build_id}")
    if ctx.config.installer is not None:
        place_installer(ctx, medium)


def place_installer(ctx: BuildContext, medium: Path) -> None:
    """d-i's kernel and initrds (kept by the packages stage) and the preseed onto the medium."""
    from deblive.build import installer

    config = ctx.config
    assert config.installer is not None
    images = installer.chosen(ctx.work.root, config.installer.graphical)
    files = installer.place_on_medium(medium, config, images, ctx.source_date_epoch)
    ctx.facts["installer_files"] = files
    ctx.log.info(f"installer on the medium ({images.origin}): {', '.join(files)}")


def medium_files(medium: Path) -> Iterator[str]:
    """Relative paths of all regular files, sorted, so checksums are reproducible."""
    for dirpath, dirnames, filenames in os.walk(medium):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(medium).as_posix()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
