"""The xorriso command line, the boot package table, the EFI config and medium helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from deblive.build import bootfiles
from deblive.build.bootfiles import BootFilesError
from deblive.build.stages import bootloaders, iso, medium
from deblive.host.imagetree import ImageTree
from deblive.model.arch import Arch, BootLayout

_boot = Arch.AMD64.boot
assert _boot is not None
AMD64_BOOT: BootLayout = _boot

MEDIUM = Path("medium")
EFI_IMG = MEDIUM / "boot/grub/efi.img"
MBR = Path("bootfiles/usr/lib/ISOLINUX/isohdpfx.bin")
EPOCH = 1700000000  # 2023-11-14 22:13:20 UTC


def command(isohdpfx: Path | None = MBR) -> list[str]:
    return iso.xorriso_command(
        MEDIUM, Path("out/x.iso"), volume_id="deblive bookworm amd64", epoch=EPOCH,
        efi_image=EFI_IMG, isohdpfx=isohdpfx,
    )


def pairs(argv: list[str], name: str) -> list[str]:
    """Values following each occurrence of a one-argument command."""
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == name]


def boot_specs(argv: list[str]) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, arg in enumerate(argv) if arg == "-boot_image"]


def test_native_mode_with_output_and_volume_id() -> None:
    argv = command()
    assert argv[0] == "xorriso" and "-as" not in argv
    assert pairs(argv, "-outdev") == ["stdio:out/x.iso"]
    assert pairs(argv, "-volid") == ["deblive bookworm amd64"]
    assert pairs(argv, "-joliet") == ["on"] and pairs(argv, "-rockridge") == ["on"]
    i = argv.index("-map")
    assert argv[i + 1 : i + 3] == ["medium", "/"]
    assert argv[-1] == "-commit"


def test_bios_el_torito_and_isohybrid_mbr() -> None:
    specs = boot_specs(command())
    assert ("isolinux", "bin_path=/isolinux/isolinux.bin") in specs
    assert ("isolinux", "cat_path=/isolinux/boot.cat") in specs
    assert ("isolinux", "load_size=2048") in specs  # 4 sectors of 512 bytes
    assert ("isolinux", "boot_info_table=on") in specs
    assert ("isolinux", f"system_area={MBR}") in specs
    # The BIOS image is entry 1; "next" starts the EFI entry.
    bios = specs.index(("isolinux", "bin_path=/isolinux/isolinux.bin"))
    efi = specs.index(("any", "efi_path=/boot/grub/efi.img"))
    assert bios < specs.index(("any", "next")) < efi


def test_efi_el_torito_and_appended_esp() -> None:
    argv = command()
    specs = boot_specs(argv)
    assert ("any", "efi_path=/boot/grub/efi.img") in specs
    assert ("any", "platform_id=0xef") in specs
    assert ("any", "emul_type=no_emulation") in specs
    i = argv.index("-append_partition")
    assert argv[i + 1 : i + 4] == ["2", "0xef", str(EFI_IMG)]


def test_reproducible_dates() -> None:
    argv = command()
    dates = [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == "-volume_date"]
    assert ("uuid", "2023111422132000") in dates
    assert ("all_file_dates", f"={EPOCH}") in dates
    assert pairs(argv, "-iso_nowtime") == [f"={EPOCH}"]


def test_efi_only_has_no_bios_parts() -> None:
    argv = command(isohdpfx=None)
    specs = boot_specs(argv)
    assert not [s for s in specs if s[0] == "isolinux"]
    assert ("any", "next") not in specs
    assert ("any", "efi_path=/boot/grub/efi.img") in specs
    assert "-append_partition" in argv


def test_boot_report_check() -> None:
    good = (
        "El Torito boot img :   1  BIOS  y   none  0x0000  0x00      4        3183\n"
        "El Torito boot img :   2  UEFI  y   none  0x0000  0x00  12416          79\n"
        "System area summary: MBR isohybrid cyl-align-on\n"
        "MBR partition      :   2   0x00  0xef       438272        12416\n"
    )
    iso.check_boot_report(good, bios=True)
    no_esp = good.replace("0xef", "0x83")
    with pytest.raises(iso.IsoError, match="MBR partition"):
        iso.check_boot_report(no_esp, bios=True)
    no_bios = "\n".join(line for line in good.splitlines() if "BIOS" not in line)
    with pytest.raises(iso.IsoError, match="BIOS"):
        iso.check_boot_report(no_bios, bios=True)
    iso.check_boot_report(no_bios, bios=False)


# -- boot packages -------------------------------------------------------------


def test_boot_packages_per_architecture() -> None:
    assert bootfiles.arch_boot(Arch.AMD64).packages == (
        "isolinux", "syslinux-common", "grub-efi-amd64-signed", "shim-signed",
        "shim-helpers-amd64-signed",
    )
    arm = bootfiles.arch_boot(Arch.ARM64).packages
    assert "grub-efi-arm64-signed" in arm and "shim-helpers-arm64-signed" in arm
    assert "isolinux" not in arm and "syslinux-common" not in arm
    with pytest.raises(BootFilesError, match="s390x"):
        bootfiles.arch_boot(Arch.S390X)


def test_select_debs_names_missing_packages(tmp_path: Path) -> None:
    names = [
        "isolinux_3%3a6.04_all.deb", "syslinux-common_3%3a6.04_all.deb",
        "grub-efi-amd64-signed_1+2.06_amd64.deb", "shim-signed_1.51_amd64.deb",
        "unrelated_1_amd64.deb",
    ]
    debs = [tmp_path / n for n in names]
    with pytest.raises(BootFilesError, match="shim-helpers-amd64-signed"):
        bootfiles.select_debs(debs, Arch.AMD64)
    debs.append(tmp_path / "shim-helpers-amd64-signed_1+16.1_amd64.deb")
    chosen = bootfiles.select_debs(debs, Arch.AMD64)
    assert tuple(bootfiles.package_of_deb(d) for d in chosen) == AMD64_BOOT.packages


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_locate_copies_the_amd64_files_out(tmp_path: Path) -> None:
    unpacked, files = tmp_path / "unpacked", tmp_path / "files"
    for rel in (
        "usr/lib/ISOLINUX/isolinux.bin", "usr/lib/ISOLINUX/isohdpfx.bin",
        "usr/lib/shim/shimx64.efi.signed", "usr/lib/shim/mmx64.efi.signed",
        "usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed",
        *(f"usr/lib/syslinux/modules/bios/{m}" for m in bootfiles.ISOLINUX_MODULES),
    ):
        _touch(unpacked / rel)
    found = bootfiles.locate(unpacked, files, Arch.AMD64)
    assert found.bios is not None
    assert found.bios.ldlinux == files / "ldlinux.c32"
    assert found.efi is not None and found.chrp is None
    assert found.efi.efi_boot_names() == {
        "bootx64.efi": files / "shimx64.efi.signed",
        "grubx64.efi": files / "gcdx64.efi.signed",
        "mmx64.efi": files / "mmx64.efi.signed",
    }
    (unpacked / "usr/lib/syslinux/modules/bios/vesamenu.c32").unlink()
    with pytest.raises(BootFilesError, match="vesamenu"):
        bootfiles.locate(unpacked, files, Arch.AMD64)


def test_a_boot_file_that_is_a_symlink_to_a_host_file_is_not_copied(tmp_path: Path) -> None:
    unpacked, files = tmp_path / "unpacked", tmp_path / "files"
    secret = tmp_path / "host-secret"
    secret.write_text("host")
    for rel in ("usr/lib/shim/shimaa64.efi.signed", "usr/lib/shim/mmaa64.efi.signed"):
        _touch(unpacked / rel)
    grub = unpacked / "usr/lib/grub/arm64-efi-signed/gcdaa64.efi.signed"
    grub.parent.mkdir(parents=True)
    grub.symlink_to(secret)
    with pytest.raises(BootFilesError, match="gcdaa64"):
        bootfiles.locate(unpacked, files, Arch.ARM64)
    assert not any("host" in p.read_text() for p in files.rglob("*") if p.is_file())


# -- EFI image and medium ------------------------------------------------------------


def test_efi_config_searches_the_build_marker_not_disk_info() -> None:
    text = bootloaders.efi_early_config("1234-abcd")
    assert "search --no-floppy --file --set=root /.disk/id/1234-abcd" in text
    assert "set prefix=($root)/boot/grub" in text
    assert "source $prefix/grub.cfg" in text
    assert "/.disk/info" not in text


def test_efi_image_size_grows_with_contents() -> None:
    small = bootloaders.efi_image_kib([1000], 3)
    big = bootloaders.efi_image_kib([1_048_504, 3_835_328, 877_992, 393], 4)
    assert small < big
    assert big * 1024 > 1_048_504 + 3_835_328 + 877_992 + 393
    assert big % 64 == 0


def test_splash_must_be_640x480_png(tmp_path: Path) -> None:
    bootloaders.check_splash(bootloaders.default_splash())
    bad = tmp_path / "bad.png"
    head = bootloaders.default_splash().read_bytes()
    bad.write_bytes(head[:16] + (800).to_bytes(4, "big") + head[20:])
    with pytest.raises(bootloaders.BootloaderError, match="800x480"):
        bootloaders.check_splash(bad)


def test_kernels_sorted_by_debian_version(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    for version in ("6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-28-amd64"):
        (boot / f"vmlinuz-{version}").write_bytes(b"k")
        (boot / f"initrd.img-{version}").write_bytes(b"i")
    with ImageTree(tmp_path) as tree:
        kernels = medium.find_kernels(tree)
        assert [k.version for k in kernels] == [
            "5.10.0-28-amd64", "6.1.0-9-amd64", "6.1.0-10-amd64"]
        (boot / "initrd.img-6.1.0-9-amd64").unlink()
        with pytest.raises(medium.MediumError, match="initrd"):
            medium.find_kernels(tree)


def test_checksums_skip_patched_and_own_files(tmp_path: Path) -> None:
    for rel in ("live/vmlinuz", "isolinux/isolinux.bin", "isolinux/isolinux.cfg", ".disk/info"):
        _touch(tmp_path / rel)
    out = medium.write_checksums(tmp_path)
    paths = [line.split("  ", 1)[1] for line in out.read_text().splitlines()]
    assert paths == ["./.disk/info", "./isolinux/isolinux.cfg", "./live/vmlinuz"]
