from __future__ import annotations

from pathlib import Path

import pytest

from deblive.host import sandbox


def test_mounts_under_parses_escapes_and_sorts_deepest_first(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    base = tmp_path / "w"
    base.mkdir()
    mounts.write_text(
        f"proc {base}/rootfs/proc proc rw 0 0\n"
        f"devpts {base}/rootfs/dev/pts devpts rw 0 0\n"
        f"tmpfs {base}/rootfs/dev tmpfs rw 0 0\n"
        f"tmpfs {str(base).replace('/', '/')}/with\\040space tmpfs rw 0 0\n"
        f"tmpfs {base}x/other tmpfs rw 0 0\n"
        "proc /proc proc rw 0 0\n"
    )
    found = sandbox.mounts_under(base, mounts)
    assert found[0] == base / "rootfs/dev/pts"
    assert set(found) == {
        base / "rootfs/proc", base / "rootfs/dev/pts", base / "rootfs/dev", base / "with space",
    }


def test_safe_rmtree_refuses_near_root() -> None:
    with pytest.raises(sandbox.SandboxError, match="too close to /"):
        sandbox.safe_rmtree(Path("/var"))


def test_safe_rmtree_refuses_mounted_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "work"
    (tree / "rootfs/proc").mkdir(parents=True)
    monkeypatch.setattr(sandbox, "mounts_under", lambda p: [tree / "rootfs/proc"])
    with pytest.raises(sandbox.SandboxError, match="still mounted below it"):
        sandbox.safe_rmtree(tree)
    assert tree.exists()


def test_safe_rmtree_deletes(tmp_path: Path) -> None:
    tree = tmp_path / "work"
    (tree / "a/b").mkdir(parents=True)
    (tree / "a/b/f").write_text("x")
    sandbox.safe_rmtree(tree)
    assert not tree.exists()


def test_chroot_mounts_demand_the_private_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEBLIVE_MOUNT_NS", raising=False)
    with pytest.raises(sandbox.SandboxError, match="private mount namespace"), \
            sandbox.chroot_mounts(tmp_path):
        pass
