"""`deblive publish`: build output directories into one release tree (cdimage's layout),
its checksums and signatures, the merged report, the index page, its determinism and
atomicity, and every refusal (exit 2, naming the OUTDIR or file) before a byte is written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deblive.core.errors import ExitCode
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.release import tree
from deblive.release.tree import PublishError, publish
from tests.support import archives

RUNNER = Runner(BuildLog())
PNG = b"\x89PNG\r\n\x1a\n" + b"fake screen"
HOSTILE = "<script>alert(1)</script>"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_outdir(base: Path, name: str, codename: str, arch: str, *, netboot: bool = False,
                modes: dict[str, str] | None = None,
                finished: str = "2024-03-01T10:12:30+00:00") -> Path:
    """A fake `deblive build` OUTDIR: outputs, report.json (the keys build_report writes),
    SHA256SUMS, filesystem.packages and a boot test's results.json with screenshots."""
    image = f"{name}-{codename}-{arch}"
    outdir = base / image
    files = {
        f"{image}.iso": b"ISO of " + image.encode(),
        f"{image}.img": b"disk image of " + image.encode(),
        f"{image}.spdx.json": b'{"spdxVersion": "SPDX-2.3"}\n',
        "filesystem.packages": b"bash\t5.2\nlive-boot\t1:20230131\n",
        "filesystem.squashfs": b"squashfs of " + image.encode(),
        "boot-entries.json": b'{"format": 1}\n',
    }
    if netboot:
        files |= {"netboot/live/vmlinuz": b"kernel", "netboot/pxelinux.cfg/default": b"menu",
                  "netboot/boot-entries.json": b'{"format": 1}\n'}
    for rel, data in files.items():
        (outdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (outdir / rel).write_bytes(data)
    outputs = [{"name": rel, "bytes": len(data), "sha256": sha256(data)}
               for rel, data in files.items()]
    report = {
        "deblive_version": "0.1.0", "result": "success", "error": None,
        "build_id": f"id-{image}", "name": name, "suite": codename, "codename": codename,
        "architecture": arch, "config_digest": "0" * 64, "config": {"name": name},
        "config_file": f"/builds/{name}.yaml",
        "live_user": {"name": "user", "password": "set", "password_hash": "yescrypt",
                      "sudo": True},
        "source_date_epoch": 1700000000, "source_date_epoch_from": "release",
        "started": "2024-03-01T10:00:00+00:00",
        "finished": finished,
        "duration_seconds": 750.4,
        "stages": [{"name": "bootstrap", "seconds": 100.0, "ok": True, "cached": False}],
        "layout": "flat", "base_cache": None,
        "packages": {"count": 2, "manifest": [
            {"name": "bash", "version": "5.2", "architecture": arch, "origin": "debian"}]},
        "outputs": outputs,
    }
    write_json(outdir / "report.json", report)
    summed = sorted(o for o in files if o.endswith((".iso", ".img", ".spdx.json"))
                    or o.startswith("netboot/"))
    (outdir / "SHA256SUMS").write_text(
        "".join(f"{sha256(files[o])}  {o}\n" for o in summed), encoding="utf-8")
    if modes:
        test_dir = outdir / f"test-{image}"
        test_dir.mkdir()
        runs = []
        for mode, result in modes.items():
            shot = None
            if result != "skipped":
                (test_dir / f"screen-{mode}.png").write_bytes(PNG + mode.encode())
                # The test machine's absolute path: only its file name counts.
                shot = f"/builds/elsewhere/test-{image}/screen-{mode}.png"
            runs.append({"mode": mode, "result": result, "seconds_to_login": 31.5,
                         "screenshot": shot, "failures": []})
        write_json(test_dir / "results.json", {"iso": f"/builds/{image}.iso", "passed": True,
                                               "modes": runs})
    return outdir


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def edit_report(outdir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    report = json.loads((outdir / "report.json").read_text(encoding="utf-8"))
    change(report)
    write_json(outdir / "report.json", report)


@pytest.fixture
def outdirs(tmp_path: Path) -> list[Path]:
    return [
        make_outdir(tmp_path / "a", "desk", "trixie", "amd64", netboot=True,
                    modes={"bios-cd": "pass", "uefi-cd": "fail"}),
        make_outdir(tmp_path / "b", "tiny", "bookworm", "arm64",
                    modes={"uefi-cd": "pass", "bios-cd": "skipped"},
                    finished="2024-03-06T10:12:30+01:00"),
    ]


def test_the_release_tree_follows_cdimage(outdirs: list[Path], tmp_path: Path) -> None:
    release = tmp_path / "release"
    result = publish(outdirs, release, runner=RUNNER)
    assert result.release == release
    assert result.images == ("desk-trixie-amd64", "tiny-bookworm-arm64")
    iso_hybrid = release / "amd64" / "iso-hybrid"
    for suffix in (".iso", ".img", ".spdx.json", ".packages"):
        assert (iso_hybrid / f"desk-trixie-amd64{suffix}").is_file()
        assert (release / "arm64" / "iso-hybrid" / f"tiny-bookworm-arm64{suffix}").is_file()
    assert (iso_hybrid / "desk-trixie-amd64.packages").read_bytes().startswith(b"bash\t5.2")
    netboot = release / "amd64" / "netboot" / "desk-trixie-amd64"
    assert (netboot / "live" / "vmlinuz").read_bytes() == b"kernel"
    assert (netboot / "pxelinux.cfg" / "default").is_file()
    # Screens by image and mode: the test dir's file, not the recorded absolute path.
    shot = iso_hybrid / "screens" / "desk-trixie-amd64-bios-cd.png"
    assert shot.read_bytes() == PNG + b"bios-cd"
    assert not (release / "arm64" / "iso-hybrid" / "screens" /
                "tiny-bookworm-arm64-bios-cd.png").exists()
    # Logs, the squashfs and boot-entries.json stay out; the inputs stay where they were.
    names = {p.name for p in release.rglob("*")}
    assert not names & {"filesystem.squashfs", "build.log", "results.json"}
    assert "boot-entries.json" in {p.name for p in netboot.iterdir()}  # the tree's own
    assert (outdirs[0] / "desk-trixie-amd64.iso").is_file()
    assert set(result.files) == {p for p in release.rglob("*") if p.is_file()}
    assert not list(tmp_path.glob(".release.*"))


def test_every_summed_directory_verifies(outdirs: list[Path], tmp_path: Path) -> None:
    release = tmp_path / "release"
    publish(outdirs, release, runner=RUNNER)
    roots = sorted(p.parent for p in release.rglob("SHA256SUMS"))
    assert [r.relative_to(release).as_posix() for r in roots] == [
        "amd64/iso-hybrid", "amd64/netboot/desk-trixie-amd64", "arm64/iso-hybrid"]
    for root in roots:
        members = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                         if p.is_file() and not p.name.startswith("SHA"))
        for name, algorithm in (("SHA256SUMS", hashlib.sha256), ("SHA512SUMS", hashlib.sha512)):
            lines = (root / name).read_text(encoding="utf-8").splitlines()
            listed = [line.split("  ", 1)[1] for line in lines]
            assert listed == members  # sorted, relative, every file once
            for line in lines:
                digest, rel = line.split("  ", 1)
                assert algorithm((root / rel).read_bytes()).hexdigest() == digest
        if shutil.which("sha256sum"):
            subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=root,
                           check=True)


