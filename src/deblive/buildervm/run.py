"""`deblive build --vm`: the whole build inside a throwaway VM of the target release.

As debian-cd runs its live builds (the seed, point 4): the outer VM is made
for the release being built, has root of its own, and is gone afterwards.
Here that VM boots the cached builder image (builderimage.py) directly
(kernel and initramfs given to qemu, no boot loader) with:

- the builder disk with snapshot=on: nothing the build does to it survives;
- a fresh sparse work disk, formatted inside, deleted afterwards (kept on
  failure only with --keep-workdir, for debugging);
- 9p shares of the host's directories at the host's own paths: the config's
  directory and the hook's (read-only), the output directory and the package
  cache (read-write). Paths in the config, on the command line and in the
  messages are therefore the same inside and outside;
- the host's apt sources and distro-info (copies, through DEBLIVE_APT_ETC and
  DEBLIVE_DISTRO_INFO) so the guest resolves mirrors and suite names exactly
  as the host did;
- qemu's user network: the mirror is reached through the host.

KVM where it works; a KVM that fails (here: "KVM internal error", or a guest
that stays silent) is detected within seconds and the VM is restarted under
TCG, which is said in the log. The guest's console is the build's own output
and is kept as logs/builder-console.log.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from deblive.build.pipeline import check_outdir, workdir_lock
from deblive.buildervm import image as builderimage
from deblive.core import interrupt
from deblive.core.log import BuildLog
from deblive.core.runner import DebliveError, Runner
from deblive.host import hostapt
from deblive.host import workbase as clean_mod
from deblive.model import bootmenu, suites
from deblive.model.config import ImageConfig
from deblive.vm import qemu

GUEST_SCRATCH = "/var/tmp/deblive-builder"
GUEST_WORK = GUEST_SCRATCH + "/work"
GUEST_CTL = "/run/deblive-ctl"  # where builder-init.sh mounts the control share
# Directories a share must not hide in the guest: the builder's own system.
GUEST_SYSTEM = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/var/lib", "/opt/deblive",
                "/proc", "/sys", "/dev", "/run", GUEST_SCRATCH)
KVM_SILENCE = 30.0  # seconds a KVM guest may stay silent before KVM counts as broken
MARKERS = ("deblive: ", "warning: ", "error: ", "deblive-builder: ")


class BuilderVMError(DebliveError):
    exit_code = 1


class ShareError(DebliveError):
    exit_code = 2


@dataclass(frozen=True)
class Share:
    """A host directory mounted in the guest at the same path."""

    tag: str
    path: Path
    writable: bool

    def fsdev_args(self, index: int) -> list[str]:
        path = str(self.path).replace(",", ",,")
        model = "passthrough" if self.writable else "none"
        readonly = "" if self.writable else ",readonly=on"
        return [
            "-fsdev", f"local,id=fs{index},path={path},security_model={model}{readonly}",
            "-device", f"virtio-9p-pci,fsdev=fs{index},mount_tag={self.tag}",
        ]


@dataclass
class VMOptions:
    outdir: Path
    workdir: Path
    cache: Path
    force: bool = False
    keep_workdir: bool = False
    make_iso: bool = True
    verbose: bool = False
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    memory_mib: int = 4096
    smp: int = field(default_factory=lambda: os.cpu_count() or 2)
    disk_gib: int = 40
    timeout: float = 6 * 3600
    rebuild_builder: bool = False


@dataclass
class InnerCommand:
    """What the guest runs: the same `deblive build`, with host-resolved inputs."""

    config: Path | None
    overrides: dict[str, str] = field(default_factory=dict)
    make_iso: bool = True
    force: bool = False
    verbose: bool = False

    def argv(self, outdir: Path, cache: Path) -> list[str]:
        argv = ["deblive", "build"]
        if self.config is not None:
            argv.append(str(self.config))
        for option, value in self.overrides.items():
            argv += [f"--{option}", value]
        argv += ["-o", str(outdir), "--workdir", GUEST_WORK, "--cache-dir", str(cache)]
        if not self.make_iso:
            argv.append("--no-iso")
        if self.force:
            argv.append("--force")
        if self.verbose:
            argv.append("--verbose")
        return argv


def _hides_system(path: Path) -> bool:
    text = str(path)
    return any(
        text == sysdir or sysdir.startswith(text.rstrip("/") + "/") or text.startswith(sysdir + "/")
        for sysdir in GUEST_SYSTEM
    ) or text == "/"


def plan_shares(config: ImageConfig, outdir: Path, cache: Path,
                hook_override: Path | None = None) -> list[Share]:
    """Every host directory the guest needs, parents before children, none hiding its system."""
    wanted: list[tuple[Path, bool, str]] = []
    if config.source is not None:
        wanted.append((config.base_dir.resolve(), False, "the config's directory"))
    for path, what in ((config.hook_path, "hook"), (config.splash_path, "boot.splash"),
                       (config.preseed_path, "installer.preseed"),
                       (config.installer_directory, "installer.directory"),
                       (hook_override, "--hook")):
        if path is None:
            continue
        path = path.resolve()
        directory = path if path.is_dir() else path.parent
        wanted.append((directory, False, what))
    wanted.append((outdir.resolve(), True, "the output directory"))
    wanted.append((cache.resolve(), True, "the package cache"))
    chosen: dict[Path, bool] = {}
    for directory, writable, what in wanted:
        if _hides_system(directory):
            raise ShareError(
                f"{what}: {directory} cannot be shared with the builder VM at the same path "
                "(it would hide the builder's own system); move it elsewhere"
            )
        # A directory inside one already shared with the same access is covered.
        if any(directory.is_relative_to(p) and (w or not writable) for p, w in chosen.items()):
            continue
        chosen[directory] = chosen.get(directory, False) or writable
    ordered = sorted(chosen.items(), key=lambda item: len(item[0].parts))
    return [Share(f"dl{i}", path, writable) for i, (path, writable) in enumerate(ordered)]


def qemu_argv(image: builderimage.BuilderImage, scratch: Path, ctl: Path, shares: Sequence[Share],
              accel: str, memory_mib: int, smp: int) -> list[str]:
    """The builder VM: direct kernel boot, builder disk (snapshot), work disk, 9p, user net."""
    profile = qemu.arch_profile(image.architecture)
    console = bootmenu.serial_tty(image.architecture)
    append = (f"root=/dev/vda rw console={console},115200 init={builderimage.INIT_PATH} "
              "loglevel=4 panic=-1")
    argv = [profile.binary, "-name", "deblive-builder", "-nodefaults", "-no-user-config",
            "-machine", profile.machine, "-accel", accel, "-m", str(memory_mib), "-smp", str(smp)]
    if accel == "kvm":
        argv += ["-cpu", "host"]
    elif image.architecture != "amd64":
        argv += ["-cpu", "max"]
    argv += [
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", append,
        "-drive", f"file={image.rootfs},if=virtio,format=raw,snapshot=on",
        "-drive", f"file={scratch},if=virtio,format=raw,cache=unsafe,discard=unmap",
        "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,romfile=",
        "-device", "virtio-rng-pci",
        "-display", "none", "-chardev", "stdio,id=serial0,signal=off",
        "-serial", "chardev:serial0", "-no-reboot",
    ]
    argv += Share("dlctl", ctl, True).fsdev_args(0)
    for index, share in enumerate(shares, start=1):
        argv += share.fsdev_args(index)
    return argv


def write_control(ctl: Path, shares: Sequence[Share], inner: InnerCommand, outdir: Path,
                  cache: Path) -> None:
    """The files the guest's init reads: mounts, env, run."""
    ctl.mkdir(parents=True, exist_ok=True)
    (ctl / "mounts").write_text("".join(
        f"{s.tag} {s.path} {'rw' if s.writable else 'ro'}\n" for s in shares
    ))
    apt = ctl / "apt"
    for name in ("sources.list", "sources.list.d"):
        source = hostapt.APT_ETC / name
        if source.is_file():
            apt.mkdir(exist_ok=True)
            shutil.copyfile(source, apt / name)
        elif source.is_dir():
            shutil.copytree(source, apt / name, dirs_exist_ok=True)
    # The guest sees this directory at GUEST_CTL.
    env = {"DEBLIVE_APT_ETC": f"{GUEST_CTL}/apt"}
    distro_info = suites.DEBIAN_CSV
    if distro_info.is_file():
        shutil.copyfile(distro_info, ctl / "debian.csv")
        env["DEBLIVE_DISTRO_INFO"] = f"{GUEST_CTL}/debian.csv"
    if "SOURCE_DATE_EPOCH" in os.environ:
        env["SOURCE_DATE_EPOCH"] = os.environ["SOURCE_DATE_EPOCH"]
    (ctl / "env").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
    (ctl / "run").write_text("exec " + shlex.join(inner.argv(outdir, cache)) + "\n")
    for stale in ("status", "status.new"):
        (ctl / stale).unlink(missing_ok=True)


