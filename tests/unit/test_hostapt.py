from __future__ import annotations

from pathlib import Path

import pytest

from deblive.host import hostapt
from deblive.model.arch import Arch


def test_deb822_sources(fake_host_apt: Path) -> None:
    assert hostapt.host_mirror(fake_host_apt) == "http://mirror.invalid/debian"
    assert hostapt.host_security_mirror(fake_host_apt) == "http://mirror.invalid/debian-security"


def test_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# comment\n"
        "deb-src http://src.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.invalid/debian/ bookworm main contrib\n"
        "deb http://sec.invalid/debian-security bookworm-security main\n"
    )
    assert hostapt.host_mirror(tmp_path) == "http://one.invalid/debian"
    assert hostapt.host_security_mirror(tmp_path) == "http://sec.invalid/debian-security"
    sources = hostapt.host_sources(tmp_path)
    assert sources[0].components == ("main", "contrib")


def test_disabled_and_source_only_entries_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "a.sources").write_text(
        "Types: deb-src\nURIs: http://src.invalid/debian\nSuites: bookworm\nComponents: main\n\n"
        "Enabled: no\nTypes: deb\nURIs: http://off.invalid/debian\nSuites: bookworm\n"
        "Components: main\n"
    )
    assert hostapt.host_mirror(tmp_path) is None


@pytest.mark.parametrize(("machine", "arch"), [
    ("x86_64", Arch.AMD64), ("aarch64", Arch.ARM64), ("i686", Arch.I386),
    ("armv7l", Arch.ARMHF), ("ppc64le", Arch.PPC64EL), ("riscv64", Arch.RISCV64),
])
def test_one_host_architecture_detector(monkeypatch: pytest.MonkeyPatch, machine: str,
                                        arch: Arch) -> None:
    monkeypatch.undo()  # the real detector, not the unit tests' fake
    assert hostapt.host_architecture(machine) is arch


def test_an_unknown_machine_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unknown host architecture"):
        hostapt.host_architecture("pdp11")
