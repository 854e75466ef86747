"""report.json and checksums: what was built, from what, how long it took.

The report is the machine-readable record of a build: the config's digest,
each stage's duration, the package manifest, bytes downloaded, and every
output's size and sha256, so CI and people can compare builds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from deblive import __version__
from deblive.build.context import BuildContext
from deblive.build.stages.clean import installed_packages


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def sha256sums(files: list[Path], dest: Path) -> None:
    """SHA256SUMS in sha256sum's format, names relative to dest's directory."""
    lines = [f"{sha256_file(f)}  {f.name}\n" for f in sorted(files)]
    write_atomic(dest, "".join(lines))


def build_report(
    ctx: BuildContext, started: dt.datetime, outputs: list[Path], result: str,
    error: str | None = None,
) -> dict[str, Any]:
    finished = dt.datetime.now(dt.UTC)
    packages: list[dict[str, str]] = []
    status = ctx.rootfs / "var/lib/dpkg/status"
    if status.exists():
        packages = [
            {"name": n, "version": v, "architecture": a}
            for n, v, a in installed_packages(ctx.rootfs)
        ]
    config = ctx.config
    return {
        "deblive_version": __version__,
        "result": result,
        "error": error,
        "build_id": ctx.build_id,
        "name": config.name,
        "suite": config.suite,
        "codename": config.codename,
        "architecture": config.architecture,
        "config_digest": config.digest(),
        "config": config.model_dump(mode="json"),
        "config_file": str(config.source) if config.source else None,
        "source_date_epoch": ctx.source_date_epoch,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "duration_seconds": round((finished - started).total_seconds(), 1),
        "stages": [
            {"name": t.name, "seconds": t.seconds, "ok": t.ok} for t in ctx.log.timings
        ],
        "downloaded_bytes": ctx.facts.get("downloaded_bytes"),
        "kernels": ctx.facts.get("kernels", []),
        "squashfs": ctx.facts.get("squashfs"),
        "boot_packages": ctx.facts.get("bootdebs", []),
        "packages": {"count": len(packages), "manifest": packages},
        "outputs": [
            {"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in outputs
            if p.is_file()
        ],
    }


def write_report(report: dict[str, Any], path: Path) -> None:
    write_atomic(path, json.dumps(report, indent=2, sort_keys=False) + "\n")
