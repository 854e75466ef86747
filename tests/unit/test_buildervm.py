"""Unit tests for the builder VM: its shares, control files, results, proxy and image recipe.

No VM is started; real builds in a VM are in tests/integration/test_buildervm.py and
tests/extended/test_buildervm.py (the hostile guest among them).
"""

from __future__ import annotations

import http.server
import io
import json
import os
import shlex
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from deblive.build.chroot import InitramfsDeferral
from deblive.buildervm import control, image, proxy, shares
from deblive.buildervm import run as buildervm
from deblive.core.files import sha256_file
from deblive.core.log import BuildLog
from deblive.core.runner import Runner
from deblive.host import distroinfo
from deblive.host.imagetree import ImageTree, TreeError
from deblive.model import config
from deblive.model.arch import Arch
from deblive.vm.accel import AccelDecision
from deblive.vm.command import Accel, build_command

from . import conftest

RUNNER = Runner(BuildLog())


def make_config(tmp_path: Path, **extra: object) -> config.ImageConfig:
    directory = tmp_path / "images"
    directory.mkdir(exist_ok=True)
    (directory / "hook.sh").write_text("#!/bin/sh\n")
    path = directory / "live.yaml"
    path.write_text("name: live\nsuite: bookworm\nhook: hook.sh\n")
    return conftest.load(path, dict(extra))


# -- shares


