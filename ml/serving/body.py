"""The /predict body on its way in, and the 422 that answers a refused one.

In: the bytes must be UTF-8 (`textio.decode_text`; else FastAPI's 400) and JSON (else a 422
`json_invalid`). NaN and Infinity parse, so the field that holds one gets pydantic's
`finite_number`. An object with more fields than its model has (the request, or a record with
more than the model's features and entity keys) is refused before pydantic sees it, listing its
unknown fields as pydantic would (`extra_forbidden`): 100k unknown keys cost a lookup per known
field, not 100k error objects.

Out: a 422 lists at most MAX_ERRORS errors, each input, location part, message and context value
cut to a short preview, plus `error_count`: the answer stays a few KB whatever was sent.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ml.errors import ContractError
from ml.textio import decode_text, elide, unpaired_surrogate

MAX_ERRORS = 10  # errors listed in one 422; error_count says how many there were
REQUEST_FIELDS = frozenset({"records"})  # the request object's fields (schema.build_schemas)
_PREVIEW = 80  # characters of an input, or of a location part, shown in an error
_MESSAGE = 160  # characters of an error message


def checked_body_route(
    record_fields: frozenset[str],
    by_id: Callable[[dict[str, Any]], Coroutine[Any, Any, Response]] | None = None,
) -> type[APIRoute]:
    """The /predict route class: the body is read and checked here, before FastAPI validates
    it; a body naming entities or a context goes to `by_id` instead (no record schema for
    it). Content type and size are the Guard's, earlier."""

    class CheckedBodyRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            validate_and_call = super().get_route_handler()

            async def handler(request: Request) -> Response:
                checked = _ParsedRequest(request.scope, request.receive)
                data = await checked.body()
                if data:  # an empty body is FastAPI's "missing" error
                    checked.parsed = read_json(data)
                    parsed = checked.parsed
                    if by_id is not None and isinstance(parsed, dict) and _names_entities(parsed):
                        return await by_id(parsed)
                    errors, count = unknown_fields(checked.parsed, record_fields)
                    if count:
                        return invalid(errors, count)
                return await validate_and_call(checked)

            return handler

    return CheckedBodyRoute


def _names_entities(body: dict[str, Any]) -> bool:
    return "entities" in body or "context" in body


class _ParsedRequest(Request):
    """A request whose JSON body was parsed and checked already: FastAPI asks for it again."""

    parsed: Any = None

    async def json(self) -> Any:
        return self.parsed


class _DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are all different: with a duplicate, which value counts would be
    the parser's choice, so it is refused, as the project's reader refuses it in files."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return out


def read_json(data: bytes) -> Any:
    """The body as JSON: UTF-8 only (400 otherwise, as FastAPI answers), syntax errors as
    FastAPI's `json_invalid` 422."""
    try:
        text = decode_text(data, "request body", error=ContractError)
    except ContractError as exc:  # not UTF-8, or a NUL byte (never valid JSON either)
        raise HTTPException(400, "There was an error parsing the body") from exc
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
        if (problem := unpaired_surrogate(text, value)) is None:
            return value
        where = 0
    except _DuplicateKeyError as exc:
        where, problem = 0, f"duplicate key {str(exc)[:80]!r} (each key once)"
    except json.JSONDecodeError as exc:
        where, problem = exc.pos, exc.msg
    except RecursionError:
        where, problem = 0, "nested too deeply"
    except ValueError:  # an integer past Python's digit limit
        where, problem = 0, f"a number has more than {sys.get_int_max_str_digits():,} digits"
    error = {
        "type": "json_invalid",
        "loc": ("body", where),
        "msg": "JSON decode error",
        "input": {},
        "ctx": {"error": problem},
    }
    raise RequestValidationError([error])


def unknown_fields(body: Any, record_fields: frozenset[str]) -> tuple[list[dict[str, Any]], int]:
    """`extra_forbidden` errors (at most MAX_ERRORS) and their count, for the request and each
    record that has more fields than its model: those must have unknown ones. Objects within
    their model's size are left to pydantic, which reports everything wrong with them."""
    if not isinstance(body, dict):
        return [], 0
    errors: list[dict[str, Any]] = []
    count = 0
    if len(body) > len(REQUEST_FIELDS):
        count += _unknown(body, REQUEST_FIELDS, ("body",), errors)
    records = body.get("records")
    if isinstance(records, list):
        for i, record in enumerate(records):
            if isinstance(record, dict) and len(record) > len(record_fields):
                count += _unknown(record, record_fields, ("body", "records", i), errors)
    return errors, count


def _unknown(
    obj: dict[str, Any], known: frozenset[str], loc: tuple[Any, ...], errors: list[dict[str, Any]]
) -> int:
    """Adds errors for `obj`'s first unknown fields while there is room; returns how many it
    has, counted without visiting them all."""
    room = MAX_ERRORS - len(errors)
    for name in itertools.islice((k for k in obj if k not in known), max(room, 0)):
        errors.append(
            {
                "type": "extra_forbidden",
                "loc": (*loc, name),
                "msg": "Extra inputs are not permitted",
                "input": obj[name],
            }
        )
    return len(obj) - sum(name in obj for name in known)


def invalid(errors: Sequence[dict[str, Any]], count: int | None = None) -> JSONResponse:
    """The 422 for invalid records: FastAPI's `detail`, cut to the first MAX_ERRORS errors
    with short inputs, and `error_count` (how many there were in all)."""
    shown = [_short_error(error) for error in errors[:MAX_ERRORS]]
    total = len(errors) if count is None else count
    return JSONResponse({"detail": shown, "error_count": total}, status_code=422)


def _short_error(error: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": str(error.get("type", "")),
        "loc": [
            part if isinstance(part, int) else elide(str(part), _PREVIEW)
            for part in error.get("loc", ())
        ],
        "msg": elide(str(error.get("msg", "")), _MESSAGE),
    }
    if "input" in error:
        out["input"] = preview(error["input"], _PREVIEW)
    if isinstance(error.get("ctx"), dict):
        out["ctx"] = {
            elide(str(k), _PREVIEW): preview(v, _PREVIEW) for k, v in error["ctx"].items()
        }
    return out


def preview(value: Any, limit: int) -> Any:
    """A value as an error shows it: JSON scalars as they are and short arrays and objects too
    (non-finite numbers spelled as text); anything longer than `limit` characters as the start
    of its text and its size."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, int | str):
        text = value if isinstance(value, str) else _int_text(value)
        return value if len(text) <= limit else elide(text, limit)
    if isinstance(value, dict | list | tuple):
        head = _json_head(value, limit)
        if len(head) <= limit:  # short: the value itself, made JSON-safe
            if isinstance(value, dict):
                return {str(k): preview(v, limit) for k, v in value.items()}
            return [preview(v, limit) for v in value]
        noun = "field" if isinstance(value, dict) else "item"
        size = f"{len(value):,} {noun}{'' if len(value) == 1 else 's'}"
        return f"{head[: max(limit - len(size) - 6, 1)]}... ({size})"
    return elide(str(value), limit)


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError:  # past Python's digit limit (JSON parsing refuses those already)
        return f"an integer of {value.bit_length():,} bits"


def _json_head(value: Any, limit: int) -> str:
    """The first `limit` + 1 characters of `value` as JSON, without encoding the rest."""
    chunks: list[str] = []
    size = 0
    for chunk in json.JSONEncoder(skipkeys=True, default=str).iterencode(value):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return "".join(chunks)[: limit + 1]
