"""Unit tests: no root, no network; a fake host apt config so no mirror name is needed."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.host import configfile, hostapt
from deblive.model import config
from deblive.model.arch import Arch
from deblive.model.config import HostDefaults, ImageConfig

FAKE_MIRROR = "http://mirror.invalid/debian"


@pytest.fixture(autouse=True)
def fake_host_apt(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The host's apt sources, as the config's defaults read them, point at a fake mirror."""
    etc = tmp_path_factory.mktemp("apt-etc")
    (etc / "sources.list.d").mkdir()
    (etc / "sources.list.d" / "debian.sources").write_text(
        f"Types: deb\nURIs: {FAKE_MIRROR}\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n"
        "Components: main\n"
    )
    monkeypatch.setattr(hostapt, "APT_ETC", etc)
    monkeypatch.setattr(hostapt, "host_codename", lambda: "bookworm")
    monkeypatch.setattr(hostapt, "host_architecture", lambda machine=None: Arch.AMD64)
    return etc


def host() -> HostDefaults:
    """The (faked) host's defaults, as the CLI gathers them."""
    return hostapt.host_defaults()


def parse(data: dict[str, Any], source: Path | None = Path("/cfg/demo.yaml"),
          overrides: dict[str, Any] | None = None) -> ImageConfig:
    return config.parse(data, source, host(), overrides)


def load(path: Path, overrides: dict[str, Any] | None = None) -> ImageConfig:
    return configfile.load(path, overrides)


def unpacked_grub(root: Path, outside: Path, modules_dir: str, modules: Sequence[str],
                  extras: Mapping[str, str]) -> None:
    """What dpkg-deb -x of a grub-*-bin package gives (its modules and some files of its
    own that are not taken), plus links to a host file that a hostile package could hold."""
    directory = root / modules_dir.lstrip("/")
    directory.mkdir(parents=True)
    for name in modules:
        (directory / name).write_bytes(f"grub {name}\n".encode())
    for name, text in extras.items():
        (directory / name).write_text(text)
    (outside / "secret").write_text("host file\n")
    os.symlink(outside / "secret", directory / "leak.mod")
    os.symlink(outside / "secret", directory / "crypto.lst")


class RecordingRunner(Runner):
    """Records the commands (and the environment each was given) instead of running them."""

    def __init__(self) -> None:
        super().__init__(BuildLog())
        self.argvs: list[list[str]] = []
        self.envs: list[dict[str, str]] = []

    def running(self) -> list[int]:
        return []  # nothing it records runs on

    def run(self, argv: Any, **kwargs: Any) -> Any:
        self.argvs.append([str(a) for a in argv])
        self.envs.append(dict(kwargs.get("env") or {}))