def test_config_shares_are_read_only_at_their_own_paths(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    found = shares.config_shares(cfg)
    assert [(s.path, s.writable) for s in found] == [(tmp_path / "images", False)]


def test_a_file_outside_the_config_directory_gets_its_own_read_only_share(
    tmp_path: Path
) -> None:
    other = tmp_path / "splashes"
    other.mkdir()
    (other / "s.png").write_bytes(b"x")
    cfg = make_config(tmp_path, boot={"splash": str(other / "s.png")})
    found = {s.path: s for s in shares.config_shares(cfg)}
    assert set(found) == {tmp_path / "images", other}
    assert not any(s.writable for s in found.values())
    assert len({s.tag for s in found.values()}) == 2


@pytest.mark.parametrize("directory", ["/", "/usr", "/etc/deblive", "/var", "/run/x"])
def test_shares_that_would_hide_the_builders_system_are_refused(
    tmp_path: Path, directory: str
) -> None:
    cfg = make_config(tmp_path)
    with pytest.raises(shares.ShareError, match="hide the builder's own system") as info:
        shares.config_shares(cfg, [(Path(directory) / "x.png", "boot.splash")])
    assert info.value.exit_code == 2


def test_the_runs_own_shares_write_only_fresh_directories(tmp_path: Path) -> None:
    run = shares.run_shares(tmp_path / "ctl", tmp_path / "res", tmp_path / "out", tmp_path / "c")
    assert [(s.tag, s.writable, path) for s, path in run] == [
        ("dlctl", False, shares.GUEST_CTL), ("dlres", True, shares.GUEST_RESULT),
        ("dlout", True, shares.GUEST_OUT), ("dlcache", True, shares.GUEST_CACHE),
    ]


# -- the command and the control files


def test_inner_command_forwards_options() -> None:
    inner = control.InnerCommand(Path("/srv/images/live.yaml"),
                                 {"suite": "trixie", "arch": "arm64"}, make_iso=False)
    argv = inner.argv(shares.GUEST_OUT, shares.GUEST_CACHE, shares.GUEST_WORK)
    assert argv[:3] == ["deblive", "build", "/srv/images/live.yaml"]
    assert argv[argv.index("--suite") + 1] == "trixie"
    assert argv[argv.index("--arch") + 1] == "arm64"
    assert argv[argv.index("-o") + 1] == shares.GUEST_OUT
    assert argv[argv.index("--workdir") + 1] == shares.GUEST_WORK
    assert "--no-iso" in argv and "--force" in argv and "--verbose" not in argv
    assert "--layered" not in argv and "--no-cache" not in argv
    layered = control.InnerCommand(None, {}, layout="layered", use_cache=False)
    argv = layered.argv(shares.GUEST_OUT, shares.GUEST_CACHE, shares.GUEST_WORK)
    assert argv[-2:] == ["--layered", "--no-cache"]


def test_control_files_name_shares_env_and_command(tmp_path: Path, fake_host_apt: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    cfg = make_config(tmp_path)
    run = buildervm.RunDir(tmp_path / "run")
    run.root.mkdir()
    run.fresh()
    inner = control.InnerCommand(cfg.source, {"suite": "bookworm"})
    buildervm.write_control(run, cfg, inner, tmp_path / "vm-cache")
    mounts = (run.ctl / "mounts").read_text().splitlines()
    assert mounts == [
        f"dlres {shares.GUEST_RESULT} rw", f"dlout {shares.GUEST_OUT} rw",
        f"dlcache {shares.GUEST_CACHE} rw", f"dlcfg0 {tmp_path / 'images'} ro",
    ]
    env = dict(line.split("=", 1) for line in (run.ctl / "env").read_text().splitlines())
    assert env["DEBLIVE_APT_ETC"] == f"{shares.GUEST_CTL}/apt"
    assert env["SOURCE_DATE_EPOCH"] == "1700000000"
    assert env["http_proxy"] == f"http://{buildervm.PROXY_ADDRESS}:{buildervm.PROXY_PORT}/"
    # The host's apt sources travel along, so the guest resolves the same mirror.
    assert (run.ctl / "apt" / "sources.list.d" / "debian.sources").read_text() == (
        fake_host_apt / "sources.list.d" / "debian.sources").read_text()
    argv = shlex.split((run.ctl / "run").read_text())
    assert argv[:4] == ["exec", "deblive", "build", str(cfg.source)]


def test_the_builder_vm_reaches_the_mirrors_only(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, mirror="http://m.invalid:8080/debian")
    img = image.BuilderImage(tmp_path / "img", "bookworm", Arch.AMD64)
    run = buildervm.RunDir(tmp_path / "run")
    spec = buildervm.vm_spec(img, run, cfg, tmp_path / "cache",
                             AccelDecision(Accel.TCG, "test"), buildervm.VMOptions(
                                 outdir=tmp_path / "out", workdir=run.root, cache=tmp_path))
    argv = build_command(spec)
    text = " ".join(argv)
    assert f"file={img.rootfs},if=virtio,format=raw,snapshot=on" in text
    assert f"init={image.INIT_PATH}" in argv[argv.index("-append") + 1]
    assert "security_model=passthrough" not in text
    assert f"path={run.ctl},security_model=none,readonly=on" in text
    assert f"path={run.out},security_model=mapped-xattr" in text
    netdev = argv[argv.index("-netdev") + 1]
    assert "restrict=on" in netdev and "guestfwd=tcp:10.0.2.100:3128-cmd:" in netdev
    assert "--allow m.invalid:8080" in netdev
    assert "-sandbox" in argv


def test_console_lines_of_the_build_are_shown_the_rest_logged(tmp_path: Path) -> None:
    log = BuildLog()
    log.open(tmp_path / "log")
    log.console.file = io.StringIO()
    console = buildervm._Console(log)
    text = "[    1.0] kernel line\r\ndeblive: stage [/x] bootstrap: start\r\nhalf"
    console.feed(text)
    console.feed(text + " line\n")
    console.flush()
    log.close()
    written = (tmp_path / "log").read_text()
    assert "| [    1.0] kernel line" in written
    assert "vm | deblive: stage [/x] bootstrap: start" in written
    assert "| half line" in written and written.count("kernel line") == 1
    assert "[/x]" in log.console.file.getvalue()  # guest text is never markup


# -- what comes back from the guest


@pytest.mark.parametrize(("text", "status"), [("0\n", 0), ("2", 2), ("125\n", 125)])
def test_status_is_one_short_number(tmp_path: Path, text: str, status: int) -> None:
    (tmp_path / "status").write_text(text)
    assert control.read_status(tmp_path) == status


@pytest.mark.parametrize("text", ["", "0; rm -rf /", "1e3", "-1", "0\n0\n", "9999"])
def test_a_bad_status_is_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / "status").write_text(text)
    with pytest.raises(control.GuestError):
        control.read_status(tmp_path)


def test_a_status_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("0\n")
    (tmp_path / "status").symlink_to(tmp_path / "secret")
    with pytest.raises(control.GuestError, match="regular file"):
        control.read_status(tmp_path)
    assert control.read_status(tmp_path / "none") is None


def guest_out(tmp_path: Path, **override: bytes) -> Path:
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    files = {"filesystem.squashfs": b"sq" * 100, "filesystem.packages": b"a\t1\n",
             "live-bookworm-amd64.iso": b"iso" * 100, "boot-entries.json": b"{}",
             "build.log": b"log\n", "live-bookworm-amd64.spdx.json": b"{}\n", **override}
    for name, data in files.items():
        (out / name).write_bytes(data)
    digests = {n: sha256_file(out / n) for n in files}
    report = {"result": "success", "outputs": [{"name": n, "sha256": d} for n, d in
                                                 digests.items()]}
    (out / "report.json").write_text(json.dumps(report))
    (out / "SHA256SUMS").write_text(f"{digests['live-bookworm-amd64.iso']}  "
                                    "live-bookworm-amd64.iso\n")
    (out / "logs" / "apt.log").write_text("apt\n")
    return out


def test_results_are_taken_by_name_and_checked(tmp_path: Path) -> None:
    out = guest_out(tmp_path)
    (out / "planted").write_text("ignored")
    files = control.take_results(out, tmp_path / "taken", "live-bookworm-amd64", make_iso=True)
    assert files[-1].name == "report.json"
    assert {f.name for f in files} == {
        "filesystem.squashfs", "filesystem.packages", "report.json", "build.log",
        "live-bookworm-amd64.iso", "SHA256SUMS", "boot-entries.json",
        "live-bookworm-amd64.spdx.json"}
    assert all((f.stat().st_mode & 0o777) == 0o644 for f in files)
    assert not (tmp_path / "taken" / "planted").exists()
    assert (tmp_path / "taken" / "logs" / "apt.log").read_text() == "apt\n"


def test_a_layered_builds_layer_and_module_are_taken_too(tmp_path: Path) -> None:
    out = guest_out(tmp_path, **{"layer.squashfs": b"ly" * 50,
                                 "filesystem.module": b"filesystem.squashfs\nlayer.squashfs\n"})
    files = control.take_results(out, tmp_path / "taken", "live-bookworm-amd64", make_iso=True)
    assert {"layer.squashfs", "filesystem.module"} <= {f.name for f in files}
    assert (tmp_path / "taken" / "layer.squashfs").read_bytes() == b"ly" * 50


def test_a_result_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("host")
    out = guest_out(tmp_path)
    (out / "build.log").unlink()
    (out / "build.log").symlink_to(secret)
    with pytest.raises(control.GuestError, match=r"build\.log .* not a regular file"):
        control.take_results(out, tmp_path / "taken", "live-bookworm-amd64", make_iso=True)
    assert secret.read_text() == "host"


def test_a_result_that_differs_from_the_report_is_refused(tmp_path: Path) -> None:
    out = guest_out(tmp_path)
    (out / "live-bookworm-amd64.iso").write_bytes(b"swapped")
    with pytest.raises(control.GuestError, match="does not match its report"):
        control.take_results(out, tmp_path / "taken", "live-bookworm-amd64", make_iso=True)


def test_a_missing_result_is_refused(tmp_path: Path) -> None:
    out = guest_out(tmp_path)
    (out / "filesystem.squashfs").unlink()
    with pytest.raises(control.GuestError, match=r"left no filesystem\.squashfs"):
        control.take_results(out, tmp_path / "taken", "live-bookworm-amd64", make_iso=True)


def test_failed_logs_are_taken_by_name(tmp_path: Path) -> None:
    failed = tmp_path / "result" / "failed"
    failed.mkdir(parents=True)
    (failed / "build.log").write_text("why it failed")
    (failed / "report.json").symlink_to("/etc/shadow")
    taken = control.take_failed_logs(tmp_path / "result", tmp_path / "kept")
    assert [p.name for p in taken] == ["build.log"]


# -- the proxy: the guest's only way out


class _Origin(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"served {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "keep-alive")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def origin() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def through_proxy(request: bytes, allowed: set[tuple[str, int]]) -> bytes:
    client, end = socket.socketpair()
    with client, end:
        client.sendall(request)
        client.shutdown(socket.SHUT_WR)
        with end.makefile("rb") as inp, end.makefile("wb") as out:
            proxy.serve(inp, out, allowed)
        end.shutdown(socket.SHUT_WR)
        return client.makefile("rb").read()


def test_the_proxy_forwards_to_an_allowed_mirror(origin: int) -> None:
    reply = through_proxy(
        f"GET http://127.0.0.1:{origin}/debian/dists/x/InRelease HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{origin}\r\nProxy-Connection: keep-alive\r\n\r\n".encode(),
        {("127.0.0.1", origin)})
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
    assert b"Connection: close" in head and b"keep-alive" not in head
    assert body == b"served /debian/dists/x/InRelease"


@pytest.mark.parametrize(("request_line", "status"), [
    ("GET http://127.0.0.1:{port}/secret HTTP/1.1", b"403"),  # the host's own services
    ("GET http://10.0.2.2:{port}/ HTTP/1.1", b"403"),
    ("CONNECT 127.0.0.1:22 HTTP/1.1", b"403"),
    ("POST http://m.invalid/debian HTTP/1.1", b"405"),
    ("GET /relative HTTP/1.1", b"400"),
    ("not http at all", b"400"),
])
def test_the_proxy_refuses_everything_else(origin: int, request_line: str, status: bytes) -> None:
    allowed = {("m.invalid", 80)}
    reply = through_proxy(request_line.format(port=origin).encode() + b"\r\n\r\n", allowed)
    assert reply.split(b" ", 2)[1] == status


def test_allowed_endpoints_of_mirror_urls() -> None:
    assert proxy.allowed_endpoint("http://m.invalid/debian") == ("m.invalid", 80)
    assert proxy.allowed_endpoint("https://M.invalid:8443/x") == ("m.invalid", 8443)
    assert proxy.allowed_endpoint("file:///srv/mirror") is None


# -- the builder image


def test_builder_release_is_the_targets_unless_its_python_is_too_old() -> None:
    releases = distroinfo.load()
    assert image.builder_codename("trixie", releases) == "trixie"
    assert image.builder_codename("bookworm", releases) == "bookworm"
    assert image.builder_codename("bullseye", releases) == image.OLDEST_BUILDER
    assert image.builder_codename("sid", releases) == "sid"


def test_guest_python_is_read_from_the_tree(tmp_path: Path) -> None:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/python3").symlink_to("python3.13")
    with ImageTree(tmp_path) as tree:
        assert image.guest_python(tree) == (3, 13)
    (tmp_path / "usr/bin/python3").unlink()
    with ImageTree(tmp_path) as tree, pytest.raises(image.BuilderImageError, match="python3"):
        image.guest_python(tree)


def test_pip_installs_wheels_for_the_guests_python_not_the_hosts(tmp_path: Path) -> None:
    argv = image.pip_target_argv(tmp_path, (3, 13), "x86_64", ["pydantic>=2.5,<3"])
    assert argv[argv.index("--python-version") + 1] == "3.13"
    assert "--only-binary=:all:" in argv and "cp313" in argv
    assert "manylinux2014_x86_64" in argv and argv[-1] == "pydantic>=2.5,<3"


def test_builder_bootstrap_has_the_build_tools_and_a_kernel(tmp_path: Path) -> None:
    argv = image.mmdebstrap_argv("trixie", Arch.AMD64, tmp_path / "tree",
                                 "http://mirror.invalid/debian")
    include = next(a for a in argv if a.startswith("--include=")).split("=", 1)[1].split(",")
    assert {"mmdebstrap", "squashfs-tools", "xorriso", "python3", "linux-image-amd64",
            "qemu-user-static"} <= set(include)
    assert argv[-3:] == ["trixie", str(tmp_path / "tree"), "http://mirror.invalid/debian"]
    assert "--skip=check/empty" in argv  # the sandbox binds the cache in beforehand
    assert not any(a.startswith(("--setup-hook", "--customize-hook")) for a in argv)


def test_cache_key_follows_release_and_code() -> None:
    assert image.cache_key("bookworm", Arch.AMD64) == image.cache_key("bookworm", Arch.AMD64)
    assert image.cache_key("bookworm", Arch.AMD64) != image.cache_key("trixie", Arch.AMD64)


def test_deblive_is_copied_into_the_tree_without_following_its_links(tmp_path: Path) -> None:
    source = tmp_path / "ours"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "mod.py").write_text("x = 1\n")
    os.symlink("mod.py", source / "pkg" / "alias.py")
    root = tmp_path / "tree"
    (root / "opt").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "opt" / "deblive").symlink_to(outside)  # planted by a package
    with ImageTree(root) as tree:
        # The planted link means the image's own /tmp/.../outside, which is not there.
        with pytest.raises(TreeError, match="/opt/deblive"):
            tree.copy_tree_in(source, "/opt/deblive/lib")
        tree.unlink("/opt/deblive")
        assert tree.copy_tree_in(source, "/opt/deblive/lib") == 1
    assert list(outside.iterdir()) == []
    assert (root / "opt/deblive/lib/pkg/mod.py").read_text() == "x = 1\n"
    assert os.readlink(root / "opt/deblive/lib/pkg/alias.py") == "mod.py"


