"""Shared by every tier: test repositories are signed with gpg; no gpg-agent may outlive a run."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest


def _agents_under(base: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"gpg-agent") and any(
            os.fsencode(base) in arg for arg in argv
        ):
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="session", autouse=True)
def _no_gpg_agent_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    for pid in _agents_under(tmp_path_factory.getbasetemp()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
