"""One HTTP GET with bounded retries, for the few files deblive fetches itself.

apt fetches packages; deblive only reads a suite's InRelease before a build
(is the mirror there, does it carry the suite) and the installer images.
Transient faults (refused or reset connections, timeouts, HTTP 5xx) are
retried a bounded number of times with a doubling delay; a 4xx is an answer,
not a fault, and is raised at once. http_proxy and https_proxy in the
environment are honoured (urllib's default).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from deblive.core.errors import DebliveError

RETRIES = 2
RETRY_DELAY = 1.0


class HttpStatusError(DebliveError):
    """The server answered with an error status (404 and the like)."""

    def __init__(self, url: str, code: int) -> None:
        self.url = url
        self.code = code
        super().__init__(f"{url}: HTTP {code}")


class UnreachableError(DebliveError):
    """No answer at all, after the retries."""

    def __init__(self, url: str, reason: object, attempts: int) -> None:
        self.url = url
        self.reason = reason
        self.attempts = attempts
        super().__init__(f"{url}: {reason} (tried {attempts} times)")


def get(url: str, *, timeout: float = 20.0, retries: int | None = None,
        delay: float | None = None) -> bytes:
    """GET url (http, https or file); HttpStatusError or UnreachableError on failure."""
    retries = RETRIES if retries is None else retries
    delay = RETRY_DELAY if delay is None else delay
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == retries:
                raise HttpStatusError(url, exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            if attempt == retries:
                raise UnreachableError(url, getattr(exc, "reason", exc), retries + 1) from None
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover
