"""The architecture's own rules, beyond the import contracts `lint-imports` holds.

One process owner: only core.runner starts programs (imports subprocess), so
every command is in the build log and a signal ends them all. One mount
owner: only host.sandbox mounts. Modules stay small enough to read.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "deblive"
MODULES = sorted(SRC.rglob("*.py"))
MOUNT_CALL = re.compile(r"(?<![\w.])(?:_libc\.)?u?mount2?\(|\[\s*[\"']u?mount[\"']")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(SRC.parent).with_suffix("").parts)


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_tree_is_found() -> None:
    assert len(MODULES) > 40


def test_only_the_runner_starts_processes() -> None:
    users = [module_name(p) for p in MODULES if "subprocess" in imported(p)]
    assert users == ["deblive.core.runner"]


def test_no_module_runs_programs_another_way() -> None:
    for path in MODULES:
        text = path.read_text(encoding="utf-8")
        for call in ("os.system(", "os.popen(", "os.exec", "os.spawn", "pty.spawn("):
            assert call not in text, f"{module_name(path)} calls {call}"


def test_only_the_sandbox_mounts() -> None:
    mounting = [module_name(p) for p in MODULES
                if MOUNT_CALL.search(p.read_text(encoding="utf-8"))]
    assert mounting == ["deblive.host.sandbox"]


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_modules_stay_readable(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= 450, f"{module_name(path)} has {lines} lines"
