"""A distribution's own software, made in the test: .deb files built with dpkg-deb,
a signed apt archive (apt-ftparchive, a throwaway gpg key) and an HTTP server on
127.0.0.1 that serves it while a build reads it."""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import subprocess
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path


def make_deb(dest: Path, name: str, version: str, *, depends: str = "",
             files: dict[str, str] | None = None, arch: str = "all") -> Path:
    """A small .deb (owned by root in its data) with these files."""
    root = Path(tempfile.mkdtemp(prefix=f"deb-{name}-", dir=dest))
    (root / "DEBIAN").mkdir()
    control = textwrap.dedent(f"""\
        Package: {name}
        Version: {version}
        Architecture: {arch}
        Maintainer: deblive tests <tests@example.org>
        Description: deblive test package {name}
        """)
    if depends:
        control += f"Depends: {depends}\n"
    (root / "DEBIAN" / "control").write_text(control)
    for rel, text in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    out = dest / f"{name}_{version}_{arch}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(out)],
                   check=True, capture_output=True)
    shutil.rmtree(root)
    return out


@contextlib.contextmanager
def gnupg_home() -> Iterator[Path]:
    """A throwaway GnuPG home with one signing key (short path: the agent's socket)."""
    home = Path(tempfile.mkdtemp(prefix="dl-test-gpg-", dir="/tmp"))
    try:
        subprocess.run(["gpg", "--batch", "--quiet", "--homedir", str(home), "--passphrase", "",
                        "--quick-gen-key", "deblive test archive", "ed25519", "sign", "never"],
                       check=True, capture_output=True)
        yield home
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                       capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def export_key(home: Path, dest: Path, *, armour: bool = True) -> Path:
    key = subprocess.run(["gpg", "--batch", "--homedir", str(home), "--export",
                          *(["--armor"] if armour else [])], check=True,
                         capture_output=True).stdout
    dest.write_bytes(key)
    return dest


def make_archive(root: Path, debs: list[Path], home: Path | None, *, suite: str,
                 arch: str) -> Path:
    """A Debian-style archive in root: pool/, dists/<suite>/main/binary-<arch>/Packages,
    Release signed into InRelease with home's key (unsigned without one)."""
    pool = root / "pool" / "main"
    pool.mkdir(parents=True)
    for deb in debs:
        shutil.copy(deb, pool)
    binary = root / "dists" / suite / "main" / f"binary-{arch}"
    binary.mkdir(parents=True)
    packages = subprocess.run(["apt-ftparchive", "packages", "pool"], cwd=root, check=True,
                              capture_output=True, text=True).stdout
    (binary / "Packages").write_text(packages)
    options = [f"-oAPT::FTPArchive::Release::{k}={v}" for k, v in {
        "Origin": "deblive-test", "Label": "deblive-test", "Suite": suite, "Codename": suite,
        "Architectures": arch, "Components": "main"}.items()]
    release = subprocess.run(["apt-ftparchive", *options, "release", f"dists/{suite}"],
                             cwd=root, check=True, capture_output=True, text=True).stdout
    (root / "dists" / suite / "Release").write_text(release)
    if home is not None:
        subprocess.run(["gpg", "--batch", "--homedir", str(home), "--clearsign", "--output",
                        str(root / "dists" / suite / "InRelease"),
                        str(root / "dists" / suite / "Release")], check=True, capture_output=True)
    return root


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """root over HTTP on 127.0.0.1 (a free port) while the block runs; its URL."""
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
