"""Unit tests: no root, no network; a fake host apt config so no mirror name is needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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
