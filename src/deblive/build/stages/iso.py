"""Step 11: the hybrid ISO, made with xorriso in its native mode.

Why native mode and not `xorriso -as mkisofs`: every setting is a named
xorriso command (-boot_image, -append_partition, -volume_date), documented
in xorriso(1) under that name, so the command recorded in /.disk/mkisofs reads
as what it does. The mkisofs emulation maps genisoimage's terse flags
(-isohybrid-mbr, -e, -eltorito-alt-boot...) onto those same commands and adds
nothing we need; the reproducibility knobs (-volume_date uuid and
all_file_dates, -iso_nowtime) are native commands anyway.

What one image carries, so one file boots four ways:
- BIOS, CD:   El Torito entry 1, ISOLINUX (isolinux.bin, 4 sectors loaded,
              boot info table patched in).
- BIOS, USB:  isohdpfx.bin as MBR (isohybrid), which chains to isolinux.bin.
- UEFI, CD:   El Torito entry 2, platform EFI, no emulation: /boot/grub/efi.img.
- UEFI, USB:  the same efi.img appended after the ISO as MBR partition 2 of
              type 0xEF (an EFI system partition), so firmware that ignores
              El Torito on disks finds /EFI/boot/bootx64.efi there. An appended
              partition does not overlap the ISO 9660 partition, unlike the
              gpt_basdat layout, which partitioning tools flag as broken.
The EFI CD and USB paths fail independently (grml #105), so both are tested.

Open Firmware (ppc64el) takes none of these: the ISO gets one MBR partition
of type 0x96 over all of it (xorriso's chrp_boot_part, which debian-cd's
ppc64el images use too), and SLOF reads /ppc/bootinfo.txt from its ISO 9660
tree, from a CD or the same file as a disk. There is no El Torito catalog,
no efi.img and nothing appended: chrp_boot_part tolerates no other MBR entry.

Commands run with the work directory as cwd and relative paths, so the
recorded command does not depend on where the build directory lives.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from pathlib import Path

from deblive.build.context import BuildContext
from deblive.build.stage import Stage
from deblive.build.stages import bootloaders, medium
from deblive.core.errors import DebliveError
from deblive.core.files import move_into_place
from deblive.core.runner import Runner
from deblive.host import diskspace

ISOLINUX_BIN = "/isolinux/isolinux.bin"
BOOT_CATALOG = "/isolinux/boot.cat"
BOOT_CATALOG_EFI_ONLY = "/boot/boot.cat"  # no /isolinux without BIOS boot
MKISOFS_RECORD = ".disk/mkisofs"
# What Open Firmware reads off a CHRP medium, checked in the written ISO.
CHRP_FILES = ("/" + bootloaders.BOOTINFO, "/" + bootloaders.CHRP_GRUB)


class IsoError(DebliveError):
    """The ISO could not be made or lacks a boot path."""


def volume_uuid(epoch: int) -> str:
    """xorriso's -volume_date uuid: YYYYMMDDhhmmsscc in UTC (grub's --fs-uuid form)."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(epoch)) + "00"


def xorriso_command(
    medium_dir: Path,
    output: Path,
    *,
    volume_id: str,
    epoch: int,
    efi_image: Path | None,
    isohdpfx: Path | None,
    appended: Sequence[tuple[int, str, Path]] = (),
) -> list[str]:
    """The xorriso command line for the hybrid ISO of medium_dir.

    efi_image is the FAT image inside medium_dir (its ISO path is derived);
    isohdpfx None means no BIOS boot (arm64): no ISOLINUX entry, no MBR code.
    efi_image None (and no isohdpfx) means Open Firmware: a CHRP ISO, nothing
    appended.
    """
    if efi_image is None and (isohdpfx is not None or appended):
        raise IsoError("a CHRP medium (no EFI image) has no BIOS boot and nothing appended")
    argv = [
        "xorriso",
        "-outdev", f"stdio:{output}",
        "-volid", volume_id,
        "-joliet", "on",
        "-rockridge", "on",
        # No "-hardlinks on": it records disk device/inode numbers (AAIP "isofs.di"),
        # which differ per build; libisofs stores the data of hard-linked
        # /live/vmlinuz and vmlinuz-<kver> once anyway.
        # Level 3 lets a squashfs exceed 4 GiB; Joliet long names for Windows readers.
        "-compliance", "iso_9660_level=3:joliet_long_names",
        "-map", str(medium_dir), "/",
        "-chown_r", "0", "/", "--",
        "-chgrp_r", "0", "/", "--",
    ]
    if efi_image is None:
        argv += ["-boot_image", "any", "chrp_boot_part=on"]
    elif isohdpfx is not None:
        argv += [
            "-boot_image", "isolinux", f"bin_path={ISOLINUX_BIN}",
            "-boot_image", "isolinux", f"cat_path={BOOT_CATALOG}",
            "-boot_image", "isolinux", "load_size=2048",
            "-boot_image", "isolinux", "boot_info_table=on",
            "-boot_image", "isolinux", f"system_area={isohdpfx}",
            "-boot_image", "isolinux", "partition_table=on",
            "-boot_image", "any", "next",
        ]
    else:
        argv += ["-boot_image", "any", f"cat_path={BOOT_CATALOG_EFI_ONLY}"]
    if efi_image is not None:
        argv += [
            "-boot_image", "any", f"efi_path=/{efi_image.relative_to(medium_dir).as_posix()}",
            "-boot_image", "any", "platform_id=0xef",
            "-boot_image", "any", "emul_type=no_emulation",
            "-append_partition", "2", "0xef", str(efi_image),
            # The disk image's further partitions (persistence), after the EFI one.
            *(arg for number, kind, path in appended
              for arg in ("-append_partition", str(number), kind, str(path))),
        ]
    argv += [
        # Reproducibility: fixed superblock dates, file dates and ids.
        "-iso_nowtime", f"={epoch}",
        "-volume_date", "uuid", volume_uuid(epoch),
        "-volume_date", "all_file_dates", f"={epoch}",
        # (GPT: the EFI layouts' only; chrp_boot_part makes GPT unrecognizable.)
        *(["-boot_image", "any", "gpt_disk_guid=volume_date_uuid"]
          if efi_image is not None else []),
        "-commit",
    ]
    return argv


