"""Resolved packages: what a plan says an image gets, with the sizes apt lists."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    architecture: str
    size: int = 0  # bytes to download
    installed_size: int = 0  # KiB, as dpkg counts


@dataclass
class PackageSet:
    packages: list[Package] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.packages)

    @property
    def download_bytes(self) -> int:
        return sum(p.size for p in self.packages)

    @property
    def installed_bytes(self) -> int:
        return sum(p.installed_size for p in self.packages) * 1024
