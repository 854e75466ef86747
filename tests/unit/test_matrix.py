"""`deblive matrix`: the GitLab CI pipeline for flavours x architectures (jobs, needs,
tags, caches, artifacts), its determinism, and the refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deblive.model.arch import Arch
from deblive.release import matrix
from deblive.release.matrix import MatrixImage


def images() -> list[MatrixImage]:
    return [MatrixImage(f"configs/{name}.yaml", name, "bookworm", arch, formats)
            for name, formats in (("standard", ("iso",)), ("xfce", ("iso", "disk")))
            for arch in (Arch.AMD64, Arch.ARM64)]


def generate(**options: Any) -> dict[str, Any]:
    text = matrix.pipeline(images(), **{"test_modes": ("bios-cd", "uefi-usb"), "emulate": False,
                                         "reproducibility": False, "command_line": "x",
                                         **options})
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def test_one_build_and_one_test_job_per_flavour_and_architecture() -> None:
    jobs = generate()
    builds = sorted(j for j in jobs if j.startswith("build:"))
    assert builds == ["build:standard-bookworm-amd64", "build:standard-bookworm-arm64",
                      "build:xfce-bookworm-amd64", "build:xfce-bookworm-arm64"]
    arm = jobs["build:xfce-bookworm-arm64"]
    assert arm["tags"] == ["deblive", "arm64"] and arm["stage"] == "build"
    assert arm["cache"] == {"key": "deblive-bookworm-arm64", "paths": [".deblive-cache/"]}
    assert arm["artifacts"]["paths"] == ["out/xfce-bookworm-arm64/"]
    assert arm["script"] == ["$DEBLIVE build configs/xfce.yaml --arch arm64 --cache-dir "
                             ".deblive-cache -o out/xfce-bookworm-arm64 --force"]
    test = jobs["test:xfce-bookworm-arm64"]
    assert test["needs"] == [{"job": "build:xfce-bookworm-arm64", "artifacts": True}]
    assert test["script"] == ["$DEBLIVE test out/xfce-bookworm-arm64/xfce-bookworm-arm64.iso "
                              "--mode bios-cd,uefi-usb --screenshot"]
    assert test["artifacts"] == {"when": "always", "expire_in": "1 week",
                                 "paths": ["out/xfce-bookworm-arm64/test-xfce-bookworm-arm64/"]}
    publish = jobs["publish"]
    assert publish["stage"] == "publish" and len(publish["needs"]) == 8
    assert publish["script"][0].startswith("$DEBLIVE publish out/standard-bookworm-amd64 ")
    assert jobs["stages"] == ["build", "test", "reproducibility", "publish"]
    assert jobs["variables"] == {"DEBLIVE": "deblive"}
    assert not any(j.startswith("reproduce:") for j in jobs)


def test_emulation_puts_every_job_on_amd64_runners() -> None:
    jobs = generate(emulate=True)
    for name, job in jobs.items():
        if name.startswith(("build:", "test:")):
            assert job["tags"] == ["deblive", "amd64"], name
    assert "--arch arm64" in jobs["build:standard-bookworm-arm64"]["script"][0]


def test_reproducibility_rebuilds_and_compares_by_checksum() -> None:
    jobs = generate(reproducibility=True, test_modes=None)
    job = jobs["reproduce:standard-bookworm-amd64"]
    assert job["needs"] == [{"job": "build:standard-bookworm-amd64", "artifacts": True}]
    assert "-o rebuild/standard-bookworm-amd64" in job["script"][0]
    assert job["script"][1].startswith("cmp out/standard-bookworm-amd64/SHA256SUMS "
                                       "rebuild/standard-bookworm-amd64/SHA256SUMS || ")
    assert "diffoscope --html rebuild/standard-bookworm-amd64/diffoscope.html" in job["script"][1]
    assert job["artifacts"]["when"] == "on_failure"
    assert not any(j.startswith("test:") for j in jobs)
    assert len(jobs["publish"]["needs"]) == 4


def test_a_netboot_only_image_is_tested_over_pxe_and_a_disk_only_one_from_its_img() -> None:
    net = MatrixImage("n.yaml", "net", "trixie", Arch.AMD64, ("netboot",))
    disk = MatrixImage("d.yaml", "stick", "trixie", Arch.AMD64, ("disk",))
    assert matrix.test_target(net, ("bios-cd", "uefi-usb", "uefi-cd")) == (
        "out/net-trixie-amd64/netboot", ("pxe-bios", "pxe-uefi"))
    assert matrix.test_target(disk, ("uefi-usb",)) == (
        "out/stick-trixie-amd64/stick-trixie-amd64.img", ("uefi-usb",))
    job = matrix.test_job(net, ("uefi-usb",), emulate=False)
    assert job["artifacts"]["paths"] == ["out/net-trixie-amd64/test-netboot/"]


def test_values_reaching_a_script_are_quoted() -> None:
    odd = MatrixImage("configs/my image;reboot.yaml", "odd", "bookworm", Arch.AMD64, ("iso",))
    job = matrix.build_job(odd, emulate=False)
    assert "'configs/my image;reboot.yaml'" in job["script"][0]


def test_the_same_inputs_give_the_same_file_and_two_cells_of_one_name_are_refused() -> None:
    one = matrix.pipeline(images(), test_modes=("bios-cd",), emulate=False,
                          reproducibility=True, command_line="deblive matrix a.yaml -o x")
    two = matrix.pipeline(images(), test_modes=("bios-cd",), emulate=False,
                          reproducibility=True, command_line="deblive matrix a.yaml -o x")
    assert one == two
    assert one.startswith("# Generated by deblive matrix: do not edit; regenerate with\n"
                          "#   deblive matrix a.yaml -o x\n")
    same = [images()[0], MatrixImage("other/standard.yaml", "standard", "bookworm",
                                     Arch.AMD64, ("iso",))]
    with pytest.raises(ValueError, match="both make standard-bookworm-amd64"):
        matrix.pipeline(same, test_modes=None, emulate=False, reproducibility=False,
                        command_line="x")


def _deblive(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deblive", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_the_matrix_command_writes_the_pipeline_and_refuses_bad_input(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "a.yaml").write_text("name: a\nsuite: bookworm\n")
    (tmp_path / "configs" / "b.yaml").write_text("name: b\nsuite: bookworm\n")
    args = ("matrix", "configs/a.yaml", "configs/b.yaml", "--arch", "amd64,arm64",
            "--emulate", "-o", ".gitlab-ci.yml")
    proc = _deblive(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    first = (tmp_path / ".gitlab-ci.yml").read_text()
    assert "#   deblive matrix configs/a.yaml configs/b.yaml --arch amd64,arm64 --emulate " \
           "-o .gitlab-ci.yml\n" in first
    jobs = yaml.safe_load(first)
    assert {"build:a-bookworm-amd64", "build:b-bookworm-arm64", "test:b-bookworm-arm64",
            "publish"} <= set(jobs)
    assert _deblive(*args, cwd=tmp_path).returncode == 0
    assert (tmp_path / ".gitlab-ci.yml").read_text() == first
    for bad, words in ((("--arch", "s390x"), "no bootable medium for s390x from bookworm"),
                       (("--arch", "vax"), "--arch"),
                       (("--test", "bios-floppy"), "unknown mode")):
        proc = _deblive("matrix", "configs/a.yaml", *bad, "-o", "x.yml", cwd=tmp_path)
        assert proc.returncode == 2 and words in " ".join(proc.stderr.split()), proc.stderr
    (tmp_path / "configs" / "c.yaml").write_text("name: a\nsuite: bookworm\nsquashfs: 1\n")
    proc = _deblive("matrix", "configs/c.yaml", "-o", "x.yml", cwd=tmp_path)
    assert proc.returncode == 2 and "c.yaml: squashfs" in proc.stderr
    assert not (tmp_path / "x.yml").exists()
