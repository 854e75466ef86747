"""`deblive build --vm`: the whole build inside a throwaway VM of the target release.

As debian-cd runs its live builds (the seed, point 4): the outer VM is made
for the release being built, has root of its own, and is gone afterwards.
Here that VM boots the cached builder image (buildervm.image) directly with:

- the builder disk with snapshot=on: nothing the build does to it survives;
- a fresh sparse work disk, formatted inside, deleted afterwards;
- 9p shares (buildervm.shares): the config's directories read-only at the
  host's own paths; a fresh output and result directory and the guests'
  own package cache writable, mapped into extended attributes;
- qemu's user network with restrict=on: the guest reaches nothing of the
  host or the world but an HTTP proxy (buildervm.proxy) that forwards to the
  build's mirrors only;
- qemu's seccomp sandbox.

KVM where it works; a KVM that fails is detected within seconds and the VM
is restarted under TCG (vm.accel.with_kvm_fallback). The guest's console is
the build's own output and is kept as logs/builder-console.log; it is shown
as plain text, never as markup. The results are taken back by name and
checked (buildervm.control) before they are published.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deblive.apt.archive import check_mirror
from deblive.build import publish
from deblive.buildervm import control, image, shares
from deblive.buildervm.proxy import allowed_endpoint
from deblive.core.errors import DebliveError
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.host import deletion, distroinfo, preflight, workbase
from deblive.host.hostapt import host_architecture
from deblive.model.config import ImageConfig
from deblive.vm.accel import AccelDecision, AccelRequest, AccelSelector, with_kvm_fallback
from deblive.vm.command import DirectKernel, Disk, UserNetwork, VMSpec
from deblive.vm.errors import VMExited
from deblive.vm.machine import Machine

PROXY_ADDRESS = "10.0.2.100"
PROXY_PORT = 3128
MARKERS = ("deblive: ", "warning: ", "error: ", "deblive-builder: ")


class BuilderVMError(DebliveError):
    pass


@dataclass(frozen=True)
class VMOptions:
    outdir: Path
    workdir: Path
    cache: Path
    force: bool = False
    keep_workdir: bool = False
    make_iso: bool = True
    verbose: bool = False
    accel: AccelRequest = AccelRequest.AUTO
    memory_mib: int = 4096
    smp: int = field(default_factory=lambda: os.cpu_count() or 2)
    disk_gib: int = 40
    timeout: float = 6 * 3600
    rebuild_builder: bool = False


@dataclass
class RunOutcome:
    status: int | None  # the guest's build status, None when it never wrote one
    accel: str
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class RunDir:
    """WORKDIR-vm: the run's private directory (0700) and what lies in it."""

    root: Path

    @property
    def ctl(self) -> Path:
        return self.root / "ctl"  # written by the host, read-only to the guest

    @property
    def result(self) -> Path:
        return self.root / "result"  # the guest's status and failed logs

    @property
    def out(self) -> Path:
        return self.root / "out"  # the inner build's published results

    @property
    def taken(self) -> Path:
        return self.root / "taken"  # results the host took back and checked

    @property
    def failed(self) -> Path:
        return self.root / "failed"  # a failed inner build's logs, taken back

    @property
    def console(self) -> Path:
        return self.root / "console.log"

    @property
    def log(self) -> Path:
        return self.root / "builder.log"

    @property
    def proxy_log(self) -> Path:
        return self.root / "proxy.log"  # what the guest asked the outside world for

    @property
    def disk(self) -> Path:
        return self.root / "work.img"

    def fresh(self) -> None:
        for name in ("ctl", "result", "out", "taken", "failed", "console.log", "builder.log",
                     "proxy.log", "work.img"):
            deletion.remove_tree(self.root / name)
        for name in ("ctl", "result", "out"):
            (self.root / name).mkdir(mode=0o700)


def proxy_rule(config: ImageConfig, log: Path) -> str:
    """The guestfwd rule: connections to the proxy address run this proxy, the mirrors and
    the config's repositories allowed."""
    urls = [config.mirror or "", config.build_security_mirror,
            *(repo.uri for repo in config.repositories)]
    allowed = sorted({e for e in map(allowed_endpoint, urls) if e is not None})
    command = [sys.executable, "-m", "deblive.buildervm.proxy", "--log", str(log)]
    for host, port in allowed:
        command += ["--allow", f"{host}:{port}"]
    return f"tcp:{PROXY_ADDRESS}:{PROXY_PORT}-cmd:{shlex.join(command)}"


def vm_spec(img: image.BuilderImage, run: RunDir, config: ImageConfig, cache: Path,
            decision: AccelDecision, options: VMOptions) -> VMSpec:
    """The builder VM: direct kernel boot, builder disk (snapshot), work disk, shares,
    the proxy the only way out."""
    arch = img.architecture
    append = (f"root=/dev/vda rw console={arch.serial_tty},115200 init={image.INIT_PATH} "
              "loglevel=4 panic=-1")
    all_shares = [s for s, _ in shares.run_shares(run.ctl, run.result, run.out, cache)]
    all_shares += shares.config_shares(config)
    return VMSpec(
        arch=arch, accel=decision.accel, name="deblive-builder", memory_mib=options.memory_mib,
        smp=options.smp, display=False,
        direct_kernel=DirectKernel(img.kernel, img.initrd, append),
        disks=(Disk(img.rootfs, snapshot=True), Disk(run.disk, scratch=True)),
        shares=tuple(all_shares),
        network=UserNetwork(restrict=True, guestfwd=(proxy_rule(config, run.proxy_log),)),
    )


