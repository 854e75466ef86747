"""What a VM's screen shows and what its keyboard types, without extra libraries.

qemu's screendump writes PPM (every version can); it is checked here and
written as PNG, the file people look at. Keys are qcodes (QMP send-key), so a
console without a serial line can still be typed on, on a US layout.
"""

from __future__ import annotations

import struct
import zlib
from collections import Counter


def parse_ppm(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, RGB bytes) of a binary P6 PPM with maxval 255."""
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while end < len(data) and not data[end : end + 1].isspace():
            end += 1
        if end == pos:
            raise ValueError("truncated PPM header")
        fields.append(data[pos:end])
        pos = end
    magic, width, height, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    if magic != b"P6" or maxval != 255:
        raise ValueError(f"unsupported PPM ({magic!r}, maxval {maxval})")
    pixels = data[pos + 1 : pos + 1 + width * height * 3]
    if len(pixels) != width * height * 3:
        raise ValueError("truncated PPM pixel data")
    return width, height, pixels


def count_colours(pixels: bytes, limit: int = 16) -> int:
    """Distinct RGB colours, counting stops at limit (we only ask "more than one?")."""
    seen: set[bytes] = set()
    for i in range(0, len(pixels), 3):
        seen.add(pixels[i : i + 3])
        if len(seen) >= limit:
            break
    return len(seen)


# Below this share of pixels off the commonest colour a screenshot shows nothing worth
# keeping: a cleared screen with a cursor; a menu or a page of text draws a few per cent.
BLANK_SHARE = 0.002


def drawn_share(pixels: bytes) -> float:
    """The share of pixels (sampled) not in the screen's commonest colour."""
    return 1.0 - pixel_stats(pixels)[1]


def encode_png(width: int, height: int, pixels: bytes) -> bytes:
    """An 8-bit RGB PNG (filter 0 on every row): enough for screenshots, no Pillow."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    stride = width * 3
    raw = b"".join(b"\x00" + pixels[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def pixel_stats(pixels: bytes, step: int = 7) -> tuple[int, float]:
    """(distinct colours, commonest colour's share) of RGB bytes, every step-th pixel."""
    counts = Counter(pixels[i : i + 3] for i in range(0, len(pixels) - 2, 3 * step))
    total = sum(counts.values())
    if not total:
        return 0, 1.0
    return len(counts), counts.most_common(1)[0][1] / total


_PLAIN_QCODES = {
    " ": "spc", "\n": "ret", "\t": "tab", "-": "minus", "=": "equal", "[": "bracket_left",
    "]": "bracket_right", ";": "semicolon", "'": "apostrophe", "`": "grave_accent",
    "\\": "backslash", ",": "comma", ".": "dot", "/": "slash",
}
_SHIFTED = {
    "!": "1", "@": "2", "#": "3", "$": "4", "%": "5", "^": "6", "&": "7", "*": "8", "(": "9",
    ")": "0", "_": "-", "+": "=", "{": "[", "}": "]", ":": ";", '"': "'", "~": "`",
    "|": "\\", "<": ",", ">": ".", "?": "/",
}


def char_qcodes(char: str) -> list[str]:
    """The qcodes (with shift where needed) that type char on a US keyboard."""
    if char.isascii() and (char.islower() or char.isdigit()):
        return [char]
    if char.isascii() and char.isupper():
        return ["shift", char.lower()]
    if char in _PLAIN_QCODES:
        return [_PLAIN_QCODES[char]]
    if char in _SHIFTED:
        return ["shift", *char_qcodes(_SHIFTED[char])]
    raise ValueError(f"cannot type {char!r} on a US keyboard")
