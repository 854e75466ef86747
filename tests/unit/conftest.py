"""Unit tests: no root, no network; a fake host apt config so no mirror name is needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from deblive.host import hostapt

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
    monkeypatch.setattr(hostapt, "host_architecture", lambda: "amd64")
    return etc