def test_the_merged_report_names_both_images_and_their_boots(
        outdirs: list[Path], tmp_path: Path) -> None:
    release = tmp_path / "release"
    result = publish(outdirs, release, runner=RUNNER)
    report = json.loads((release / "report.json").read_text(encoding="utf-8"))
    assert report["format"] == 1
    assert report["passed"] is False and result.passed is False  # desk's uefi-cd failed
    desk, tiny = report["images"]
    assert (desk["image"], desk["architecture"], desk["name"], desk["suite"]) == (
        "desk-trixie-amd64", "amd64", "desk", "trixie")
    assert tiny["image"] == "tiny-bookworm-arm64"
    assert desk["boot"] == {
        "bios-cd": {"result": "pass", "seconds_to_login": 31.5,
                    "screenshot": "amd64/iso-hybrid/screens/desk-trixie-amd64-bios-cd.png"},
        "uefi-cd": {"result": "fail", "seconds_to_login": 31.5,
                    "screenshot": "amd64/iso-hybrid/screens/desk-trixie-amd64-uefi-cd.png"},
    }
    assert tiny["boot"]["bios-cd"] == {"result": "skipped", "seconds_to_login": 31.5,
                                       "screenshot": None}
    assert tiny["passed"] is True and desk["passed"] is False
    assert desk["build"]["build_id"] == "id-desk-trixie-amd64"  # the whole build report
    assert "amd64/netboot/desk-trixie-amd64/live/vmlinuz" in desk["files"]
    assert desk["files"] == sorted(desk["files"])
    for rel in desk["files"] + tiny["files"]:
        assert (release / rel).is_file()


