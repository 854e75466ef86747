"""index.html of a release tree: one self-contained page, a row per image.

Every string on the page comes from the builds' and boot tests' JSON, which
CI jobs wrote: the template escapes all of it (autoescape), and a result's
colour comes from a fixed set of classes, never from the text itself. The
date shown is the newest build's, not the clock's, so publishing the same
outputs twice writes the same page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2

from deblive.core.log import format_seconds

MIB = 1 << 20
NONE = "\u2013"  # an en dash: not known, not tested
RESULT_CLASSES = {"pass": "pass", "fail": "fail", "skipped": "skipped"}


@dataclass(frozen=True)
class ReleasedBoot:
    """One boot mode's outcome as published: the screenshot's release-relative path."""

    result: str
    seconds_to_login: float | None
    screenshot: str | None

    def to_json(self) -> dict[str, Any]:
        return {"result": self.result, "seconds_to_login": self.seconds_to_login,
                "screenshot": self.screenshot}


@dataclass(frozen=True)
class ReleasedImage:
    """One image of the release: what report.json and index.html say about it."""

    image: str  # <name>-<codename>-<arch>
    architecture: str
    name: str
    codename: str
    files: tuple[str, ...]  # release-relative, sorted
    build: dict[str, Any]  # the whole build report, as the build wrote it
    boot: dict[str, ReleasedBoot] = field(default_factory=dict)  # in the tests' order
    iso: str | None = None  # release-relative
    iso_bytes: int | None = None

    @property
    def passed(self) -> bool:
        """Every boot that ran passed (none ran: nothing failed)."""
        return all(b.result in ("pass", "skipped") for b in self.boot.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image, "architecture": self.architecture, "name": self.name,
            "suite": self.codename, "files": list(self.files), "passed": self.passed,
            "boot": {mode: b.to_json() for mode, b in self.boot.items()},
            "build": self.build,
        }


def newest_build(images: Sequence[ReleasedImage]) -> dt.datetime | None:
    """When the newest build finished (its report's "finished"), the page's date."""
    dates = []
    for image in images:
        value = image.build.get("finished")
        try:
            when = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            continue
        if when is not None:
            dates.append(when if when.tzinfo else when.replace(tzinfo=dt.UTC))
    return max(dates).astimezone(dt.UTC) if dates else None


def boot_modes(images: Sequence[ReleasedImage]) -> list[str]:
    """Every mode any image was tested in, in the order first seen."""
    return list(dict.fromkeys(mode for image in images for mode in image.boot))


def _size(size: int | None) -> str:
    if size is None:
        return NONE
    return f"{size / MIB:.1f} MiB" if size < 10 * MIB else f"{size / MIB:.0f} MiB"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _row(image: ReleasedImage, modes: Sequence[str]) -> dict[str, Any]:
    packages = image.build.get("packages")
    count = packages.get("count") if isinstance(packages, dict) else None
    seconds = _number(image.build.get("duration_seconds"))
    cells = []
    for mode in modes:
        boot = image.boot.get(mode)
        if boot is None:
            cells.append({"text": NONE, "cls": "none", "title": f"{mode}: not tested"})
            continue
        login = (f", login after {format_seconds(boot.seconds_to_login)}"
                 if boot.seconds_to_login is not None else "")
        cells.append({"text": boot.result, "cls": RESULT_CLASSES.get(boot.result, "other"),
                      "title": f"{mode}: {boot.result}{login}"})
    suite = image.build.get("suite")
    return {
        "image": image.image, "iso": image.iso, "architecture": image.architecture,
        "suite": suite if isinstance(suite, str) and suite != image.codename else None,
        "codename": image.codename, "size": _size(image.iso_bytes),
        "packages": str(count) if _number(count) is not None else NONE,
        "time": format_seconds(seconds) if seconds is not None else NONE,
        "cells": cells,
        "screens": [{"mode": mode, "src": b.screenshot}
                    for mode, b in image.boot.items() if b.screenshot is not None],
    }


TEMPLATE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.num { text-align: right; }
.pass { background: #c8efc8; }
.fail { background: #f5c0c0; }
.skipped { background: #f5ecbf; }
.other { background: #f5c0c0; font-style: italic; }
.none { color: #888; }
.screens img { border: 1px solid #999; margin: 0 0.3em 0.3em 0; }
.screens figure { display: inline-block; margin: 0; }
.screens figcaption { font-size: 0.8em; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p>{{ images | length }} image{{ "" if images | length == 1 else "s" }}; \
{% if not tested %}no boot tests{% elif passed %}every boot test passed\
{% else %}<strong class="fail">some boot tests failed</strong>{% endif %}.</p>
{% if generated %}<p>Generated from builds finished by {{ generated }}.</p>{% endif %}
<table>
<thead><tr><th>image</th><th>architecture</th><th>ISO size</th><th>packages</th>\
<th>build time</th>{% for mode in modes %}<th>{{ mode }}</th>{% endfor %}\
<th>boot menu</th></tr></thead>
<tbody>
{% for row in rows %}<tr>
<td>{% if row.iso %}<a href="{{ row.iso }}">{{ row.image }}</a>{% else %}{{ row.image }}\
{% endif %}{% if row.suite %} <small>({{ row.suite }})</small>{% endif %}</td>
<td>{{ row.architecture }}</td>
<td class="num">{{ row.size }}</td>
<td class="num">{{ row.packages }}</td>
<td class="num">{{ row.time }}</td>
{% for cell in row.cells %}<td class="{{ cell.cls }}" title="{{ cell.title }}">\
{{ cell.text }}</td>
{% endfor %}<td class="screens">{% for screen in row.screens %}<figure>\
<a href="{{ screen.src }}"><img src="{{ screen.src }}" alt="{{ row.image }}: {{ screen.mode }}" \
width="160" loading="lazy"></a><figcaption>{{ screen.mode }}</figcaption></figure>\
{% endfor %}</td>
</tr>
{% endfor %}</tbody>
</table>
</body>
</html>
"""


def render_index(images: Sequence[ReleasedImage], title: str = "deblive release") -> str:
    """The page, from the images in the order given (the release sorts them by name)."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    modes = boot_modes(images)
    generated = newest_build(images)
    return env.from_string(TEMPLATE).render(
        title=title, images=images, modes=modes,
        rows=[_row(image, modes) for image in images],
        tested=any(b.result != "skipped" for image in images for b in image.boot.values()),
        passed=all(image.passed for image in images),
        generated=generated.strftime("%Y-%m-%d %H:%M UTC") if generated else None,
    )
