"""The commands: each takes the parsed arguments and returns an exit status.

The host's facts a config's defaults come from are gathered once here (by
host.configfile) and handed to the (pure) config model.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console

from deblive.apt import extras, planview
from deblive.apt import plan as plan_mod
from deblive.apt.archive import check_mirror
from deblive.boottest import persistence
from deblive.boottest import run as boottest
from deblive.boottest.medium import EntriesError, read_entries
from deblive.boottest.modes import BadInput, parse_modes
from deblive.build import basecache, metapackage
from deblive.build import pipeline as build
from deblive.buildervm import control
from deblive.buildervm import run as buildervm
from deblive.core.errors import BadInputError, DebliveError, ExitCode
from deblive.core.files import write_atomic
from deblive.core.log import BuildLog, format_seconds
from deblive.core.runner import Runner
from deblive.host import configfile, preflight, workbase
from deblive.host.fileserver import FileServer
from deblive.host.treeram import TreePlace
from deblive.model import config as config_mod
from deblive.model.arch import Arch
from deblive.release import matrix, tree
from deblive.vm.accel import AccelRequest

PASSWORD_ENV = "DEBLIVE_TEST_PASSWORD"
PASSPHRASE_ENV = "DEBLIVE_TEST_PASSPHRASE"


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    hook = getattr(args, "hook", None)
    return {
        "suite": getattr(args, "suite", None),
        "architecture": getattr(args, "arch", None),
        "mirror": getattr(args, "mirror", None),
        "apt_mirror": getattr(args, "apt_mirror", None),
        # A hook given on the command line is relative to the current directory.
        "hook": str(Path(hook).resolve()) if hook else None,
    }


def load_config(args: argparse.Namespace) -> config_mod.ImageConfig:
    if args.config is None:
        return configfile.load_default(_overrides(args))
    return configfile.load(Path(args.config), _overrides(args))


def cmd_build(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    outdir = Path(args.output) if args.output else build.default_outdir(cfg)
    cache = Path(args.cache_dir) if args.cache_dir else build.DEFAULT_CACHE
    log = BuildLog(verbose=args.verbose)
    if args.vm:
        workdir = Path(args.workdir) if args.workdir else build.default_workdir(cfg)
        _build_in_vm(args, cfg, outdir, cache,
                     workdir if args.workdir else workdir.with_name(workdir.name + "-vm"), log)
        return ExitCode.OK
    options = build.BuildOptions(
        outdir=outdir,
        workdir=Path(args.workdir) if args.workdir else build.default_workdir(cfg),
        cache=cache,
        keep_workdir=args.keep_workdir,
        remove_failed_workdir=args.remove_failed_workdir,
        make_iso=not args.no_iso,
        force=args.force,
        verbose=args.verbose,
        layout=args.layout,
        use_cache=not args.no_cache,
        tree=TreePlace(args.tree),
    )
    result = build.build(cfg, options, log)
    for path in result.outputs:
        log.info(f"wrote {path}")
    return ExitCode.OK


def _build_in_vm(args: argparse.Namespace, cfg: config_mod.ImageConfig, outdir: Path,
                 cache: Path, workdir: Path, log: BuildLog) -> None:
    overrides = {"suite": cfg.suite, "arch": str(cfg.architecture)}
    for option, value in (("mirror", args.mirror), ("apt-mirror", args.apt_mirror),
                          ("hook", _overrides(args)["hook"])):
        if value is not None:
            overrides[option] = value
    inner = control.InnerCommand(
        config=Path(args.config).resolve() if args.config else None, overrides=overrides,
        make_iso=not args.no_iso, verbose=args.verbose, layout=args.layout,
        use_cache=not args.no_cache,
    )
    options = buildervm.VMOptions(
        outdir=outdir.resolve(), workdir=workdir, cache=cache, force=args.force,
        keep_workdir=args.keep_workdir, make_iso=not args.no_iso, verbose=args.verbose,
        accel=AccelRequest(args.accel), memory_mib=args.vm_memory, disk_gib=args.vm_disk,
        rebuild_builder=args.rebuild_builder,
    )
    buildervm.build_in_vm(cfg, inner, options, log)
    log.info(f"built in the builder VM; results in {options.outdir}")


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    preflight.check_paths(cfg)
    if not args.no_iso:
        preflight.check_bootable(cfg)
    if args.network:
        check_mirror(cfg)
        found = extras.gather(cfg, Runner(BuildLog()), plan_mod.default_cache_dir().parent)
        for extra in found.all:
            print(f"{extra.name}: {extra.uri}: signed by its key")
    print(f"{cfg.source or 'default config'}: valid ({cfg.name}: {cfg.codename} "
          f"{cfg.architecture})")
    if args.show:
        print(json.dumps(cfg.public_dump(), indent=2))
    return ExitCode.OK


def cmd_clean(args: argparse.Namespace) -> int:
    """Remove leftover work trees; a busy, mounted or foreign tree is refused, not touched."""
    workdir = Path(args.workdir) if args.workdir else None
    outcomes = workbase.clean(workdir, workbase.DEFAULT_WORK_BASE)
    if not outcomes:
        print(f"deblive: no work trees under {workbase.DEFAULT_WORK_BASE}")
    code = ExitCode.OK
    for outcome in outcomes:
        word = "removed" if outcome.removed else f"kept: {outcome.reason}"
        print(f"deblive: {outcome.path}: {word}")
        if not outcome.removed and "in use by" not in outcome.reason:
            code = ExitCode.FAILED
    return code


SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """1500, 200M, 2G (binary units); BadInputError for anything else."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in SIZE_UNITS and value[-1:] else ""
    number = value[: len(value) - len(unit)]
    if not number.isdigit():
        raise BadInputError(f"--max-size {text!r}: expected a size such as 500M or 2G")
    return int(number) * SIZE_UNITS[unit]