def test_the_index_shows_every_image_and_mode_and_escapes_the_reports(
        outdirs: list[Path], tmp_path: Path) -> None:
    edit_report(outdirs[0], lambda r: r.update(suite=HOSTILE))
    results = outdirs[1] / "test-tiny-bookworm-arm64" / "results.json"
    data = json.loads(results.read_text(encoding="utf-8"))
    data["modes"][0]["result"] = HOSTILE
    write_json(results, data)
    release = tmp_path / "release"
    publish(outdirs, release, runner=RUNNER)
    page = (release / "index.html").read_text(encoding="utf-8")
    assert "desk-trixie-amd64" in page and "tiny-bookworm-arm64" in page
    assert "<th>bios-cd</th>" in page and "<th>uefi-cd</th>" in page
    assert '<td class="pass"' in page and '<td class="fail"' in page
    assert '<td class="skipped"' in page and '<td class="other"' in page
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'src="amd64/iso-hybrid/screens/desk-trixie-amd64-bios-cd.png"' in page
    assert 'href="amd64/iso-hybrid/desk-trixie-amd64.iso"' in page
    assert "12 min 30 s" in page  # the build time, readable
    assert "Generated from builds finished by 2024-03-06 09:12 UTC" in page  # the newest
    report = json.loads((release / "report.json").read_text(encoding="utf-8"))
    assert report["passed"] is False  # a result that is not "pass" is no pass


