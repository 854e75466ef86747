"""Where an image's packages come from: Debian's archive layout and its snapshot service."""

from __future__ import annotations

import datetime as dt
from typing import Final

from deblive.model.text import MIRROR_RE, SNAPSHOT_RE, full

SNAPSHOT_FORMAT: Final = "%Y%m%dT%H%M%SZ"


def default_security_mirror(apt_mirror: str) -> str:
    """Debian's layout puts the security archive beside the main one: .../debian-security."""
    if apt_mirror.endswith("/debian"):
        return apt_mirror + "-security"
    return apt_mirror.rsplit("/", 1)[0] + "/debian-security"


def check_snapshot(value: str) -> str:
    """A snapshot time as the service names them (20261101T000000Z), a real date."""
    full(SNAPSHOT_RE, value, "must be a snapshot time such as 20261101T000000Z")
    try:
        dt.datetime.strptime(value, SNAPSHOT_FORMAT)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid date and time") from None
    return value


def check_snapshot_service(url: str | None, snapshot: object) -> str | None:
    """snapshot_url: needed with a snapshot (deblive names no service of its own)."""
    if url is None:
        if snapshot is not None:
            raise ValueError("not set, and snapshot needs it: the URL of Debian's "
                             "snapshot service, or of a copy of your own")
        return None
    full(MIRROR_RE, url, "must be an http://, https:// or file:// URL without spaces")
    return url.rstrip("/")


def snapshot_mirror(service: str, archive: str, time: str) -> str:
    """service/archive/<archive>/<time>: the archive (debian, debian-security) at time."""
    return f"{service.rstrip('/')}/archive/{archive}/{time}"


def snapshot_epoch(time: str) -> int:
    when = dt.datetime.strptime(time, SNAPSHOT_FORMAT).replace(tzinfo=dt.UTC)
    return int(when.timestamp())
