"""A config's validation errors in words: the file, the key and what is allowed."""

from __future__ import annotations

import typing

from pydantic import BaseModel, ValidationError


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts) or "(top level)"


def describe(exc: ValidationError, where: str, root: type[BaseModel]) -> str:
    """One line per problem: the file, the key (a.b[0].c) and what is allowed."""
    lines = []
    for err in exc.errors():
        key = _key_path(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        expected = err.get("ctx", {}).get("expected")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key; allowed keys here: {', '.join(_allowed_keys(err['loc'], root))}"
        elif err["type"] in ("literal_error", "enum") and expected:
            msg = f"{err['input']!r} is not allowed; allowed: {expected}"
        lines.append(f"{where}: {key}: {msg}")
    return "\n".join(lines)


def _allowed_keys(loc: tuple[int | str, ...], root: type[BaseModel]) -> list[str]:
    model = root
    for item in loc[:-1]:
        field = model.model_fields.get(str(item))
        annotation = field.annotation if field else None
        # `Installer | None`, `tuple[Language, ...]`: the model inside.
        inner = [a for a in typing.get_args(annotation) if a not in (type(None), Ellipsis)]
        if len(inner) == 1:
            annotation = inner[0]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return [k for k in model.model_fields if k != "source"]
