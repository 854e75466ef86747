"""What a config's text may hold: the characters each destination takes.

Every value is matched whole (fullmatch: a trailing newline is not "the
end"); free text is refused when it holds control or line-separator
characters, so no value can start a new line in a menu, a shell file or a
field of /etc/passwd.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator

Component = Literal["main", "contrib", "non-free", "non-free-firmware"]
Format = Literal["iso", "disk", "netboot"]
Compression = Literal["xz", "zstd", "lz4", "gzip", "lzo"]
SudoPolicy = Literal["nopasswd", "password", "none"]
PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9.+-]+")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9.+_-]{0,62}")
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
HOSTNAME_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
VOLUME_ID_RE = re.compile(r"[A-Za-z0-9_.+ -]{1,32}")
LOCALE_RE = re.compile(r"[a-zA-Z]{2,3}(_[A-Z]{2})?(\.[A-Za-z0-9-]+)?(@[a-z]+)?|C(\.UTF-8)?")
MIRROR_RE = re.compile(r"(https?|file)://[!-~]+")
HOST_RE = re.compile(r"[A-Za-z0-9.:-]{1,253}")  # a name, an IPv4 or an IPv6 address
LABEL_RE = re.compile(r"[A-Za-z0-9_-]{1,16}")
SNAPSHOT_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
ARCHIVE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")
VERSION_RE = re.compile(r"[0-9][A-Za-z0-9.+~-]*")
KEYBOARD_RE = re.compile(r"[a-z]{2,8}(\([a-z0-9_-]+\))?")
# A netboot URL becomes live-boot's fetch= on both loaders' kernel command lines:
# scheme, host, port and path only, in characters no loader or shell interprets.
NETBOOT_URL_RE = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%+-]+)*/?")
TIMEZONE_RE = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")
SHELL_RE = re.compile(r"(/[A-Za-z0-9._+-]+)+")
MAINTAINER_RE = re.compile(r"[^<>]+ <[^<>@\s]+@[^<>@\s]+>")
# Characters that separate fields of /etc/passwd (":") and GECOS subfields (",").
GECOS_SEPARATORS = ":,"


def plain_text(value: str, what: str = "text") -> str:
    """value unchanged if it holds no control or line-separator characters."""
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            raise ValueError(f"{what} must not contain control characters such as {char!r}")
    return value


def distinct_choices(values: tuple[str, ...], allowed: str, what: str) -> tuple[str, ...]:
    """A list of choices: at least one, none twice (formats, installer sources)."""
    if not values:
        raise ValueError(f"name at least one of {allowed}")
    if len(set(values)) != len(values):
        raise ValueError(f"each {what} at most once")
    return values


def full(regex: re.Pattern[str], value: str, message: str) -> str:
    if not regex.fullmatch(value):
        raise ValueError(message)
    return value


def _matching(regex: re.Pattern[str], message: str) -> AfterValidator:
    """A validator that takes a value only when regex matches it whole."""
    return AfterValidator(lambda value: full(regex, value, message))


def _package_name(value: str) -> str:
    return full(PACKAGE_RE, value, f"{value!r} is not a Debian package name")


def _group_name(value: str) -> str:
    return full(USER_RE, value, f"group {value!r} is not a valid group name")


def _timezone(value: str) -> str:
    if not TIMEZONE_RE.fullmatch(value) or ".." in value:
        raise ValueError("must be a tz database name such as UTC or Europe/Berlin")
    return value


DEVICETREE_RE = re.compile(r"/?[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*")


def _devicetree(value: str) -> str:
    parts = value.strip("/").split("/")
    if not DEVICETREE_RE.fullmatch(value) or ".." in parts or "." in parts:
        raise ValueError("must be a path inside the image (/usr/lib/linux-image-.../x.dtb) or "
                         "a file relative to this config: letters, digits, . _ + - and /")
    return value


def _task(value: str) -> str:
    if not value.startswith(("task-", "live-task-")) or not PACKAGE_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a task package (task-* or live-task-*)")
    return value


# Value types that several sections share: one definition, one message.
PackageName = Annotated[str, AfterValidator(_package_name)]
GroupName = Annotated[str, AfterValidator(_group_name)]
Timezone = Annotated[str, AfterValidator(_timezone)]
TaskName = Annotated[str, AfterValidator(_task)]
DevicetreePath = Annotated[str, AfterValidator(_devicetree)]
Keyboard = Annotated[str, _matching(KEYBOARD_RE, "must be an XKB layout such as us, de or fr")]
Hostname = Annotated[
    str, _matching(HOSTNAME_RE, "must be a host name label (letters, digits, -; at most 63)")
]
ImageName = Annotated[
    str,
    _matching(NAME_RE, "must start with a lower-case letter or digit, then a-z 0-9 . + _ -"),
]
SystemLocale = Annotated[str, _matching(LOCALE_RE, "must look like en_US.UTF-8 or C.UTF-8")]
VolumeId = Annotated[
    str, _matching(VOLUME_ID_RE, "must be 1 to 32 characters of A-Z a-z 0-9 _ . + - and space")
]


def locale_charset(locale: str) -> str:
    """The character set of a locale as locale.gen and debconf spell it (en_US.UTF-8 ->
    UTF-8); a locale named without one (de_DE) is taken as UTF-8, as the image's is."""
    return locale.split(".", 1)[1] if "." in locale else "UTF-8"
