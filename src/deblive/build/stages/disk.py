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

With encryption luks the file system is made 16MiB smaller and then
encrypted in place into a LUKS2 volume by `cryptsetup reencrypt --encrypt`,
offline: cryptsetup's own crypto, no device-mapper, no loop device, no
mount. Its UUID is derived from the build; its volume key and salts are
random, as they must be, so an encrypted image differs from build to build
and the whole partition takes space in the image (encrypted zeros are not
sparse). The passphrase reaches cryptsetup through a key file of mode 0600
in the work tree, removed right after; never through a command line.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from deblive.build.context import BuildContext
from deblive.build.stage import Stage
from deblive.build.stages.iso import make_iso
from deblive.core.runner import Runner
from deblive.model.sections import LUKS_HEADER

PERSISTENCE_CONF = "/ union\n"
CONF_NAME = "persistence.conf"  # live-boot reads it at the partition's root
PARTITION = 3  # after the ISO (1) and the EFI system partition (2)
LINUX_TYPE = "0x83"
# argon2id's memory for the keyslot: live-boot unlocks the volume in the
# initramfs, so a machine with little RAM must manage it too.
LUKS_PBKDF_MEMORY_KIB = 256 * 1024


def filesystem_uuid(build_id: str, label: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"deblive:{build_id}:persistence:{label}"))


def mke2fs_argv(image: Path, content: Path, label: str, fs_uuid: str,
                fs_bytes: int | None = None) -> list[str]:
    """ext4 made from a directory, as root's, with a fixed UUID and hash seed; fs_bytes:
    smaller than the file (room for the LUKS header)."""
    return ["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-U", fs_uuid,
            "-E", f"hash_seed={fs_uuid},root_owner=0:0", "-d", str(content), str(image),
            *([f"{fs_bytes // 1024}k"] if fs_bytes is not None else [])]


def file_times_script(path: str, epoch: int) -> str:
    """debugfs commands that give path the build's date: mke2fs -d copies each file's
    times from the host's copy (its ctime is the moment it was written), while
    E2FSPROGS_FAKE_TIME sets only the times mke2fs itself makes."""
    return "".join(f"set_inode_field {path} {field} @{epoch}\n"
                   for field in ("atime", "mtime", "ctime", "crtime"))


def luks_argv(image: Path, key_file: Path, label: str, volume_uuid: str) -> list[str]:
    """Encrypt image in place into a LUKS2 volume (offline: no device-mapper)."""
    return ["cryptsetup", "reencrypt", "--encrypt", "--type", "luks2",
            "--reduce-device-size", f"{LUKS_HEADER // 2**20}M", "--key-file", str(key_file),
            "--pbkdf", "argon2id", "--pbkdf-memory", str(LUKS_PBKDF_MEMORY_KIB),
            "--uuid", volume_uuid, "--label", label,
            # The image is this build's own file: no lock in the host's /run.
            "--disable-locks", "--batch-mode", str(image)]


def encrypt(runner: Runner, image: Path, passphrase: str, label: str, volume_uuid: str) -> None:
    """The file system in image (16MiB short of its end) becomes a LUKS2 volume."""
    key_file = image.with_name("passphrase")
    key_file.unlink(missing_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(passphrase)  # all of the file is the key: no newline
        runner.run(luks_argv(image, key_file, label, volume_uuid),
                   what="encrypting the persistence partition (LUKS2)")
    finally:
        key_file.unlink(missing_ok=True)


def make_persistence(runner: Runner, dest: Path, *, size: int, label: str, fs_uuid: str,
                     epoch: int, passphrase: str | None = None) -> Path:
    """The persistence partition's image in dest (a sparse file of size bytes);
    with a passphrase, a LUKS2 volume holding the file system."""
    content = dest / "content"
    content.mkdir(parents=True, exist_ok=True)
    (content / CONF_NAME).write_text(PERSISTENCE_CONF)
    (content / CONF_NAME).chmod(0o644)
    image = dest / "persistence.ext4"
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(size)
    # e2fsprogs takes its clock from E2FSPROGS_FAKE_TIME: the file system's times.
    fake_time = {"E2FSPROGS_FAKE_TIME": str(epoch)}
    runner.run(mke2fs_argv(image, content, label, fs_uuid,
                           size - LUKS_HEADER if passphrase is not None else None),
               env=fake_time, what="making the persistence file system")
    runner.run(["debugfs", "-w", "-f", "-", str(image)], env=fake_time,
               input_data=file_times_script(f"/{CONF_NAME}", epoch),
               what=f"dating {CONF_NAME}")
    if passphrase is not None:
        encrypt(runner, image, passphrase, label,
                str(uuid.uuid5(uuid.NAMESPACE_URL, f"deblive:{fs_uuid}:luks")))
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
            epoch=ctx.source_date_epoch,
            passphrase=(persistence.passphrase.get_secret_value()
                        if persistence.passphrase is not None else None))
        output = ctx.work.output / f"{ctx.image_basename}.img"
        make_iso(ctx, output, appended=[(PARTITION, LINUX_TYPE, image)])
        image.unlink()
        ctx.outputs.append(output)
        ctx.facts.disk_bytes = output.stat().st_size
