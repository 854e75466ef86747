"""Sizes in the config: whole numbers with an IEC unit (512MiB, 4GiB), one parser for all.

A bare number is refused (bytes or megabytes? people guess both ways), and so
are SI units (MB, GB): the unit says exactly how many bytes are meant.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import BeforeValidator, PlainSerializer

UNITS: Final = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
SIZE_RE: Final = re.compile(r"([0-9]{1,15})\s?(B|KiB|MiB|GiB|TiB)")


def parse_size(value: object) -> int:
    """Bytes of "512MiB" (an int passes as bytes only from code, not from YAML text)."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"{value!r} is not a size: write it with an IEC unit, "
                         "e.g. 512MiB or 4GiB")
    match = SIZE_RE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a size: a whole number and one of "
                         f"{', '.join(UNITS)}, e.g. 512MiB or 4GiB")
    return int(match[1]) * UNITS[match[2]]


def format_size(size: int) -> str:
    """The largest unit that divides size: 536870912 -> 512MiB."""
    for unit, factor in sorted(UNITS.items(), key=lambda kv: -kv[1]):
        if size % factor == 0 and size >= factor:
            return f"{size // factor}{unit}"
    return f"{size}B"


# A config size: parsed from text, held as bytes, written back with its unit.
Size = Annotated[int, BeforeValidator(parse_size), PlainSerializer(format_size, return_type=str)]
