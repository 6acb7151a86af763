"""The /predict request and response schemas, generated from the training schema, and scoring
the validated records.

Every feature's real type is in the schema, so /docs shows it and bad records get FastAPI's
field-level 422s before the model sees them: unknown fields, wrong types, ints beyond 2**53 and
floats beyond float32's range. Scoring goes straight from the records to one small numpy column
per feature, no DataFrame, and refuses a value the model cannot take or a non-finite score with a
ContractError naming the record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    create_model,
)

from ml.errors import ContractError
from ml.kinds import FLOAT32_MAX, INT_EXACT_MAX
from ml.model import ScoringModel, TrainingSchema, predict_matrix


def _whole(value: Any) -> Any:
    """5.0 is an integer in JSON Schema: accept it as 5 (5.5 stays a float and is refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Bounds live in the schema, so /docs and clients see them. Numbers reach the model as float64
# and then float32: ints beyond 2**53 would be silently rounded, floats beyond float32's range
# would be infinite.
_INT_MAX = INT_EXACT_MAX
_FLOAT32_MAX = FLOAT32_MAX
_FLOAT = Annotated[float, Field(allow_inf_nan=False, ge=-_FLOAT32_MAX, le=_FLOAT32_MAX)] | None
_FEATURE_TYPES: dict[str, Any] = {
    "int": Annotated[int, Field(ge=-_INT_MAX, le=_INT_MAX), BeforeValidator(_whole)] | None,
    "float": _FLOAT,
    "decimal": _FLOAT,
    "bool": bool | None,
    "string": str | None,
}


_EXAMPLE: dict[str, Any] = {"int": 0, "float": 0.0, "decimal": 0.0, "bool": False, "string": ""}


@dataclass(frozen=True)
class Schemas:
    request: type[BaseModel]
    response: type[BaseModel]
    features: list[tuple[str, str]]  # (feature, attribute on the record model)
    keys: list[tuple[str, str]]  # (entity key, attribute) for keys that are not features


def build_schemas(schema: TrainingSchema, max_records: int) -> Schemas:
    """Pydantic models for /predict: every feature required (null allowed, imputation handles
    it), strict types, unknown fields refused. Attribute names are positional so any column name
    works; the JSON names are the aliases."""
    fields: dict[str, Any] = {}
    features: list[tuple[str, str]] = []
    keys: list[tuple[str, str]] = []
    for i, (name, kind) in enumerate(schema.features.items()):
        if kind not in _FEATURE_TYPES:
            raise ContractError(f"training schema: feature {name}: unknown kind '{kind}'")
        known = schema.categories.get(name)
        about = f"{kind} feature" + (f"; known values: {', '.join(known)}" if known else "")
        fields[f"f{i}"] = (_FEATURE_TYPES[kind], Field(alias=name, description=about))
        features.append((name, f"f{i}"))
    for i, name in enumerate(k for k in schema.entity_keys if k not in schema.features):
        about = "entity key (optional), echoed back with the score"
        fields[f"k{i}"] = (StrictInt | StrictStr | None, Field(None, alias=name, description=about))
        keys.append((name, f"k{i}"))
    example: dict[str, Any] = {
        name: schema.categories[name][0] if schema.categories.get(name) else _EXAMPLE[kind]
        for name, kind in schema.features.items()
    }
    record = create_model(
        "Record",
        __config__=ConfigDict(
            extra="forbid", strict=True, json_schema_extra={"examples": [example]}
        ),
        **fields,
    )
    request = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        records=(list[record], Field(min_length=1, max_length=max_records)),  # type: ignore[valid-type]
    )
    key_fields: dict[str, Any] = {
        attr: (int | str | None, Field(None, alias=key)) for key, attr in keys
    }
    prediction = create_model("Prediction", score=(float, ...), **key_fields)
    response = create_model(
        "PredictResponse",
        model_name=(str, ...),
        model_version=(str | None, ...),
        run_id=(str, ...),
        predictions=(list[prediction], ...),  # type: ignore[valid-type]
    )
    return Schemas(request, response, features, keys)


_CONTEXT_TYPES: dict[str, Any] = {
    "str": StrictStr,
    "int": StrictInt,
    "float": float,
    "bool": bool,
    "date": Annotated[str, Field(json_schema_extra={"format": "date"})],
}


def by_id_schemas(
    schema: TrainingSchema, declared: Mapping[str, Any], max_records: int
) -> tuple[type[BaseModel], type[BaseModel]]:
    """The request and response of /predict by id, for the OpenAPI document (`by_id` parses
    the body itself): the model's context params, each as its recipe declares it, and entity
    keys; each prediction's score is null, with an error, for an entity the store lacks."""
    context_fields: dict[str, Any] = {}
    for i, name in enumerate(schema.context):
        param = declared.get(name)
        kind = _CONTEXT_TYPES.get(param.type, Any) if param is not None else Any
        about = (param.description if param is not None else "") or "context param"
        context_fields[f"c{i}"] = (kind, Field(alias=name, description=about))
    context = create_model("Context", __config__=ConfigDict(extra="forbid"), **context_fields)
    key_fields: dict[str, Any] = {
        f"k{i}": (StrictInt | StrictStr, Field(alias=key, description="entity key"))
        for i, key in enumerate(schema.entity_keys)
    }
    entity = create_model("Entity", __config__=ConfigDict(extra="forbid"), **key_fields)
    request = create_model(
        "PredictByIdRequest",
        __config__=ConfigDict(extra="forbid"),
        context=(context, ... if context_fields else None),
        entities=(list[entity], Field(min_length=1, max_length=max_records)),  # type: ignore[valid-type]
    )
    prediction_fields: dict[str, Any] = {
        **{attr: (int | str, spec) for attr, (_, spec) in key_fields.items()},
        "score": (float | None, Field(description="null when the store lacks the entity")),
        "error": (str | None, Field(None, description="why there is no score")),
    }
    prediction = create_model("EntityPrediction", **prediction_fields)
    response = create_model(
        "PredictByIdResponse",
        model_name=(str, ...),
        model_version=(str | None, ...),
        run_id=(str, ...),
        context=(dict[str, Any], Field(description="the request's context, as sent")),
        predictions=(list[prediction], ...),  # type: ignore[valid-type]
    )
    return request, response


def score_records(scoring: ScoringModel, schemas: Schemas, records: list[Any]) -> list[float]:
    """Validated records -> scores, refusing anything non-finite on the way in or out."""
    columns = {name: [getattr(r, attr) for r in records] for name, attr in schemas.features}
    return score_columns(scoring, columns, "records")


def score_columns(
    scoring: ScoringModel,
    columns: dict[str, list[Any]],
    label: str,
    positions: list[int] | None = None,
) -> list[float]:
    """Feature columns -> scores, refusing anything non-finite on the way in or out; an error
    names `label[i]`, i the row's position in the request (`positions`, when rows were left
    out)."""

    def where(row: int) -> str:
        return f"{label}[{positions[row] if positions is not None else row}]"

    with np.errstate(over="ignore"):  # overflow to inf is caught right below, per record
        X = scoring.preprocessor.transform(columns)
    inf = np.isinf(X)
    if inf.any():
        row, col = (int(v[0]) for v in np.nonzero(inf))
        raise ContractError(
            f"{where(row)}: {scoring.preprocessor.feature_names[col]} is too large to score"
        )
    scores = predict_matrix(scoring.estimator, scoring.schema.task, X).tolist()
    for i, s in enumerate(scores):
        if not math.isfinite(s):
            raise ContractError(f"{where(i)}: the model produced a non-finite score ({s})")
    return scores