def test_publishing_twice_gives_the_same_bytes(outdirs: list[Path], tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    publish(outdirs, first, runner=RUNNER)
    publish(list(reversed(outdirs)), second, runner=RUNNER)

    def contents(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes()
                for p in root.rglob("*") if p.is_file()}

    assert contents(first) == contents(second)


@pytest.fixture(scope="module")
def gpg_home() -> Iterator[Path]:
    with archives.gnupg_home() as home:
        yield home


def test_signed_sums_verify(outdirs: list[Path], tmp_path: Path, gpg_home: Path) -> None:
    release = tmp_path / "release"
    result = publish(outdirs, release, sign_key="deblive test archive", gnupg_home=gpg_home,
                     runner=RUNNER)
    signatures = sorted(release.rglob("*.asc"))
    assert len(signatures) == 6  # SHA256SUMS and SHA512SUMS in three directories
    assert set(signatures) <= set(result.files)
    for asc in signatures:
        subprocess.run(["gpg", "--batch", "--homedir", str(gpg_home), "--verify", str(asc)],
                       check=True, capture_output=True)
        assert asc.with_suffix("").read_text(encoding="utf-8") in asc.read_text(
            encoding="utf-8")


def test_a_missing_signing_key_is_refused_before_anything(
        outdirs: list[Path], tmp_path: Path, gpg_home: Path) -> None:
    with pytest.raises(PublishError, match="no secret key") as caught:
        publish(outdirs, tmp_path / "release", sign_key="nobody at all",
                gnupg_home=gpg_home, runner=RUNNER)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert not (tmp_path / "release").exists()


def _corrupt_iso(outdir: Path) -> None:
    iso = next(outdir.glob("*.iso"))
    iso.write_bytes(iso.read_bytes().upper())


def _wrong_sum(outdir: Path) -> None:
    sums = outdir / "SHA256SUMS"
    lines = sums.read_text(encoding="utf-8").splitlines()
    lines[0] = "f" * 64 + lines[0][64:]
    sums.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _remove(name: str) -> Callable[[Path], None]:
    def remove(outdir: Path) -> None:
        next(outdir.glob(name)).unlink()

    return remove


def _write(name: str, text: str) -> Callable[[Path], None]:
    def write(outdir: Path) -> None:
        (outdir / name).write_text(text, encoding="utf-8")

    return write


def _symlinked_output(outdir: Path) -> None:
    img = next(outdir.glob("*.img"))
    elsewhere = outdir.parent / "elsewhere.img"
    img.rename(elsewhere)
    img.symlink_to(elsewhere)  # the same bytes: refused for being a symlink


def _symlinked_netboot(outdir: Path) -> None:
    (outdir / "netboot").rename(outdir.parent / "tree")
    (outdir / "netboot").symlink_to(outdir.parent / "tree")


def _escaping_name(outdir: Path) -> None:
    def change(report: dict[str, Any]) -> None:
        report["outputs"].append({"name": "../secret.iso", "bytes": 1, "sha256": "0" * 64})

    edit_report(outdir, change)


def _colliding_outputs(outdir: Path) -> None:
    data = b"another ISO"
    (outdir / "other.iso").write_bytes(data)

    def change(report: dict[str, Any]) -> None:
        report["outputs"].append({"name": "other.iso", "bytes": len(data),
                                  "sha256": sha256(data)})

    edit_report(outdir, change)


def _screenshot_missing(outdir: Path) -> None:
    for png in outdir.glob("test-*/screen-*.png"):
        png.unlink()


def _hostile_mode(outdir: Path) -> None:
    results = next(outdir.glob("test-*/results.json"))
    data = json.loads(results.read_text(encoding="utf-8"))
    data["modes"][0]["mode"] = "../../bios-cd"
    write_json(results, data)


REFUSALS: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing report": (_remove("report.json"), r"report\.json: missing"),
    "failed build": (lambda o: edit_report(o, lambda r: r.update(result="failure")),
                     "'failure', not 'success'"),
    "no outputs": (lambda o: edit_report(o, lambda r: r.update(outputs=[])), "lists no outputs"),
    "bad json": (_write("report.json", "{"),
                 "not valid JSON"),
    "missing output": (_remove("*.img"), r"\.img is missing"),
    "report checksum": (_corrupt_iso, r"\.iso: checksum mismatch"),
    "SHA256SUMS checksum": (_wrong_sum, r"SHA256SUMS: checksum mismatch"),
    "symlinked output": (_symlinked_output, r"\.img is a symlink"),
    "symlinked netboot tree": (_symlinked_netboot, "netboot is a symlink"),
    "name outside": (_escaping_name, "not a plain relative file name"),
    "bad architecture": (lambda o: edit_report(o, lambda r: r.update(architecture="../x")),
                         "architecture '../x'"),
    "two outputs, one path": (_colliding_outputs, "would both be published as"),
    "screenshot missing": (_screenshot_missing, r"screen-bios-cd\.png is missing"),
    "hostile mode": (_hostile_mode, "not a boot mode's name"),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_refusals_name_the_outdir_and_write_nothing(
        case: str, outdirs: list[Path], tmp_path: Path) -> None:
    spoil, message = REFUSALS[case]
    spoil(outdirs[0])
    release = tmp_path / "out" / "release"
    with pytest.raises(PublishError, match=message) as caught:
        publish(outdirs, release, runner=RUNNER)
    assert str(outdirs[0]) in str(caught.value)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert not (tmp_path / "out").exists()


def test_one_image_in_two_outdirs_is_refused(outdirs: list[Path], tmp_path: Path) -> None:
    again = tmp_path / "again"
    shutil.copytree(outdirs[0], again)
    with pytest.raises(PublishError, match="both hold the image desk-trixie-amd64") as caught:
        publish([*outdirs, again], tmp_path / "release", runner=RUNNER)
    assert str(again) in str(caught.value) and str(outdirs[0]) in str(caught.value)
    assert not (tmp_path / "release").exists()


def test_an_existing_release_needs_force_and_is_replaced_whole(
        outdirs: list[Path], tmp_path: Path) -> None:
    release = tmp_path / "release"
    release.mkdir()
    (release / "stale.iso").write_bytes(b"old")
    with pytest.raises(PublishError, match="not empty: use --force"):
        publish(outdirs, release, runner=RUNNER)
    assert (release / "stale.iso").read_bytes() == b"old"
    publish(outdirs[:1], release, force=True, runner=RUNNER)
    assert not (release / "stale.iso").exists()
    assert (release / "amd64" / "iso-hybrid" / "desk-trixie-amd64.iso").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "release"]
    empty = tmp_path / "empty"
    empty.mkdir()
    publish(outdirs, empty, runner=RUNNER)  # an empty directory is no release to keep
    assert (empty / "report.json").is_file()


def test_an_outdir_inside_the_release_is_refused(outdirs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="inside the release directory"):
        publish(outdirs, tmp_path, force=True, runner=RUNNER)
    assert outdirs[0].is_dir()


def test_a_failure_while_writing_leaves_no_release(
        outdirs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(tree, "render_index", broken)
    release = tmp_path / "release"
    with pytest.raises(RuntimeError, match="disk full"):
        publish(outdirs, release, runner=RUNNER)
    assert not release.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".release")]
    assert (outdirs[0] / "desk-trixie-amd64.iso").is_file()


def test_files_are_copied_when_they_cannot_be_linked(
        outdirs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def cross_device(*_args: object, **_kwargs: object) -> None:
        raise OSError(18, os.strerror(18))  # EXDEV

    monkeypatch.setattr(os, "link", cross_device)
    release = tmp_path / "release"
    publish(outdirs[:1], release, runner=RUNNER)
    iso = release / "amd64" / "iso-hybrid" / "desk-trixie-amd64.iso"
    source = outdirs[0] / "desk-trixie-amd64.iso"
    assert iso.read_bytes() == source.read_bytes()
    assert not os.path.samefile(iso, source)
    assert iso.stat().st_mode & 0o777 == 0o644
