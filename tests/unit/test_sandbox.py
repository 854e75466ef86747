from __future__ import annotations

import errno
from pathlib import Path

import pytest

from deblive.host import deletion, sandbox, workbase
from deblive.host.imagetree import ImageTree


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


def test_remove_tree_refuses_near_root() -> None:
    with pytest.raises(deletion.DeletionError, match="too close to /"):
        deletion.remove_tree(Path("/var"))


def test_remove_refuses_mounted_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = tmp_path / "work"
    (tree / "rootfs/proc").mkdir(parents=True)
    monkeypatch.setattr(sandbox, "mounts_under", lambda p: [tree / "rootfs/proc"])
    with pytest.raises(deletion.DeletionError, match="still mounted below it"):
        workbase.remove(tree)
    assert tree.exists()


def test_remove_tree_deletes_and_never_follows(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (outside / "keep" / "f").write_text("host data")
    tree = tmp_path / "work"
    (tree / "a/b").mkdir(parents=True)
    (tree / "a/b/f").write_text("x")
    (tree / "a/link-dir").symlink_to(outside / "keep")
    (tree / "a/link-abs").symlink_to("/")
    deletion.remove_tree(tree)
    assert not tree.exists()
    assert (outside / "keep" / "f").read_text() == "host data"


def test_a_symlinked_work_root_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.mkdir()
    (target / "f").write_text("host data")
    link = tmp_path / "work"
    link.symlink_to(target)
    with pytest.raises(deletion.DeletionError, match="is a symlink"):
        deletion.remove_tree(link)
    with pytest.raises(workbase.WorkBaseError, match="symlink"):
        workbase.make_work_tree(link)
    assert (target / "f").read_text() == "host data"


def test_chroot_mounts_demand_the_private_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEBLIVE_MOUNT_NS", raising=False)
    with ImageTree(tmp_path) as tree, \
            pytest.raises(sandbox.SandboxError, match="private mount namespace"), \
            sandbox.chroot_mounts(tree):
        pass


def test_the_overlay_is_volatile_where_the_kernel_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """volatile: no sync of the upper directory's file system at unmount (the ISO just
    written); an older kernel's EINVAL mounts it without, anything else is an error."""
    calls: list[str] = []
    refuse = {"errno": errno.EINVAL}

    def mount(source: str, target: Path, fstype: str | None = None, flags: int = 0,
              data: str | None = None) -> None:
        calls.append(data or "")
        if data and data.endswith(",volatile") and refuse["errno"]:
            error = sandbox.SandboxError("mount overlay: refused")
            error.errno = refuse["errno"]
            raise error

    monkeypatch.setattr(sandbox, "in_private_namespace", lambda: True)
    monkeypatch.setattr(sandbox, "mount", mount)
    monkeypatch.setattr(sandbox, "_unmount_here", lambda target: None)
    dirs = [tmp_path / n for n in ("lower", "upper", "work", "target")]
    dirs[0].mkdir()
    with sandbox.overlay(*dirs):
        pass
    assert [c.endswith(",volatile") for c in calls] == [True, False]
    assert all("index=off" in c and "metacopy=off" in c for c in calls)
    calls.clear()
    refuse["errno"] = 0
    with sandbox.overlay(*dirs):
        pass
    assert [c.endswith(",volatile") for c in calls] == [True]
    refuse["errno"] = errno.EPERM
    with pytest.raises(sandbox.SandboxError, match="refused"), sandbox.overlay(*dirs):
        pass