class _Console:
    """Copies the guest's console into the build log line by line; build lines shown."""

    def __init__(self, log: BuildLog) -> None:
        self.log = log
        self.seen = 0
        self.partial = ""

    def feed(self, text: str) -> None:
        new = text[self.seen:]
        self.seen = len(text)
        lines = (self.partial + new).split("\n")
        self.partial = lines.pop()
        for raw in lines:
            line = raw.rstrip("\r")
            if line.startswith(MARKERS):
                self.log.info(f"vm | {line}")
            else:
                self.log.output(line)

    def flush(self) -> None:
        if self.partial:
            self.log.output(self.partial)
            self.partial = ""


@dataclass
class RunOutcome:
    status: int | None  # the guest's build status, None when it never wrote one
    accel: str
    seconds: float
    detail: str = ""


def _run_once(argv: list[str], console_log: Path, log: BuildLog, accel: str, timeout: float
              ) -> tuple[RunOutcome, bool]:
    """One VM run; returns (outcome, kvm_broke)."""
    log.debug("$ " + shlex.join(argv))
    console_log.parent.mkdir(parents=True, exist_ok=True)
    with console_log.open("ab") as raw:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        serial = qemu.StreamBuffer(proc.stdout, raw)
        errors = qemu.StreamBuffer(proc.stderr)
        console = _Console(log)
        started = time.monotonic()
        try:
            while proc.poll() is None:
                time.sleep(0.5)
                console.feed(serial.text)
                elapsed = time.monotonic() - started
                if accel == "kvm":
                    if qemu.KVM_ERROR_TEXT in errors.text:
                        return RunOutcome(None, accel, elapsed, "KVM internal error"), True
                    if serial.first_output is None and elapsed > KVM_SILENCE:
                        return RunOutcome(None, accel, elapsed,
                                          f"no console output in {KVM_SILENCE:.0f} s"), True
                if elapsed > timeout:
                    return RunOutcome(None, accel, elapsed,
                                      f"timed out after {timeout:.0f} s"), False
        finally:
            qemu.stop(proc)
            serial.join()
            errors.join()
            console.feed(serial.text)
            console.flush()
        seconds = time.monotonic() - started
        detail = " / ".join(errors.text.strip().splitlines()[-3:])
        return RunOutcome(None, accel, seconds, detail), False


