"""Safe YAML reading and one-line validation messages shared by config and recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ml.errors import ConfigError, MLError


def read_yaml(path: Path, error: type[MLError] = ConfigError, label: str | None = None) -> Any:
    """Parse a YAML file with the safe loader; errors name the file and the line."""
    label = label or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{label}: file not found") from None
    except OSError as exc:
        raise error(f"{label}: cannot read ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = exc.problem or exc.context or "invalid YAML"
        raise error(f"{label}: YAML syntax error at {where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise error(f"{label}: invalid YAML: {exc}") from None


def format_validation_error(exc: ValidationError, label: str) -> str:
    """`file: a.b.c: what was expected (got X)` for the first error, and how many more."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
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
        msg = f"{msg} (got {first['input']!r})"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{label}: {loc}: {msg}{more}"
