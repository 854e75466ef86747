"""The command line's grammar: every command, option and help text."""

from __future__ import annotations

import argparse
from pathlib import Path

from deblive import __version__
from deblive.boottest.modes import BootMode
from deblive.cli import commands
from deblive.model.arch import Arch


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="image config (YAML); default: the embedded default")
    p.add_argument("--suite", help="override the config's suite")
    p.add_argument("--arch", help="override the config's architecture")
    p.add_argument("--mirror", help="override the build mirror")
    p.add_argument("--apt-mirror", help="override the mirror written into the image")
    p.add_argument("--hook", help="override the customisation hook")


def _add_build(sub: argparse._SubParsersAction[_Parser]) -> None:
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
    layout = p.add_mutually_exclusive_group()
    layout.add_argument("--flat", dest="layout", action="store_const", const="flat",
                        help="one squashfs, for releases (overrides squashfs.layout)")
    layout.add_argument("--layered", dest="layout", action="store_const", const="layered",
                        help="the cached base and a layer on top, for fast rebuilds "
                        "(overrides squashfs.layout)")
    p.add_argument("--no-cache", action="store_true",
                   help="a layered build makes its base anew and does not store it")
    p.add_argument("--tree", choices=("auto", "ram", "disk"), default="auto",
                   help="where the image tree is built: in RAM (a tmpfs, faster; copied to "
                   "the work tree if the build fails), on disk, or auto: in RAM when the "
                   "plan's installed size fits easily in the memory available (default)")
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
    p.set_defaults(func=commands.cmd_build)


def _add_test(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "test", help="boot an ISO in qemu (BIOS, UEFI, Secure Boot; CD and USB) and check it",
        description="Boot IMAGE.iso headless in qemu in each mode, log in on the serial "
        "console and check sudo, the locked root, the firmware mode, Secure Boot and "
        "systemd's state. The architecture and the live user come from the build's "
        "boot-entries.json beside the ISO. Exit status: 0 all passed, 1 a failure, "
        "2 bad input.",
    )
    p.add_argument("iso", type=Path, metavar="IMAGE.iso|OUTDIR/netboot")
    p.add_argument("--mode", action="append", metavar="MODE",
                   help=f"mode to test (repeatable or comma list; default: all medium "
                   "modes, for a netboot directory all pxe modes): "
                   f"{', '.join(BootMode)}")
    p.add_argument("--user", help="live user (default: the build's, from boot-entries.json)")
    p.add_argument("--password-file", metavar="FILE",
                   help=f"the live user's password (default: ${commands.PASSWORD_ENV}, "
                   "else the --config's, else 'live')")
    p.add_argument("--passphrase-file", metavar="FILE",
                   help="the encrypted persistence partition's passphrase, typed at "
                   f"live-boot's prompt (default: ${commands.PASSPHRASE_ENV}, else the "
                   "--config's)")
    p.add_argument("--config", help="the image's config: its user's password (and "
                   "persistence passphrase)")
    p.add_argument("--arch", choices=[str(a) for a in Arch.bootable()],
                   help="the ISO's architecture (default: from boot-entries.json)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="seconds to the login prompt (default: 300 with TCG, 120 with KVM; "
                   "times 4 for an arm64 ISO on an x86 host)")
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="modes in parallel")
    p.add_argument("--screenshot", action="store_true",
                   help="save a PNG of each boot menu screen")
    p.add_argument("--output", type=Path, metavar="DIR",
                   help="serial logs, screenshots, results.json (default: <iso dir>/test-<name>)")
    p.add_argument("--memory", type=int, default=2048, metavar="MiB", help="guest RAM")
    p.add_argument("--expect", action="append", default=[], metavar="COMMAND",
                   help="a shell command that must exit 0 in the booted system, run as the "
                   "live user after the built-in checks (repeatable)")
    p.add_argument("--persistence", action="store_true",
                   help="a disk image (.img) with persistence: boot a writable copy twice "
                   "from USB in each USB mode; a file written in the first boot must be "
                   "there in the second")
    p.set_defaults(func=commands.cmd_test)


