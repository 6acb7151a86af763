"""POST /predict by entity id: `{"context": {...}, "entities": [{key: value}, ...]}`.

The features come from the online store, as `ml materialize` copied them from the warehouse for
that model and context, so the score is the one `ml score` writes for the same entity, context
and model version. Answers: one prediction per entity, in order; an entity the store does not
hold gets `"score": null` and an `error` (the others are scored). Refusals, as `{"error"}`: 422
(a malformed context or entity, a key of the wrong type, more entities than
serving.max_records), 404 (nothing materialized for this model and context), 409 (the store's
set was materialized for another model version than the one served: re-run `ml materialize`),
503 (the store does not answer).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse, Response

from ml.errors import ContractError
from ml.model import ScoringModel, TrainingSchema
from ml.online import Found, OnlineStore, context_key, entity_key
from ml.recipe import ContextParam, coerce_context_value
from ml.serving.body import preview
from ml.serving.schema import score_columns
from ml.serving.served import Served
from ml.textio import elide

REQUEST_FIELDS = ("context", "entities")
UNKNOWN_ENTITY = "unknown entity: not in the online store for this context"
_KIND_NAMES = {"int": "an integer", "string": "a string"}
_PREVIEW = 60
_CONTEXT_SHOWN = 200  # characters of a context's JSON quoted in a 404 or 409


@dataclass(frozen=True)
class ByIdRequest:
    context: dict[str, Any]  # as sent (echoed back)
    typed: dict[str, Any]  # as the recipe declares each param: what names the stored set
    keys: list[tuple[int | str, ...]]  # per entity, its key values in the schema's key order
    set_key: str  # `typed` as the store names the set (`ml.online.context_key`)


def parse_request(
    body: dict[str, Any],
    schema: TrainingSchema,
    max_records: int,
    declared: Mapping[str, ContextParam] | None = None,
) -> ByIdRequest:
    """The request's context and entity keys, or a ContractError (422) naming the field."""
    for name in body:
        if name not in REQUEST_FIELDS:
            raise ContractError(
                f"body: unknown field {preview(name, _PREVIEW)!r} (a request by id has "
                "context and entities)"
            )
    context = _context(body, schema)
    typed = _typed(context, declared or {})
    return ByIdRequest(context, typed, _entities(body, schema, max_records), context_key(typed))


def _typed(context: dict[str, Any], declared: Mapping[str, ContextParam]) -> dict[str, Any]:
    """Each value as its declared type (as `ml materialize` types --context-params), so a
    value of the wrong type is named here, not reported as a context never materialized."""
    typed = dict(context)
    for name, value in context.items():
        param = declared.get(name)
        if param is None:
            continue
        try:
            typed[name] = coerce_context_value(param, value)
        except ValueError as exc:
            raise ContractError(f"context.{name}: {exc}") from None
    return typed


def _context(body: dict[str, Any], schema: TrainingSchema) -> dict[str, Any]:
    declared = list(schema.context)
    example = ", ".join(declared) or "none"
    context = body.get("context", {} if not declared else None)
    if not isinstance(context, dict):
        raise ContractError(
            f"context: expected an object with the model's context params ({example}), got "
            f"{_shown(context)}"
        )
    for name in declared:
        if name not in context:
            raise ContractError(f"context: {name} is missing (the model's params: {example})")
    for name, value in context.items():
        if name not in schema.context:
            raise ContractError(
                f"context: unknown param {preview(name, _PREVIEW)!r} (the model's params: "
                f"{example})"
            )
        if value is None or not isinstance(value, str | int | float):
            raise ContractError(
                f"context.{name}: expected a string, number or boolean, got {_shown(value)}"
            )
    return context


def _entities(
    body: dict[str, Any], schema: TrainingSchema, max_records: int
) -> list[tuple[int | str, ...]]:
    keys = schema.entity_keys
    like = "{" + ", ".join(f'"{k}": ...' for k in keys) + "}"
    entities = body.get("entities")
    if not isinstance(entities, list) or not entities:
        raise ContractError(
            f"entities: expected a list of 1 to {max_records} objects like {like}, got "
            f"{_shown(entities)}"
        )
    if len(entities) > max_records:
        raise ContractError(
            f"entities: {len(entities)} entities, over serving.max_records ({max_records})"
        )
    out = []
    for i, entity in enumerate(entities):
        if not isinstance(entity, dict):
            raise ContractError(
                f"entities[{i}]: expected an object like {like}, got {_shown(entity)}"
            )
        for name in entity:
            if name not in keys:
                raise ContractError(
                    f"entities[{i}]: unknown field {preview(name, _PREVIEW)!r} (the entity key: "
                    f"{', '.join(keys)})"
                )
        values = []
        for key in keys:
            if key not in entity:
                raise ContractError(f"entities[{i}]: key field {key} is missing")
            value = entity[key]
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ContractError(
                    f"entities[{i}].{key}: expected an integer or a string, got {_shown(value)}"
                )
            values.append(value)
        out.append(tuple(values))
    return out


