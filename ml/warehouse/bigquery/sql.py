"""BigQuery SQL text: identifiers quoted and validated, values always as typed parameters
(`ScalarQueryParameter`), never pasted into the query."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping
from typing import Any

from ml.errors import ConfigError


def checked_ident(name: str) -> str:
    if not name or any(ch in name for ch in "`\\\n\r\x00"):
        raise ConfigError(f"invalid BigQuery identifier {name!r}")
    return name


def quote_ident(name: str) -> str:
    return f"`{checked_ident(name)}`"


def table_ref(table_id: str) -> str:
    return ".".join(quote_ident(part) for part in table_id.split("."))


def where_sql(
    filters: Mapping[str, Any], prefix: str, alias: str | None = None
) -> tuple[str, list[Any]]:
    terms: list[str] = []
    params: list[Any] = []
    for i, (column, value) in enumerate(filters.items()):
        name = f"{prefix}{i}"
        col = f"{alias}.{quote_ident(column)}" if alias else quote_ident(column)
        terms.append(f"{col} = @{name}")
        params.append(query_parameter(name, value, column))
    return (" and ".join(terms) or "true"), params


def query_parameter(name: str, value: Any, column: str = "") -> Any:
    """A typed BigQuery query parameter for a filter value."""
    from google.cloud import bigquery

    if value is None:
        raise ConfigError(f"filter on column '{column}': a value is required, got null")
    if isinstance(value, bool):
        kind = "BOOL"
    elif isinstance(value, int):
        kind = "INT64"
    elif isinstance(value, float):
        kind = "FLOAT64"
    elif isinstance(value, decimal.Decimal):
        kind = "NUMERIC"
    elif isinstance(value, dt.datetime):
        kind = "TIMESTAMP"
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)  # naive means UTC, as in the score tables
    elif isinstance(value, dt.date):
        kind = "DATE"
    elif isinstance(value, str):
        kind = "STRING"
    else:
        raise ConfigError(
            f"filter on column '{column}': unsupported value type {type(value).__name__}"
        )
    return bigquery.ScalarQueryParameter(name, kind, value)
