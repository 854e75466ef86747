"""core.files: a large file's digest is read once while the file is unchanged."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from deblive.core import files


def test_a_large_file_is_read_once_while_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    iso = tmp_path / "image.iso"
    iso.write_bytes(b"a" * (2 << 20))
    reads: list[int] = []
    real = hashlib.sha256

    def counting() -> hashlib._Hash:
        reads.append(1)
        return real()

    monkeypatch.setattr(hashlib, "sha256", counting)
    linked = tmp_path / "live" / "image.iso"  # the medium's hard link (a link moves ctime)
    linked.parent.mkdir()
    os.link(iso, linked)
    first = files.sha256_file(linked)
    assert first == real(iso.read_bytes()).hexdigest()
    assert files.sha256_file(iso) == files.sha256_file(linked) == first
    assert len(reads) == 1
    # Written to in place, the same size, its mtime put back: its ctime moved.
    st = iso.stat()
    with iso.open("r+b") as f:
        f.write(b"b")
    os.utime(iso, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert files.sha256_file(iso) == real(iso.read_bytes()).hexdigest() != first
    assert len(reads) == 2


def test_small_files_are_always_read(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text("{}")
    files.sha256_file(report)
    assert not any(key[1] == report.stat().st_ino for key in files._DIGESTS)