def test_initramfs_is_made_for_each_kernel_with_modules_and_image(tmp_path: Path) -> None:
    for version in ("6.1.0-1-amd64", "6.1.0-2-amd64", "6.1.0-3-amd64"):
        (tmp_path / "lib/modules" / version).mkdir(parents=True)
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot/vmlinuz-6.1.0-1-amd64").write_text("")
    (tmp_path / "boot/vmlinuz-6.1.0-3-amd64").write_text("")
    with ImageTree(tmp_path) as tree:
        assert InitramfsDeferral(tree, RUNNER).kernels() == ["6.1.0-1-amd64", "6.1.0-3-amd64"]


def _netboot_out(tmp_path: Path) -> Path:
    from deblive.build.stages.netboot import tree_names

    out = guest_out(tmp_path, **{"live-bookworm-amd64.img": b"img" * 10})
    (out / "live-bookworm-amd64.iso").unlink()
    report = json.loads((out / "report.json").read_text())
    report["outputs"] = [o for o in report["outputs"] if not o["name"].endswith(".iso")]
    for name in tree_names(Arch.AMD64):
        path = out / "netboot" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
        report["outputs"].append({"name": f"netboot/{name}", "sha256": sha256_file(path)})
    (out / "report.json").write_text(json.dumps(report))
    return out


def test_a_netboot_tree_and_a_disk_image_come_back_by_name(tmp_path: Path) -> None:
    out = _netboot_out(tmp_path)
    (out / "netboot" / "planted.efi").write_text("ignored")
    files = control.take_results(out, tmp_path / "taken", "live-bookworm-amd64", True,
                                 ("disk", "netboot"), Arch.AMD64)
    names = {f.name for f in files}
    assert {"netboot", "live-bookworm-amd64.img"} <= names
    assert "live-bookworm-amd64.iso" not in names  # formats without iso need none
    taken = tmp_path / "taken" / "netboot"
    assert (taken / "pxelinux.cfg" / "default").read_text() == "pxelinux.cfg/default"
    assert (taken / "grub" / "grub.cfg").is_file() and not (taken / "planted.efi").exists()


def test_a_netboot_tree_through_a_guest_symlink_is_refused(tmp_path: Path) -> None:
    out = _netboot_out(tmp_path)
    elsewhere = tmp_path / "host-grub"
    (out / "netboot" / "grub").rename(elsewhere)
    (out / "netboot" / "grub").symlink_to(elsewhere)
    with pytest.raises(control.GuestError, match=r"left no netboot/grub/grub\.cfg"):
        control.take_results(out, tmp_path / "taken", "live-bookworm-amd64", True,
                             ("disk", "netboot"), Arch.AMD64)
    assert (elsewhere / "grub.cfg").is_file()
