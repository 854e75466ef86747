"""A stand-in for Debian's snapshot service on 127.0.0.1: /archive/debian/<time>/ and
/archive/debian-security/<time>/ answered from the host's own mirrors (read from the
host's apt sources at run time), every path asked for recorded."""

from __future__ import annotations

import contextlib
import http.server
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

from deblive.host import hostapt
from deblive.model.mirrors import default_security_mirror


@dataclass
class StandIn:
    url: str
    time: str
    requests: list[str] = field(default_factory=list)


Handler = type[http.server.BaseHTTPRequestHandler]


def _handler(upstream: dict[str, str], stand_in: StandIn) -> Handler:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            stand_in.requests.append(self.path)
            parts = self.path.split("/", 4)  # "", archive, debian, <time>, rest
            base = upstream.get(parts[2]) if len(parts) == 5 and parts[1] == "archive" else None
            if base is None or parts[3] != stand_in.time:
                self.send_error(404)
                return
            try:
                with urllib.request.urlopen(f"{base}/{parts[4]}", timeout=60) as answer:
                    self.send_response(200)
                    length = answer.headers.get("Content-Length")
                    if length:
                        self.send_header("Content-Length", length)
                    self.end_headers()
                    shutil.copyfileobj(answer, self.wfile)
            except urllib.error.HTTPError as exc:
                self.send_error(exc.code)

    return Handler


@contextlib.contextmanager
def snapshot_stand_in(time: str) -> Iterator[StandIn]:
    host = hostapt.host_defaults()
    assert host.mirror, "the host's apt sources name no Debian mirror"
    mirror = host.mirror.rstrip("/")
    upstream = {"debian": mirror,
                "debian-security": (host.security_mirror or default_security_mirror(mirror)
                                    ).rstrip("/")}
    stand_in = StandIn("", time)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream, stand_in))
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stand_in
    finally:
        server.shutdown()
        server.server_close()