def _accel(requested: Literal["auto", "kvm", "tcg"], log: BuildLog) -> qemu.AccelDecision:
    decision = qemu.decide_accel(requested, qemu.kvm_device_usable(), qemu.probe_kvm)
    log.info(f"builder VM accelerator: {decision.accel} ({decision.reason})")
    return decision


@contextlib.contextmanager
def _scratch_disk(path: Path, gib: int, keep: bool) -> Iterator[Path]:
    with path.open("wb") as disk:
        disk.truncate(gib << 30)
    ok = False
    try:
        yield path
        ok = True
    finally:
        if ok or not keep:
            path.unlink(missing_ok=True)


def build_in_vm(config: ImageConfig, inner: InnerCommand, options: VMOptions,
                log: BuildLog, hook_override: Path | None = None) -> RunOutcome:
    """Run the build in a builder VM; raises BuilderVMError unless it succeeded."""
    profile = qemu.arch_profile(builderimage.host_architecture())
    for tool, package in ((profile.binary, profile.package), ("mke2fs", "e2fsprogs"),
                          ("mmdebstrap", "mmdebstrap")):
        if shutil.which(tool) is None:
            raise ShareError(f"the builder VM needs {tool} (package {package})")
    check_outdir(options.outdir, options.force)
    options.outdir.mkdir(parents=True, exist_ok=True)
    options.cache.mkdir(parents=True, exist_ok=True)
    shares = plan_shares(config, options.outdir, options.cache, hook_override)
    codename = builderimage.builder_codename(config.codename)
    assert config.mirror is not None
    run_dir = options.workdir
    with workdir_lock(run_dir):
        for stale in ("ctl", "console.log", "builder.log"):
            target = run_dir / stale
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        # Marked as deblive's, so `deblive clean` may remove what a dead run left.
        (run_dir / clean_mod.MARKER).write_text(f"{os.getpid()}\n")
        log.open(run_dir / "builder.log")
        runner = Runner(log)
        if codename != config.codename:
            log.info(f"{config.codename} is built in a {codename} builder (its Python is too old "
                     "for deblive)")
        image = builderimage.ensure(codename, config.mirror, options.cache, log, runner,
                                    rebuild=options.rebuild_builder)
        ctl = run_dir / "ctl"
        write_control(ctl, shares, inner, options.outdir.resolve(), options.cache.resolve())
        decision = _accel(options.accel, log)
        accel = decision.accel
        console_log = run_dir / "console.log"
        with log.stage("builder-vm"), _scratch_disk(run_dir / "work.img", options.disk_gib,
                                                    options.keep_workdir):
            while True:
                argv = qemu_argv(image, run_dir / "work.img", ctl, shares, accel,
                                 options.memory_mib, options.smp)
                outcome, kvm_broke = _run_once(argv, console_log, log, accel, options.timeout)
                if kvm_broke and options.accel == "auto":
                    log.warn(f"KVM failed in the builder VM ({outcome.detail}); "
                             "restarting it under TCG (slower)")
                    accel = "tcg"
                    (ctl / "status").unlink(missing_ok=True)
                    continue
                break
        status_file = ctl / "status"
        if status_file.is_file():
            outcome.status = int(status_file.read_text().strip() or 125)
        log.info(f"builder VM ran {outcome.seconds:.0f} s under {accel}")
        with interrupt.deferred():
            _keep_logs(run_dir, options.outdir, outcome)
        if outcome.status == 0:
            log.close()
            if not options.keep_workdir:
                _remove_run_dir(run_dir)
            return outcome
        if outcome.status is None:
            raise BuilderVMError(
                f"the builder VM ended without a build result ({outcome.detail or 'no status'}); "
                f"its console is in {console_log}"
            )
        error = BuilderVMError(
            f"the build in the builder VM failed (status {outcome.status}); its console is in "
            f"{console_log}, the build's logs in {ctl / 'failed'}"
        )
        error.exit_code = outcome.status if outcome.status in (1, 2) else 1
        raise error


def _remove_run_dir(run_dir: Path) -> None:
    """Only what a run puts there: a --workdir given by the user may hold more."""
    shutil.rmtree(run_dir / "ctl", ignore_errors=True)
    for name in ("console.log", "builder.log", "work.img", clean_mod.MARKER):
        (run_dir / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()


def _keep_logs(run_dir: Path, outdir: Path, outcome: RunOutcome) -> None:
    """On success the console joins the build's logs; on failure it stays in the run dir."""
    if outcome.status != 0:
        return
    logs = outdir / "logs"
    logs.mkdir(exist_ok=True)
    for name, target in (("console.log", "builder-console.log"),
                         ("builder.log", "builder.log")):
        source = run_dir / name
        if source.exists():
            tmp = logs / (target + ".tmp")
            shutil.copyfile(source, tmp)
            tmp.rename(logs / target)
