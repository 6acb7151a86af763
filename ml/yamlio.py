"""YAML files through the hardened reader, and one-line validation messages shared by config
and recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ml.errors import ConfigError, MLError
from ml.textio import MAX_MESSAGE, elide, parse_yaml, read_text

MAX_YAML_BYTES = 1 << 20  # recipes and config files are a few kilobytes


def read_yaml(
    path: Path,
    error: type[MLError] = ConfigError,
    label: str | None = None,
    *,
    max_bytes: int = MAX_YAML_BYTES,
    string_keys: bool = True,
) -> Any:
    """A YAML file as data: a bounded regular file, then the bounded safe loader."""
    label = label or str(path)
    text = read_text(path, label, max_bytes=max_bytes, error=error)
    return parse_yaml(text, label, error=error, string_keys=string_keys)


def format_validation_error(exc: ValidationError, label: str, note: str = "") -> str:
    """`file: a.b.c: what was expected (got X)` for the first error, and how many more.

    `note` (e.g. which variable set the value) follows the first error's message."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = ".".join(elide(str(p), 60) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    msg = msg[0].lower() + msg[1:] if msg else msg
    if first["type"] == "value_error":
        msg = msg.removeprefix("value error, ")
        # "default: expected ..." from a validator names a sub-field: fold it into the path
        head, sep, rest = msg.partition(": ")
        if sep and head.replace("_", "").replace(".", "").isalnum():
            loc, msg = f"{loc}.{head}", rest
    elif first["type"] == "extra_forbidden":
        msg = "unknown key (not allowed here)"
    elif first["type"] == "missing":
        msg = "required key is missing"
    elif "input" in first and not isinstance(first["input"], dict | list):
        msg = f"{elide(msg, 120)} (got {elide(repr(first['input']), 60)})"
    note = f" ({note})" if note else ""
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return elide(f"{elide(label, 100)}: {loc}: {elide(msg, 160)}{note}{more}", MAX_MESSAGE)