def check_kinds(request: ByIdRequest, found: Found) -> None:
    """Each key value has the kind the store's key column has (an id sent as "123" for an
    integer key is a mistake to name, not an unknown entity)."""
    kinds = [found.stored.key_kinds[k] for k in found.stored.entity_keys]
    for i, values in enumerate(request.keys):
        for key, kind, value in zip(found.stored.entity_keys, kinds, values, strict=True):
            if (kind == "int") != isinstance(value, int):
                raise ContractError(
                    f"entities[{i}].{key}: expected {_KIND_NAMES.get(kind, kind)}, got "
                    f"{_shown(value)}"
                )


def _shown(value: Any) -> str:
    if value == []:
        return "an empty list"
    kind = {dict: "an object", list: "a list", type(None): "null"}.get(type(value))
    if kind:
        return kind
    return f"{type(value).__name__} {json.dumps(preview(value, _PREVIEW))}"


def look_up(
    body: dict[str, Any],
    served: Served,
    store: OnlineStore,
    max_records: int,
    observe: Callable[[float, int, int], None] | None = None,
) -> tuple[ByIdRequest, Found | None]:
    """The request, checked, and what the store holds for it: the part that waits on the store
    (the server runs it in a worker thread, and scores on its event loop)."""
    request = parse_request(body, served.model.schema, max_records, served.context)
    target = served.target
    started = time.perf_counter()
    found = store.lookup(target.model_name, request.set_key, [entity_key(k) for k in request.keys])
    if observe is not None:
        misses = len(request.keys) if found is None else sum(r is None for r in found.rows)
        observe(time.perf_counter() - started, len(request.keys), misses)
    return request, found


def answer(served: Served, request: ByIdRequest, found: Found | None) -> Response:
    """The response to a looked-up request: the scores, or why there are none."""
    target = served.target
    context = request.set_key
    # a context of any length: the answer stays short (and a short one is quoted exactly)
    shown = context if len(context) <= _CONTEXT_SHOWN else elide(context, _CONTEXT_SHOWN)
    if found is None:
        return JSONResponse(
            {
                "error": f"context {shown} was never materialized for model "
                f"{target.model_name}: run `ml materialize --model {target.model_name} "
                f"--context-params '{shown}'`"
            },
            status_code=404,
        )
    stored = found.stored
    if stored.run_id != target.run_id:
        return JSONResponse(
            {
                "error": f"the online store holds features of {target.model_name} version "
                f"{stored.model_version} (run {stored.run_id}) for context {shown}, this server "
                f"serves version {target.model_version} (run {target.run_id}): run `ml "
                f"materialize --model {target.model_name}/{target.model_version} "
                f"--context-params '{shown}'`"
            },
            status_code=409,
        )
    check_kinds(request, found)
    scores = _score(served.model, stored.features, found.rows)
    out = []
    for values, score in zip(request.keys, scores, strict=True):
        item: dict[str, Any] = dict(zip(stored.entity_keys, values, strict=True))
        item["score"] = score
        if score is None:
            item["error"] = UNKNOWN_ENTITY
        out.append(item)
    head = {
        "model_name": target.model_name,
        "model_version": target.model_version,
        "run_id": target.run_id,
        "context": request.context,
        "predictions": out,
    }
    return Response(json.dumps(head), media_type="application/json")


def _score(
    model: ScoringModel, features: list[str], rows: list[list[Any] | None]
) -> list[float | None]:
    positions = [i for i, row in enumerate(rows) if row is not None]
    scores: list[float | None] = [None] * len(rows)
    if not positions:
        return scores
    present = [rows[i] for i in positions]
    columns = {
        name: [row[j] for row in present if row is not None] for j, name in enumerate(features)
    }
    for i, score in zip(
        positions, score_columns(model, columns, "entities", positions), strict=True
    ):
        scores[i] = score
    return scores
