"""The builder guest's only way out: an HTTP proxy to the build's mirrors and nothing else.

The builder VM's network is qemu's user network with restrict=on: the guest
reaches nothing, not even the host's own 127.0.0.1 services at 10.0.2.2,
except through one guestfwd rule. That rule runs this module for every
connection the guest opens to the proxy address, with the connection on
standard input and output (`guestfwd=tcp:IP:PORT-cmd:python3 -m
deblive.buildervm.proxy --allow HOST:PORT ...`). It serves exactly one client
connection:

* a plain request for http://HOST[:PORT]/... is forwarded when HOST:PORT is
  one of the allowed mirrors, with "Connection: close" both ways (apt then
  opens a new connection per request, which it handles);
* CONNECT HOST:443 (an https mirror) is tunnelled when allowed;
* anything else gets "403 Forbidden" naming the host, and the connection ends.

The guest names the mirror's host; this process resolves and connects.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, TextIO
from urllib.parse import urlsplit

MAX_HEADER_LINES = 100
MAX_LINE = 8192
HOP_HEADERS = ("connection", "keep-alive", "proxy-connection", "proxy-authorization", "te",
               "trailer", "upgrade")
TIMEOUT = 60.0


class Refused(Exception):
    """The request is not one the proxy forwards (status and reason for the client)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def allowed_endpoint(url: str) -> tuple[str, int] | None:
    """(host, port) of a mirror URL the proxy should allow, None for file:// ones."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = 443 if parts.scheme == "https" else 80
    return parts.hostname.lower(), parts.port or default


def _read_line(stream: BinaryIO) -> bytes:
    line = stream.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise Refused(431, "request line too long")
    return line


def read_request(stream: BinaryIO) -> tuple[str, str, list[tuple[str, str]]] | None:
    """(method, target, headers) of the next request, None at the end of the connection."""
    line = _read_line(stream)
    if not line:
        return None
    words = line.decode("latin-1").split()
    if len(words) != 3 or not words[2].startswith("HTTP/1."):
        raise Refused(400, "not an HTTP/1 request")
    headers: list[tuple[str, str]] = []
    for _ in range(MAX_HEADER_LINES):
        raw = _read_line(stream).decode("latin-1").rstrip("\r\n")
        if not raw:
            return words[0], words[1], headers
        name, sep, value = raw.partition(":")
        if not sep:
            raise Refused(400, "bad header line")
        headers.append((name.strip(), value.strip()))
    raise Refused(431, "too many header lines")


def _target(method: str, target: str, allowed: set[tuple[str, int]]) -> tuple[str, int, str]:
    """(host, port, path) the request goes to, or Refused."""
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        endpoint = (host.strip("[]").lower(), int(port) if port.isdigit() else 0)
        path = ""
    else:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            raise Refused(400, "a proxy request needs an absolute http:// URL")
        endpoint = (parts.hostname.lower(), parts.port or 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if endpoint not in allowed:
        raise Refused(403, f"{endpoint[0]}:{endpoint[1]} is not a mirror of this build")
    if method not in ("GET", "HEAD", "CONNECT"):
        raise Refused(405, f"{method} is not allowed")
    return endpoint[0], endpoint[1], path


def _refuse(out: BinaryIO, status: int, reason: str) -> None:
    body = f"deblive builder proxy: {reason}\n".encode()
    out.write(f"HTTP/1.1 {status} Refused\r\nContent-Type: text/plain\r\n"
              f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    out.flush()


def _tunnel(upstream: socket.socket, inp: BinaryIO, out: BinaryIO) -> None:
    """Copy bytes both ways until either side closes (CONNECT)."""
    in_fd, up_fd = inp.fileno(), upstream.fileno()
    while True:
        ready, _, _ = select.select([in_fd, up_fd], [], [], TIMEOUT)
        if not ready:
            return
        if up_fd in ready:
            data = upstream.recv(65536)
            if not data:
                return
            out.write(data)
            out.flush()
        if in_fd in ready:
            data = os.read(in_fd, 65536)
            if not data:
                return
            upstream.sendall(data)


def _copy(reply: BinaryIO, out: BinaryIO, length: int | None) -> None:
    """length bytes of reply to out; None: until the server closes."""
    while length is None or length > 0:
        chunk = reply.read(65536 if length is None else min(length, 65536))
        if not chunk:
            return
        out.write(chunk)
        if length is not None:
            length -= len(chunk)


def _copy_chunked(reply: BinaryIO, out: BinaryIO) -> None:
    """A chunked body, as it is, up to and including its last (empty) chunk."""
    while True:
        size_line = reply.readline(MAX_LINE)
        out.write(size_line)
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (line := reply.readline(MAX_LINE)) not in (b"\r\n", b"\n", b""):
                out.write(line)  # trailers
            out.write(b"\r\n")
            return
        _copy(reply, out, size + 2)  # the data and its CRLF


def _forward(upstream: socket.socket, method: str, host: str, port: int, path: str,
             headers: Iterable[tuple[str, str]], out: BinaryIO) -> None:
    """One request to the mirror; its response back whole (framed by its own length),
    with "Connection: close" so the client opens a new connection for the next one."""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}" + ("" if port == 80 else f":{port}")]
    head += [f"{k}: {v}" for k, v in headers if k.lower() not in (*HOP_HEADERS, "host")]
    head.append("Connection: close")
    upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    reply = upstream.makefile("rb")
    status = reply.readline(MAX_LINE)
    out.write(status)
    length: int | None = None
    chunked = False
    while (line := reply.readline(MAX_LINE)) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name in HOP_HEADERS:
            continue
        if name == "content-length" and value.strip().isdigit():
            length = int(value.strip())
        if name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        out.write(line)
    out.write(b"Connection: close\r\n\r\n")
    code = status.split(b" ", 2)[1:2]
    if method == "HEAD" or code in ([b"204"], [b"304"]):
        pass
    elif chunked:
        _copy_chunked(reply, out)
    else:
        _copy(reply, out, length)
    out.flush()


def serve(inp: BinaryIO, out: BinaryIO, allowed: set[tuple[str, int]],
          log: TextIO | None = None) -> None:
    """Serve one client connection (one request: every answer closes it); one line
    per request in log, if given."""
    method = target = "-"

    def note(what: str) -> None:
        if log is not None:
            log.write(f"{time.strftime('%H:%M:%S')} {what}: {method} {target}\n")
            log.flush()

    try:
        request = read_request(inp)
        if request is None:
            return
        method, target, headers = request
        host, port, path = _target(method, target, allowed)
        note("forwarded")
        try:
            upstream = socket.create_connection((host, port), timeout=TIMEOUT)
        except OSError as exc:
            raise Refused(502, f"cannot reach {host}:{port}: {exc}") from None
        with upstream:
            if method == "CONNECT":
                out.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                out.flush()
                _tunnel(upstream, inp, out)
            else:
                _forward(upstream, method, host, port, path, headers, out)
    except Refused as exc:
        note(f"refused ({exc.status} {exc})")
        _refuse(out, exc.status, str(exc))
    except (OSError, ValueError) as exc:
        note(f"failed ({exc!r})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m deblive.buildervm.proxy")
    parser.add_argument("--allow", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument("--log", type=Path, help="append a line per request to this file")
    args = parser.parse_args(argv)
    allowed = set()
    for item in args.allow:
        host, _, port = item.rpartition(":")
        allowed.add((host.lower(), int(port)))
    if args.log is None:
        serve(sys.stdin.buffer, sys.stdout.buffer, allowed)
    else:
        with args.log.open("a", encoding="utf-8") as log:
            serve(sys.stdin.buffer, sys.stdout.buffer, allowed, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