def _cache(args: argparse.Namespace) -> basecache.BaseCache:
    return basecache.BaseCache(Path(args.cache_dir) if args.cache_dir else build.DEFAULT_CACHE)


def cmd_cache_list(args: argparse.Namespace) -> int:
    cache = _cache(args)
    entries = cache.entries()
    if not entries:
        print(f"deblive: no cached base trees in {cache.root}")
        return ExitCode.OK
    now = time.time()
    for entry in entries:
        meta = entry.meta
        inputs = meta.get("inputs", {})
        age = format_seconds(now - entry.last_used)
        over = "" if entry.parent is None else f", a package layer over {entry.parent}"
        print(f"{entry.key}  {entry.size / 2**20:7.0f} MiB  used {age} ago  "
              f"{entry.image}: {inputs.get('release', '?')}, "
              f"{len(meta.get('packages', []))} packages, made {meta.get('created', '?')}"
              f"{over}")
    total = sum(e.size for e in entries)
    print(f"{len(entries)} entries, {total / 2**20:.0f} MiB in {cache.root}")
    return ExitCode.OK


def cmd_cache_prune(args: argparse.Namespace) -> int:
    cache = _cache(args)
    limit = parse_size(args.max_size)
    removed = cache.prune(limit)
    for entry in removed:
        print(f"deblive: removed {entry.key} ({entry.image}, {entry.size / 2**20:.0f} MiB)")
    left = cache.entries()
    print(f"deblive: {len(left)} entries left, "
          f"{sum(e.size for e in left) / 2**20:.0f} MiB (limit {limit / 2**20:.0f} MiB)")
    return ExitCode.OK


def cmd_plan(args: argparse.Namespace) -> int:
    """Resolve the package set against the mirror; exit 2 for unknown names or conflicts."""
    cfg = load_config(args)
    runner = Runner(BuildLog())
    cache = Path(args.cache_dir) if args.cache_dir else plan_mod.default_cache_dir()
    found = extras.gather(cfg, runner, cache.parent)
    result = plan_mod.make_plan(cfg, runner, cache, extras=found.all, local=found.local_names)
    print(json.dumps(result.to_json(), indent=2) if args.json else planview.format_plan(result))
    return ExitCode.OK


def cmd_metapackage(args: argparse.Namespace) -> int:
    """Write <name>-live-task_<version>_all.deb (Depends: the tasks and extras)."""
    cfg = load_config(args)
    print(metapackage.build(cfg, Path(args.output), Runner(BuildLog())))
    return ExitCode.OK


def cmd_schema(_args: argparse.Namespace) -> int:
    print(json.dumps(config_mod.json_schema(), indent=2))
    return ExitCode.OK


def test_password(args: argparse.Namespace) -> str:
    """The live user's password for `deblive test`: never from the command line (the
    process list shows it). A file, the environment, the image's config, or "live"."""
    if args.password_file:
        try:
            return Path(args.password_file).read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            raise BadInput(f"--password-file {args.password_file}: {exc.strerror}") from None
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if args.config:
        return configfile.load(Path(args.config)).user.password.get_secret_value()
    return "live"


def test_passphrase(args: argparse.Namespace) -> str | None:
    """The LUKS passphrase of an encrypted persistence partition, typed at live-boot's
    prompt: a file, the environment, or the image's config; None: not asked for."""
    if getattr(args, "passphrase_file", None):
        try:
            return Path(args.passphrase_file).read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            raise BadInput(f"--passphrase-file {args.passphrase_file}: {exc.strerror}") from None
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    if args.config:
        persistence = configfile.load(Path(args.config)).persistence
        if persistence is not None and persistence.passphrase is not None:
            return persistence.passphrase.get_secret_value()
    return None


def cmd_test(args: argparse.Namespace, console: Console | None = None) -> int:
    """The `test` subcommand: 0 all passed, 1 any failure, 2 bad input, 130 Ctrl-C."""
    log = BuildLog(verbose=bool(getattr(args, "verbose", False)))
    try:
        if args.jobs < 1:
            raise BadInput("--jobs must be at least 1")
        if args.timeout is not None and args.timeout <= 0:
            raise BadInput("--timeout must be positive")
        options = boottest.TestOptions(
            password=test_password(args), passphrase=test_passphrase(args),
            user=args.user, timeout=args.timeout,
            accel=AccelRequest(args.accel), jobs=args.jobs, screenshot=args.screenshot,
            output=args.output, memory_mib=args.memory,
            arch=Arch(args.arch) if args.arch else None, expect=tuple(args.expect),
        )
        modes = parse_modes(args.mode, network=args.iso.is_dir(),
                            arch=boottest.image_arch(args.iso, options))
        if not args.iso.is_file() and not args.iso.is_dir():
            raise BadInput(f"ISO not found: {args.iso}")
        log.open(options.output_dir(args.iso.resolve()) / "test.log")
        if getattr(args, "persistence", False):
            results = persistence.run_persistence(args.iso, modes, options, log)
        else:
            results = boottest.run_tests(args.iso, modes, options, log)
    except (DebliveError, config_mod.ConfigError) as exc:
        log.error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted; the VMs were stopped")
        return ExitCode.SIGINT
    finally:
        log.close()
    (console or Console()).print(boottest.results_table(results))
    return ExitCode.OK if all(r.result != "fail" for r in results) else ExitCode.FAILED


def cmd_serve(args: argparse.Namespace) -> int:
    """The `serve` subcommand: the netboot tree over HTTP until Ctrl-C."""
    log = BuildLog()
    tree = Path(args.tree).resolve()
    try:
        entries = read_entries(tree) if tree.is_dir() else None
        if entries is None or entries.netboot_url is None:
            raise BadInput(f"{tree} is not a netboot tree (deblive build with formats: "
                           "[netboot] writes OUTDIR/netboot)")
        url = urlsplit(entries.netboot_url)
        port = args.port if args.port is not None else (url.port or 80)
        server = FileServer(tree, args.bind, port, prefix=url.path or "/",
                            echo=lambda line: log.info(line))
    except (EntriesError, OSError) as exc:
        log.error(f"cannot serve {tree}: {exc}")
        return ExitCode.BAD_INPUT
    except DebliveError as exc:
        log.error(str(exc))
        return exc.exit_code
    log.info(f"serving {tree} at http://{args.bind}:{server.port}{url.path or '/'} "
             f"(its menus fetch {entries.netboot_url}); Ctrl-C ends")
    try:
        server.serve_forever()  # until Ctrl-C: deblive's interrupt status, 130
    finally:
        server.close()
    return ExitCode.OK


def matrix_command_line(args: argparse.Namespace) -> str:
    """The command that regenerates the file, for its header (from the parsed options,
    so the same inputs give the same header)."""
    words = ["deblive", "matrix", *args.configs]
    if args.arch:
        words += ["--arch", args.arch]
    if args.test != "bios-cd,uefi-usb":
        words += ["--test", args.test]
    words += [flag for flag, on in (("--emulate", args.emulate),
                                    ("--reproducibility", args.reproducibility)) if on]
    return shlex.join([*words, "-o", args.output])


def cmd_matrix(args: argparse.Namespace) -> int:
    """The `matrix` subcommand: the pipeline file, every config validated first."""
    arches: list[Arch | None] = [None]
    if args.arch:
        try:
            arches = [Arch(a.strip()) for a in args.arch.split(",") if a.strip()]
        except ValueError as exc:
            raise BadInput(f"--arch: {exc}; known: {', '.join(Arch)}") from None
    modes: tuple[str, ...] | None = None
    if args.test != "none":
        modes = tuple(str(m) for m in parse_modes(args.test.split(",")))
    images = []
    for name in args.configs:
        for arch in arches:
            config = configfile.load(Path(name), {"architecture": str(arch) if arch else None})
            preflight.check_bootable(config)
            images.append(matrix.MatrixImage(name, config.name, config.codename,
                                             config.architecture, tuple(config.formats)))
    try:
        text = matrix.pipeline(images, test_modes=modes, emulate=args.emulate,
                               reproducibility=args.reproducibility,
                               command_line=matrix_command_line(args))
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    write_atomic(Path(args.output), text)
    print(f"deblive: wrote {args.output}: {len(images)} image(s)", file=sys.stderr)
    return ExitCode.OK


def cmd_publish(args: argparse.Namespace) -> int:
    """The `publish` subcommand: the release tree from build output directories."""
    log = BuildLog()
    result = tree.publish(args.outdirs, args.output, force=args.force, sign_key=args.sign_key,
                          gnupg_home=args.gnupg_home, runner=Runner(log))
    log.info(f"release tree {result.release}: {len(result.images)} image(s)")
    return ExitCode.OK