def write_record(medium_dir: Path, argv: list[str]) -> None:
    """/.disk/mkisofs: the exact command that made the ISO, as debian-cd records it."""
    record = medium_dir / MKISOFS_RECORD
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(shlex.join(argv) + "\n", encoding="utf-8")


def boot_report(runner: Runner, iso: Path, files: Sequence[str] = ()) -> str:
    """xorriso's own view of the El Torito catalog and the system area (for the log),
    and the names of those of files (paths in the ISO) it finds there."""
    return runner.output(
        [
            "xorriso", "-indev", iso,
            "-report_el_torito", "plain",
            "-report_system_area", "plain",
            *(["-lsd", *files] if files else []),
        ],
        what="reading back the ISO's boot records",
    )


def check_boot_report(report: str, bios: bool, chrp: bool = False) -> None:
    """Fail loudly if a boot path is missing from what xorriso reads back; chrp: Open
    Firmware's (the 0x96 partition, bootinfo.txt and the grub it names, as the
    report's -lsd lists them) instead of EFI's."""
    lines = report.splitlines()
    needed = [("El Torito boot img", "UEFI"), ("MBR partition", "0xef")]
    if chrp:
        needed = [("System area summary", "CHRP"), ("MBR partition", "0x96"),
                  *((f"'{path}'", "") for path in CHRP_FILES)]
    if bios:
        needed.append(("El Torito boot img", "BIOS"))
        needed.append(("System area summary", "MBR"))
    for prefix, word in needed:
        if not any(line.startswith(prefix) and word in line for line in lines):
            what = f"no {prefix!r} line with {word!r}" if word else f"no {prefix} listed"
            raise IsoError(f"the ISO lacks a boot record: {what} in xorriso's report:\n"
                           + report)


def _relative(path: Path, base: Path) -> Path:
    """path relative to base when inside it (for a location-independent record)."""
    try:
        return path.relative_to(base)
    except ValueError:
        return path


def make_iso(ctx: BuildContext, output: Path,
             appended: Sequence[tuple[int, str, Path]] = ()) -> None:
    """Write the ISO of WorkTree.medium to output (whole or not at all); appended:
    more partitions after it (number, MBR type, image file), for the disk image."""
    work = ctx.work.root
    med = ctx.work.medium
    files = ctx.boot_files
    assert files is not None
    partial = ctx.work.output / (output.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)
    isohdpfx = files.bios.isohdpfx_bin if files.bios else None
    chrp = files.efi is None
    argv = xorriso_command(
        _relative(med, work),
        _relative(partial, work),
        volume_id=ctx.config.iso_volume_id,
        epoch=ctx.source_date_epoch,
        efi_image=None if chrp else _relative(med / bootloaders.EFI_IMAGE, work),
        isohdpfx=_relative(isohdpfx, work) if isohdpfx else None,
        appended=[(n, kind, _relative(path, work)) for n, kind, path in appended],
    )
    write_record(med, argv)
    medium.write_checksums(med)
    try:
        ctx.runner.run(
            argv,
            cwd=work,
            env={"SOURCE_DATE_EPOCH": str(ctx.source_date_epoch)},
            what="xorriso",
        )
        report = boot_report(ctx.runner, partial, CHRP_FILES if chrp else ())
        ctx.log.debug(report)
        check_boot_report(report, bios=files.bios is not None, chrp=chrp)
        move_into_place(partial, output)
    except BaseException as exc:
        # Whatever stopped it, a half-written ISO never stays behind: not under
        # its name (the move is atomic) and not as .partial, taking the space.
        partial.unlink(missing_ok=True)
        output.with_name(output.name + ".partial").unlink(missing_ok=True)
        if diskspace.is_disk_full(exc):
            raise diskspace.DiskFullError(
                f"disk full: xorriso ran out of space writing {partial} "
                f"({diskspace.free_bytes(partial.parent) / 2**20:.0f} MiB free now on "
                f"{diskspace.existing_ancestor(partial.parent)}); the partial ISO was removed; "
                f"the root filesystem and the squashfs are kept in {work}\n"
                f"{diskspace.root_error(exc)}"
            ) from None
        raise
    size = output.stat().st_size
    if not appended:
        ctx.facts.iso_bytes = size
    ctx.log.info(f"{'disk image' if appended else 'ISO'} written: {output} "
                 f"({size / 2**20:.0f} MiB)")


class Iso(Stage):
    name = "iso"

    def wanted(self, ctx: BuildContext) -> bool:
        return ctx.make_iso and "iso" in ctx.config.formats

    def run(self, ctx: BuildContext) -> None:
        output = ctx.work.output / f"{ctx.image_basename}.iso"
        make_iso(ctx, output)
        ctx.outputs.append(output)