def write_control(run: RunDir, config: ImageConfig, inner: control.InnerCommand,
                  cache: Path) -> None:
    mounts = [(s, path) for s, path in shares.run_shares(run.ctl, run.result, run.out, cache)
              if s.tag != "dlctl"]
    mounts += [(s, str(s.path)) for s in shares.config_shares(config)]
    proxy = f"http://{PROXY_ADDRESS}:{PROXY_PORT}/"
    env = {"http_proxy": proxy, "https_proxy": proxy}
    argv = inner.argv(shares.GUEST_OUT, shares.GUEST_CACHE, shares.GUEST_WORK)
    control.write_control(run.ctl, mounts, argv, env, shares.GUEST_CTL)


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


def _run_vm(spec: VMSpec, run: RunDir, runner: Runner, silence: float | None,
            timeout: float) -> RunOutcome:
    """One VM run to its end (it powers off); KvmFailure when KVM broke."""
    deletion.remove_tree(run.result / "status")
    console = _Console(runner.log)
    with Machine(spec, runner, run.console, run.root) as vm:
        try:
            while True:
                time.sleep(0.5)
                console.feed(vm.text)
                try:
                    vm.check_alive(silence)  # a KVM that broke: KvmFailure
                except VMExited:
                    break  # the guest powered off: its status tells the rest
                if vm.elapsed > timeout:
                    return RunOutcome(None, str(spec.accel), vm.elapsed,
                                      f"timed out after {timeout:.0f} s")
        finally:
            console.feed(vm.text)
            console.flush()
        detail = " / ".join(vm.stderr_text.strip().splitlines()[-3:])
        return RunOutcome(None, str(spec.accel), vm.elapsed, detail)


@contextlib.contextmanager
def _scratch_disk(path: Path, gib: int) -> Iterator[None]:
    with path.open("wb") as disk:
        disk.truncate(gib << 30)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def check_host(config: ImageConfig, options: VMOptions) -> None:
    """Tools, the config's files and the mirror, before a VM is started (exit 2). The
    package set is resolved in the guest, with the release's own apt."""
    qemu = host_architecture().qemu
    assert qemu is not None
    for tool, package in ((qemu.binary, qemu.package), ("mke2fs", "e2fsprogs"),
                          ("mmdebstrap", "mmdebstrap")):
        if shutil.which(tool) is None:
            raise shares.ShareError(f"the builder VM needs {tool} (package {package})")
    preflight.check_paths(config)
    check_mirror(config)
    publish.check_outdir(options.outdir, options.force)


def build_in_vm(config: ImageConfig, inner: control.InnerCommand, options: VMOptions,
                log: BuildLog) -> RunOutcome:
    """Run the build in a builder VM; publishes its checked results, or raises."""
    check_host(config, options)
    shares.config_shares(config)  # refuses shares that would hide the guest's system
    guest_cache = options.cache / "vm-cache"
    guest_cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    codename = image.builder_codename(config.codename, distroinfo.load())
    assert config.mirror is not None
    run = RunDir(options.workdir)
    with workbase.workdir_lock(run.root):
        if not run.root.exists():
            run.root.mkdir(mode=0o700)
        run.fresh()
        (run.root / workbase.MARKER).write_text(f"{os.getpid()}\n")
        log.open(run.log)
        runner = Runner(log)
        if codename != config.codename:
            log.info(f"{config.codename} is built in a {codename} builder (its Python is too "
                     "old for deblive)")
        img = image.ensure(codename, config.mirror, options.cache, log, runner,
                           rebuild=options.rebuild_builder)
        write_control(run, config, inner, guest_cache)
        host = host_architecture()
        selector = AccelSelector(options.accel, runner, host)
        log.info(f"builder VM accelerator: {selector.get().accel} ({selector.get().reason})")
        with log.stage("builder-vm"), _scratch_disk(run.disk, options.disk_gib):
            outcome = with_kvm_fallback(
                selector,
                lambda decision, silence: _run_vm(
                    vm_spec(img, run, config, guest_cache, decision, options), run, runner,
                    silence, options.timeout),
                log, "the builder VM",
            )
        outcome.status = control.read_status(run.result)
        log.info(f"builder VM ran {outcome.seconds:.0f} s under {outcome.accel}")
        return _conclude(outcome, run, config, options, log)


def _conclude(outcome: RunOutcome, run: RunDir, config: ImageConfig, options: VMOptions,
              log: BuildLog) -> RunOutcome:
    if outcome.status == 0:
        files = control.take_results(run.out, run.taken, config.image_basename, options.make_iso,
                                     config.formats, config.architecture,
                                     config.devicetree is not None)
        log.close()
        shutil.copyfile(run.console, run.taken / "logs" / "builder-console.log")
        shutil.copyfile(run.log, run.taken / "logs" / "builder.log")
        publish.publish_results(files[:-1], run.taken / "logs", files[-1], options.outdir)
        if not options.keep_workdir:
            workbase.remove(run.root)
        return outcome
    if outcome.status is None:
        raise BuilderVMError(
            f"the builder VM ended without a build result ({outcome.detail or 'no status'}); "
            f"its console is in {run.console}"
        )
    control.take_failed_logs(run.result, run.failed)
    error = BuilderVMError(
        f"the build in the builder VM failed (status {outcome.status}); its console is in "
        f"{run.console}, the build's logs in {run.failed}"
    )
    error.exit_code = outcome.status if outcome.status in (1, 2) else 1
    raise error
