"""The disk image: the hybrid ISO with a persistence partition appended, for dd onto a stick.

`<name>-<suite>-<arch>.img` is the same medium as the ISO (it boots BIOS and
UEFI, Secure Boot too, from USB as the ISO does), made by the same xorriso
command with one more appended partition: MBR partition 3, type 0x83, an
ext4 file system labelled as the config says, holding live-boot's
persistence.conf (`/ union`: every change of the live system is kept). The
file system is made by mke2fs -d from a directory (no loop device, no
mount), with its UUID, hash seed and times derived from the build, so the
image is as reproducible as the ISO. live-boot, booted with `persistence`,
scans every partition except the medium's for that label.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from deblive.build.context import BuildContext
from deblive.build.stage import Stage
from deblive.build.stages.iso import make_iso
from deblive.core.runner import Runner

PERSISTENCE_CONF = "/ union\n"
PARTITION = 3  # after the ISO (1) and the EFI system partition (2)
LINUX_TYPE = "0x83"


def filesystem_uuid(build_id: str, label: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"deblive:{build_id}:persistence:{label}"))


def mke2fs_argv(image: Path, content: Path, label: str, fs_uuid: str) -> list[str]:
    """ext4 made from a directory, as root's, with a fixed UUID and hash seed."""
    return ["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-U", fs_uuid,
            "-E", f"hash_seed={fs_uuid},root_owner=0:0", "-d", str(content), str(image)]


def make_persistence(runner: Runner, dest: Path, *, size: int, label: str, fs_uuid: str,
                     epoch: int) -> Path:
    """The persistence partition's image in dest (a sparse file of size bytes)."""
    content = dest / "content"
    content.mkdir(parents=True, exist_ok=True)
    (content / "persistence.conf").write_text(PERSISTENCE_CONF)
    (content / "persistence.conf").chmod(0o644)
    image = dest / "persistence.ext4"
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(size)
    # e2fsprogs takes its clock from E2FSPROGS_FAKE_TIME: the file system's times.
    runner.run(mke2fs_argv(image, content, label, fs_uuid),
               env={"E2FSPROGS_FAKE_TIME": str(epoch)},
               what="making the persistence file system")
    return image


class Disk(Stage):
    name = "disk"

    def wanted(self, ctx: BuildContext) -> bool:
        return ctx.make_iso and "disk" in ctx.config.formats

    def run(self, ctx: BuildContext) -> None:
        persistence = ctx.config.persistence
        assert persistence is not None  # the config's check: disk needs persistence
        image = make_persistence(
            ctx.runner, ctx.work.root / "disk", size=persistence.size, label=persistence.label,
            fs_uuid=filesystem_uuid(ctx.build_id, persistence.label),
            epoch=ctx.source_date_epoch)
        output = ctx.work.output / f"{ctx.image_basename}.img"
        make_iso(ctx, output, appended=[(PARTITION, LINUX_TYPE, image)])
        image.unlink()
        ctx.outputs.append(output)
        ctx.facts.disk_bytes = output.stat().st_size
