"""Debian's archive keys, and checking a signed file against a keyring.

Signatures are never turned off: the mirror, the installer images and (with
the repositories to come) every archive deblive reads are checked against a
keyring before anything from them is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from deblive.core.errors import DebliveError
from deblive.core.runner import Runner

DEBIAN_ARCHIVE_KEYRING: Final = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class SignatureError(DebliveError):
    """A signed file does not verify with the keyring."""


def verify_clearsigned(runner: Runner, signed: bytes, keyring: Path) -> str:
    """The text gpgv found signed by a key in keyring (only the signed part)."""
    result = runner.run(
        ["gpgv", "--keyring", str(keyring), "--output", "-", "-"],
        input_data=signed, capture=True, quiet=True, check=False, stderr="capture",
        what="checking a signature",
    )
    if result.returncode != 0:
        detail = result.errors.strip().splitlines()[-1:] or ["?"]
        raise SignatureError(f"InRelease signature not valid with {keyring}: {detail[0]}")
    return result.output
