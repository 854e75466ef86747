"""A small read-only HTTP server for one directory: a netboot tree's squashfs.

`deblive serve` and the PXE boot tests serve OUTDIR/netboot with it, so
live-boot's fetch= can download the squashfs. It is for tests and small labs:
no TLS, no ranges, no directory listings. It serves regular files only, and
only when their real path (symlinks followed) lies inside the directory, so
a symlink put into the tree cannot expose anything else of the host. Every
answer is recorded (path, status, bytes sent), which is how a boot test
proves the squashfs really came over HTTP.
"""

from __future__ import annotations

import http.server
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

CHUNK = 1 << 20


@dataclass(frozen=True)
class Served:
    path: str
    status: int
    bytes: int


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        found = self.server.resolve(path)
        if found is None:
            self.send_error(404)
            self.server.record(Served(path, 404, 0))
            return
        fd = os.open(found, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(fd).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            sent = self._copy(f) if body else 0
        self.server.record(Served(path, 200, sent))

    def _copy(self, source: BinaryIO) -> int:
        sent = 0
        try:
            while chunk := source.read(CHUNK):
                self.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sent

    def log_message(self, format: str, *args: object) -> None:
        if self.server.echo is not None:
            self.server.echo(f"{self.client_address[0]} {format % args}")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, address: tuple[str, int], prefix: str,
                 echo: Callable[[str], None] | None = None) -> None:
        self.root = Path(os.path.realpath(root))
        self.prefix = "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"
        self.echo = echo
        self.served: list[Served] = []
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    def resolve(self, url_path: str) -> Path | None:
        """The regular file url_path names inside the root, None for anything else."""
        if not url_path.startswith(self.prefix):
            return None
        url_path = url_path[len(self.prefix):]
        parts = [p for p in url_path.split("/") if p not in ("", ".")]
        if ".." in parts:
            return None
        real = Path(os.path.realpath(self.root.joinpath(*parts)))
        if real != self.root and self.root not in real.parents:
            return None
        try:
            return real if stat.S_ISREG(os.stat(real).st_mode) else None
        except OSError:
            return None

    def record(self, served: Served) -> None:
        with self._lock:
            self.served.append(served)


class FileServer:
    """Serves root at http://host:port/prefix (port 0: any free one), in a thread while
    in a with block, or in the caller's thread with serve_forever()."""

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0, prefix: str = "/",
                 echo: Callable[[str], None] | None = None) -> None:
        self._server = _Server(root, (host, port), prefix, echo)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def served(self) -> list[Served]:
        with self._server._lock:
            return list(self._server.served)

    def bytes_served(self, path: str) -> int:
        """Bytes sent in full-status answers for path (a URL path such as /live/x)."""
        return sum(s.bytes for s in self.served if s.path == path and s.status == 200)

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def __enter__(self) -> FileServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="deblive-fileserver")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
