"""Kernel images in an image's /boot, by the names Debian's linux-image packages give them.

Most architectures install a compressed image, /boot/vmlinuz-<version>; riscv64
installs its EFI Image (a PE file grub's linux command starts) and ppc64el its
ELF as /boot/vmlinux-<version>. Everything that looks for the image's kernels
(the deferred initramfs, the medium, the report) asks here.
"""

from __future__ import annotations

from typing import Final

from deblive.host.imagetree import ImageTree

IMAGE_NAMES: Final = ("vmlinuz", "vmlinux")


def version_of(name: str) -> str | None:
    """The kernel version a /boot file name carries (vmlinux-6.12.1-riscv64: 6.12.1-riscv64),
    None for any other file."""
    for image in IMAGE_NAMES:
        if name.startswith(f"{image}-") and len(name) > len(image) + 1:
            return name[len(image) + 1:]
    return None


def kernel_images(tree: ImageTree) -> dict[str, str]:
    """Kernel version -> the image's path in the tree, for every kernel in /boot."""
    found: dict[str, str] = {}
    for image in IMAGE_NAMES:
        for path in tree.glob("/boot", f"{image}-*"):
            version = version_of(path.rsplit("/", 1)[1])
            if version is not None:
                found.setdefault(version, path)
    return found
