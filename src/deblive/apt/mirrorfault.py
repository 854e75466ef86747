"""Naming mirror faults: which mirror, which URL or file, and what went wrong.

apt reports a bad mirror in lines that scroll past in hundreds of others
("Err:3 ...", "E: Failed to fetch ... Hash Sum mismatch", "W: GPG error: ...
BADSIG"). When a command fails with such lines, the build's error starts
with one plain sentence naming the mirror, the fault and the URL, followed by
the command's own report. Signature checks are never relaxed to get past a
fault: the fix is a good mirror, not a weaker apt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from deblive.core.errors import DebliveError
from deblive.core.runner import CommandError
from deblive.model.config import ImageConfig

# A URL, with the "<suite> InRelease" that apt writes after a mirror's base URL.
URL_RE = re.compile(r"(?:https?|file)://[^\s'\"]+(?: [^\s':]+ (?:InRelease|Release(?:\.gpg)?)\b)?")

# (what the user is told, words in apt's/mmdebstrap's output), most specific first.
FAULTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bad signature on the Release file", (
        "BADSIG", "signatures were invalid", "NO_PUBKEY", "EXPKEYSIG", "signature could not",
        "Signed file isn't valid", "not signed",
    )),
    ("missing Release file", ("does not have a Release file", "no longer has a Release file")),
    ("hash sum mismatch (corrupted or changing file)", (
        "Hash Sum mismatch", "File has unexpected size", "Hashes of expected file",
    )),
    ("file not found (HTTP 404)", ("404  Not Found", "404 Not Found")),
    ("mirror unreachable", (
        "Could not connect", "Unable to connect", "Connection refused", "Connection failed",
        "Temporary failure resolving", "Could not resolve", "Connection timed out",
    )),
)


class MirrorError(DebliveError):
    """The build mirror served something apt rejected (or nothing at all)."""


def diagnose(lines: Sequence[str]) -> tuple[str, str | None] | None:
    """(fault, URL or None) for apt output lines that show a mirror fault, else None."""
    for fault, words in FAULTS:
        for line in lines:
            if any(word in line for word in words):
                url = URL_RE.search(line)
                if url is None:
                    # "Err:3 URL" names the URL on the line before the reason.
                    index = list(lines).index(line)
                    for earlier in reversed(list(lines)[:index]):
                        url = URL_RE.search(earlier)
                        if url:
                            break
                return fault, url.group(0) if url else None
    return None


def explain(error: DebliveError, config: ImageConfig) -> DebliveError:
    """A MirrorError naming mirror, fault and URL if error shows a mirror fault.

    The exit status stays the original's: 2 when found before the build
    (preflight, plan), 1 when a build step failed on it.
    """
    if isinstance(error, MirrorError) or str(error).startswith(f"mirror {config.mirror}"):
        return error
    if isinstance(error, CommandError):
        lines = [*error.notable, *error.tail]
    else:
        lines = str(error).splitlines()
    found = diagnose(lines)
    if found is None:
        return error
    fault, url = found
    where = f": {url}" if url else ""
    explained = MirrorError(f"mirror {config.mirror}: {fault}{where}\n{error}")
    explained.exit_code = error.exit_code
    return explained