def make_parser() -> argparse.ArgumentParser:
    # No abbreviations: --password must not silently mean --password-file.
    parser = argparse.ArgumentParser(
        prog="deblive", description="Build bootable Debian live images and prove that they boot.",
        allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"deblive {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    _add_build(sub)

    p = sub.add_parser("validate", help="check a config without touching the system",
                       description="Validate a config file (and the files it names) and exit.")
    _add_config_options(p)
    p.add_argument("--network", action="store_true",
                   help="also check that the mirror carries the suite and architecture")
    p.add_argument("--show", action="store_true",
                   help="print the config with defaults filled (the password masked)")
    p.add_argument("--no-iso", action="store_true",
                   help="for a squashfs-only build: the architecture need not boot")
    p.set_defaults(func=commands.cmd_validate)

    p = sub.add_parser("clean", help="remove leftover work trees of dead builds",
                       description="Remove a work tree (or, without WORKDIR, every one "
                       "under the default work base) that no running build holds, "
                       "refusing trees with mounts below them.")
    p.add_argument("workdir", nargs="?", metavar="WORKDIR",
                   help="work tree to remove (default: all idle ones under /var/tmp/deblive)")
    p.set_defaults(func=commands.cmd_clean)

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
    p.set_defaults(func=commands.cmd_plan)

    p = sub.add_parser("metapackage", help="build <name>-live-task, the image's package set",
                       description="Build a metapackage (Architecture: all) whose Depends "
                       "are the config's tasks and extras, with dpkg-deb.")
    _add_config_options(p)
    p.add_argument("-o", "--output", default=".", help="output directory (default: .)")
    p.set_defaults(func=commands.cmd_metapackage)

    p = sub.add_parser("cache", help="list or prune the base trees of layered builds",
                       description="The base cache: one squashfs per set of inputs "
                       "(release, mirror indexes, package versions, the config's keys "
                       "before the hook).")
    p.add_argument("--cache-dir", help="the cache (default: /var/cache/deblive)")
    cache_sub = p.add_subparsers(dest="cache_command", required=True, metavar="ACTION",
                                 parser_class=_Parser)
    cp = cache_sub.add_parser("list", help="entries, sizes, age and what each was built from")
    cp.add_argument("--cache-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    cp.set_defaults(func=commands.cmd_cache_list)
    cp = cache_sub.add_parser("prune", help="remove the least recently used entries")
    cp.add_argument("--cache-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    cp.add_argument("--max-size", default="0", metavar="SIZE",
                    help="keep at most this much (bytes, or with K, M, G; default 0: all "
                    "entries no build is using)")
    cp.set_defaults(func=commands.cmd_cache_prune)

    p = sub.add_parser("schema", help="print the config's JSON schema",
                       description="Print the JSON schema of image config files.")
    p.set_defaults(func=commands.cmd_schema)
    _add_test(sub)

    p = sub.add_parser("matrix", help="write a GitLab CI pipeline for the image matrix",
                       description="Write a GitLab CI pipeline (.gitlab-ci.yml) for a "
                       "repository of image configs: one build job per config and "
                       "architecture on a runner tagged 'deblive' and that architecture, a "
                       "boot-test job per image, optionally a second build compared by "
                       "checksum, and a publish job making the release tree. The same "
                       "inputs give the same file.")
    p.add_argument("configs", nargs="+", metavar="CONFIG",
                   help="config files, as the repository names them (relative paths)")
    p.add_argument("--arch", metavar="LIST",
                   help="comma list of architectures (default: each config's own)")
    p.add_argument("--test", metavar="MODES", default="bios-cd,uefi-usb",
                   help="boot-test modes per image (default: bios-cd,uefi-usb; 'none': "
                   "no boot tests)")
    p.add_argument("--emulate", action="store_true",
                   help="build and test every architecture on amd64 runners (qemu-user, TCG)")
    p.add_argument("--reproducibility", action="store_true",
                   help="a second build of each image, compared by sha256 (diffoscope's "
                   "report kept on a difference)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the pipeline file to write, e.g. .gitlab-ci.yml")
    p.set_defaults(func=commands.cmd_matrix)

    p = sub.add_parser("publish", help="merge build outputs into a release tree",
                       description="Merge the output directories of builds (and their "
                       "boot tests) into a release tree laid out like Debian's cdimage: "
                       "<arch>/iso-hybrid/ with the images, SHA256SUMS and SHA512SUMS per "
                       "directory, one report.json and an index.html. Exit 2: an output "
                       "directory without a complete report, two images of one name, or a "
                       "checksum that does not match.")
    p.add_argument("outdirs", nargs="+", type=Path, metavar="OUTDIR")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="RELEASE")
    p.add_argument("--sign-key", metavar="KEYID",
                   help="clearsign the checksum files with this GnuPG key (SHA*SUMS.asc)")
    p.add_argument("--gnupg-home", type=Path, metavar="DIR", help="GnuPG home for --sign-key")
    p.add_argument("--force", action="store_true", help="replace an existing release tree")
    p.set_defaults(func=commands.cmd_publish)

    p = sub.add_parser("serve", help="serve a netboot tree over HTTP (tests and small labs)",
                       description="Serve OUTDIR/netboot read-only over HTTP until Ctrl-C, "
                       "so live-boot's fetch= can download the squashfs. For tests and small "
                       "labs: a site serves the tree with its own DHCP, TFTP and web "
                       "servers (see the README's dnsmasq example).")
    p.add_argument("tree", type=Path, metavar="OUTDIR/netboot")
    p.add_argument("--port", type=int, help="default: the port of the tree's netboot.url")
    p.add_argument("--bind", default="0.0.0.0", metavar="ADDRESS",
                   help="address to listen on (default: all)")
    p.set_defaults(func=commands.cmd_serve)
    return parser
