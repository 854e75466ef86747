"""The command line: build, validate, schema, test.

Exit status: 0 success, 1 a failed build or test, 2 bad input (config,
arguments, missing files), 130/143 interrupted by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from deblive import __version__
from deblive.core import interrupt
from deblive.core.interrupt import Interrupted
from deblive.core.log import BuildLog
from deblive.core.runner import DebliveError
from deblive.model import config as config_mod


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "suite": getattr(args, "suite", None),
        "architecture": getattr(args, "arch", None),
        "mirror": getattr(args, "mirror", None),
        "apt_mirror": getattr(args, "apt_mirror", None),
        "hook": getattr(args, "hook", None),
    }


def load_config(args: argparse.Namespace) -> config_mod.ImageConfig:
    overrides = _overrides(args)
    if overrides.get("hook") is not None:
        # A hook given on the command line is relative to the current directory.
        overrides["hook"] = str(Path(overrides["hook"]).resolve())
    if args.config is None:
        return config_mod.load_default(overrides)
    return config_mod.load(Path(args.config), overrides)


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="image config (YAML); default: the embedded default")
    p.add_argument("--suite", help="override the config's suite")
    p.add_argument("--arch", help="override the config's architecture")
    p.add_argument("--mirror", help="override the build mirror")
    p.add_argument("--apt-mirror", help="override the mirror written into the image")
    p.add_argument("--hook", help="override the customisation hook")


def cmd_build(args: argparse.Namespace) -> int:
    from deblive.build import pipeline as build

    cfg = load_config(args)
    if args.vm:
        return _build_in_vm(args, cfg)
    options = build.BuildOptions(
        outdir=Path(args.output) if args.output else build.default_outdir(cfg),
        workdir=Path(args.workdir) if args.workdir else build.default_workdir(cfg),
        cache=Path(args.cache_dir) if args.cache_dir else build.DEFAULT_CACHE,
        keep_workdir=args.keep_workdir,
        remove_failed_workdir=args.remove_failed_workdir,
        make_iso=not args.no_iso,
        force=args.force,
        verbose=args.verbose,
    )
    log = BuildLog(verbose=args.verbose)
    result = build.build(cfg, options, log)
    for path in result.outputs:
        log.info(f"wrote {path}")
    return 0


def _build_in_vm(args: argparse.Namespace, cfg: config_mod.ImageConfig) -> int:
    from deblive.build import pipeline as build
    from deblive.buildervm import run as buildervm

    hook = Path(args.hook).resolve() if args.hook else None
    overrides = {"suite": cfg.suite, "arch": cfg.architecture}
    for option, value in (("mirror", args.mirror), ("apt-mirror", args.apt_mirror),
                          ("hook", str(hook) if hook else None)):
        if value is not None:
            overrides[option] = value
    inner = buildervm.InnerCommand(
        config=Path(args.config).resolve() if args.config else None, overrides=overrides,
        make_iso=not args.no_iso, force=args.force, verbose=args.verbose,
    )
    outdir = Path(args.output) if args.output else build.default_outdir(cfg)
    workdir = Path(args.workdir) if args.workdir else build.default_workdir(cfg)
    options = buildervm.VMOptions(
        outdir=outdir.resolve(),
        workdir=workdir.with_name(workdir.name + "-vm") if not args.workdir else workdir,
        cache=Path(args.cache_dir) if args.cache_dir else build.DEFAULT_CACHE,
        force=args.force, keep_workdir=args.keep_workdir, make_iso=not args.no_iso,
        verbose=args.verbose, accel=args.accel, memory_mib=args.vm_memory,
        disk_gib=args.vm_disk, rebuild_builder=args.rebuild_builder,
    )
    log = BuildLog(verbose=args.verbose)
    buildervm.build_in_vm(cfg, inner, options, log, hook_override=hook)
    log.info(f"built in the builder VM; results in {options.outdir}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if args.network:
        from deblive.host import preflight

        preflight.check_mirror(cfg)
    from deblive.build.stages.hook import check_hook

    check_hook(cfg)
    print(f"{cfg.source or 'default config'}: valid ({cfg.name}: {cfg.codename} "
          f"{cfg.architecture})")
    if args.show:
        print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    """Remove leftover work trees; a busy, mounted or foreign tree is refused, not touched."""
    from deblive.build import pipeline as build
    from deblive.host import workbase as clean_mod

    workdir = Path(args.workdir) if args.workdir else None
    outcomes = clean_mod.clean(workdir, build.DEFAULT_WORK_BASE)
    if not outcomes:
        print(f"deblive: no work trees under {build.DEFAULT_WORK_BASE}")
    code = 0
    for outcome in outcomes:
        word = "removed" if outcome.removed else f"kept: {outcome.reason}"
        print(f"deblive: {outcome.path}: {word}")
        if not outcome.removed and "in use by" not in outcome.reason:
            code = 1
    return code


def cmd_plan(args: argparse.Namespace) -> int:
    """Resolve the package set against the mirror; exit 2 for unknown names or conflicts."""
    from deblive.apt import plan

    cfg = load_config(args)
    result = plan.make_plan(cfg, Path(args.cache_dir) if args.cache_dir else None)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(plan.format_plan(result))
    return 0


def cmd_metapackage(args: argparse.Namespace) -> int:
    """Write <name>-live-task_<version>_all.deb (Depends: the tasks and extras)."""
    from deblive.build import metapackage

    cfg = load_config(args)
    print(metapackage.build(cfg, Path(args.output)))
    return 0


def cmd_schema(_args: argparse.Namespace) -> int:
    print(json.dumps(config_mod.json_schema(), indent=2))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deblive",
        description="Build bootable Debian live images and prove that they boot.",
    )
    parser.add_argument("--version", action="version", version=f"deblive {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("build", help="build an image from a config",
                       description="Build a live image: squashfs, package list, ISO, report.")
    _add_config_options(p)
    p.add_argument("-o", "--output", help="output directory (default: out/<name>)")
    p.add_argument("--workdir", help="work directory (default: /var/tmp/deblive/<image>)")
    p.add_argument("--cache-dir", help="package cache shared between builds "
                   "(default: /var/cache/deblive)")
    p.add_argument("--remove-failed-workdir", action="store_true",
                   help="remove the work tree of a failed or interrupted build too "
                   "(default: keep it for inspection)")
    p.add_argument("--keep-workdir", action="store_true",
                   help="keep the work tree after a successful build")
    p.add_argument("--no-iso", action="store_true", help="stop after the verified squashfs")
    p.add_argument("--force", action="store_true", help="replace a previous build in the output")
    p.add_argument("-v", "--verbose", action="store_true", help="show every command's output")
    vm = p.add_argument_group(
        "builder VM", "run the whole build inside a throwaway VM of the target release")
    vm.add_argument("--vm", action="store_true",
                    help="build inside a builder VM (its disk is made once and cached)")
    vm.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                    help="builder VM accelerator (default: KVM if it works, else TCG)")
    vm.add_argument("--vm-memory", type=int, default=4096, metavar="MIB",
                    help="builder VM memory in MiB (default: 4096)")
    vm.add_argument("--vm-disk", type=int, default=40, metavar="GIB",
                    help="size of the builder's sparse work disk in GiB (default: 40)")
    vm.add_argument("--rebuild-builder", action="store_true",
                    help="make the builder VM's disk anew even if one is cached")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("validate", help="check a config without touching the system",
                       description="Validate a config file (and its hook) and exit.")
    _add_config_options(p)
    p.add_argument("--network", action="store_true",
                   help="also check that the mirror carries the suite and architecture")
    p.add_argument("--show", action="store_true", help="print the config with defaults filled")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("clean", help="remove leftover work trees of dead builds",
                       description="Remove a work tree (or, without WORKDIR, every one "
                       "under the default work base) that no running build holds, "
                       "refusing trees with mounts below them.")
    p.add_argument("workdir", nargs="?", metavar="WORKDIR",
                   help="work tree to remove (default: all idle ones under /var/tmp/deblive)")
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("plan", help="resolve the package set against the mirror, no build",
                       description="Resolve the image's packages (base, live system, tasks, "
                       "extras, Recommends included) with apt against the mirror for the "
                       "suite and architecture; print the number of packages, the download "
                       "and the installed size. No root needed. Exit 2: unknown packages "
                       "or a package set that does not resolve.")
    _add_config_options(p)
    p.add_argument("--cache-dir", help="where the suite's package lists are kept "
                   "(default: /var/cache/deblive/plan as root, else ~/.cache/deblive/plan)")
    p.add_argument("--json", action="store_true", help="machine-readable, with every package")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("metapackage", help="build <name>-live-task, the image's package set",
                       description="Build a metapackage (Architecture: all) whose Depends "
                       "are the config's tasks and extras, with dpkg-deb.")
    _add_config_options(p)
    p.add_argument("-o", "--output", default=".", help="output directory (default: .)")
    p.set_defaults(func=cmd_metapackage)

    p = sub.add_parser("schema", help="print the config's JSON schema",
                       description="Print the JSON schema of image config files.")
    p.set_defaults(func=cmd_schema)

    try:
        from deblive.boottest import run as boottest
    except ImportError:  # pragma: no cover - boottest ships with deblive
        pass
    else:
        boottest.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    interrupt.install_handlers()
    try:
        code: int = args.func(args)
        return code
    except Interrupted as exc:
        interrupt.ignore_further()
        print(f"deblive: {exc.describe()}", file=sys.stderr)
        return exc.exit_code
    except DebliveError as exc:
        print(f"deblive: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
