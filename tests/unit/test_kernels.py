"""The image's kernels by Debian's names: vmlinuz-<version> on most architectures,
vmlinux-<version> on riscv64 (an EFI Image) and ppc64el (an ELF). No root."""

from __future__ import annotations

from pathlib import Path

import pytest

from deblive.build.kernels import kernel_images, version_of
from deblive.build.stages.medium import MediumError, find_kernels
from deblive.host.imagetree import ImageTree


@pytest.mark.parametrize(("name", "version"), [
    ("vmlinuz-6.1.0-57-amd64", "6.1.0-57-amd64"),
    ("vmlinux-6.12.118+deb13-riscv64", "6.12.118+deb13-riscv64"),
    ("vmlinuz", None), ("vmlinux-", None), ("initrd.img-6.1.0-57-amd64", None),
    ("System.map-6.1.0-57-amd64", None),
])
def test_the_version_in_a_kernel_images_name(name: str, version: str | None) -> None:
    assert version_of(name) == version


def test_a_riscv64_vmlinux_is_found_with_its_initrd(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    for name in ("vmlinux-6.12.118+deb13-riscv64", "initrd.img-6.12.118+deb13-riscv64",
                 "config-6.12.118+deb13-riscv64", "System.map-6.12.118+deb13-riscv64"):
        (boot / name).write_text(name)
    (tmp_path / "vmlinuz").symlink_to("boot/vmlinux-6.12.118+deb13-riscv64")
    with ImageTree(tmp_path) as tree:
        assert kernel_images(tree) == {
            "6.12.118+deb13-riscv64": "/boot/vmlinux-6.12.118+deb13-riscv64"}
        [kernel] = find_kernels(tree)
    assert kernel.vmlinuz == "/boot/vmlinux-6.12.118+deb13-riscv64"
    assert kernel.initrd == "/boot/initrd.img-6.12.118+deb13-riscv64"


def test_no_kernel_image_names_both_names(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    with ImageTree(tmp_path) as tree, pytest.raises(MediumError,
                                                    match=r"vmlinuz-\* or vmlinux-\*"):
        find_kernels(tree)
