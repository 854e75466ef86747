"""report.json and checksums: what was built, from what, how long it took.

The report is the machine-readable record of a build: the config's digest,
each stage's duration, the package manifest, bytes downloaded, and every
output's size and sha256, so CI and people can compare builds. It never
holds the live user's password: only that one is set and which hash scheme
the image stores it with.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from deblive import __version__
from deblive.build.context import BuildContext
from deblive.build.stages.clean import installed_packages
from deblive.core.errors import DebliveError
from deblive.core.files import sha256_file, write_atomic
from deblive.host.imagetree import ImageTree
from deblive.model.config import ImageConfig


def config_digest(config: ImageConfig) -> str:
    """sha256 of the resolved config (password masked) and the content of the files it
    names: what made this image, safe to publish."""
    data = config.public_dump()
    data["codename"] = config.codename
    for key, path in config.referenced_paths().items():
        if path.is_file():
            data[f"{key}.sha256"] = sha256_file(path)
    blob = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def output_files(outputs: list[Path]) -> list[Path]:
    """The outputs' files: a directory output (the netboot tree) stands for every file in it."""
    found: list[Path] = []
    for path in outputs:
        if path.is_dir() and not path.is_symlink():
            found += sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        elif path.is_file():
            found.append(path)
    return found


def output_name(path: Path, output_dir: Path) -> str:
    """An output's name as published: netboot/live/vmlinuz for a file of the netboot tree."""
    return path.relative_to(output_dir).as_posix() if path.is_relative_to(output_dir) else path.name


def sha256sums(files: list[Path], dest: Path) -> None:
    """SHA256SUMS in sha256sum's format, names relative to dest's directory."""
    lines = [f"{sha256_file(f)}  {f.relative_to(dest.parent).as_posix()}\n"
             for f in sorted(files)]
    write_atomic(dest, "".join(lines))


def _manifest(rootfs: Path) -> list[dict[str, str]]:
    if not rootfs.is_dir():
        return []
    try:
        with ImageTree(rootfs) as tree:
            if not tree.is_file("/var/lib/dpkg/status"):
                return []
            return [{"name": n, "version": v, "architecture": a}
                    for n, v, a in installed_packages(tree)]
    except DebliveError:
        return []


def build_report(
    ctx: BuildContext, started: dt.datetime, outputs: list[Path], result: str,
    error: str | None = None,
) -> dict[str, Any]:
    finished = dt.datetime.now(dt.UTC)
    # A layered build's tree is gone with its overlay: the clean stage's list stays.
    packages = ([{"name": n, "version": v, "architecture": a} for n, v, a in ctx.installed]
                if ctx.installed is not None else _manifest(ctx.rootfs))
    for package in packages:  # local, an extra repository's host, or Debian's archive
        package["origin"] = ctx.package_origins.get(
            f"{package['name']}={package['version']}", "debian")
    config = ctx.config
    facts = dataclasses.asdict(ctx.facts)
    return {
        "deblive_version": __version__,
        "result": result,
        "error": error,
        "build_id": ctx.build_id,
        "name": config.name,
        "suite": config.suite,
        "codename": config.codename,
        "architecture": str(config.architecture),
        "config_digest": config_digest(config),
        "config": config.public_dump(),
        "config_file": str(config.source) if config.source else None,
        "live_user": {
            "name": config.user.name, "password": "set",
            "password_hash": facts.pop("password_hash"), "sudo": config.user.sudo,
        },
        "source_date_epoch": ctx.source_date_epoch,
        "source_date_epoch_from": ctx.source_date_epoch_from,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "duration_seconds": round((finished - started).total_seconds(), 1),
        "stages": [
            *({"name": name, "seconds": 0.0, "ok": True, "cached": True}
              for name in ctx.cached_stages),
            *({"name": t.name, "seconds": t.seconds, "ok": t.ok, "cached": False}
              for t in ctx.log.timings),
        ],
        "layout": "layered" if ctx.layered else "flat",
        "base_cache": cache_report(ctx),
        **facts,
        "packages": {"count": len(packages), "manifest": packages},
        "outputs": [
            {"name": output_name(p, ctx.work.output), "bytes": p.stat().st_size,
             "sha256": sha256_file(p)}
            for p in output_files(outputs)
        ],
    }


def cache_report(ctx: BuildContext) -> dict[str, Any] | None:
    """Whether the base came from the cache, its key, and on a miss why."""
    if not ctx.layered:
        return None
    inputs = ctx.base_inputs
    return {
        "result": "hit" if ctx.base_hit else ("miss" if ctx.base_cache else "off"),
        "base": started.key if (started := ctx.base_hit or ctx.base_entry) else None,
        "extra_packages": list(ctx.extra_packages),
        # the cached images under the top layer, the root base first
        "chain": [e.key for e in ctx.base_chain],
        "stored_layer": ctx.stored_layer.key if ctx.stored_layer else None,
        "key": inputs.key if inputs else None,
        "reason": ctx.base_miss or None,
        "inputs": inputs.as_dict() if inputs else None,
    }


def write_report(report: dict[str, Any], path: Path) -> None:
    write_atomic(path, json.dumps(report, indent=2, sort_keys=False) + "\n")
