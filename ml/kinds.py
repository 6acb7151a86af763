"""The column-kind vocabulary: the few logical kinds every layer agrees on.

dbt contracts declare `data_type`s, DuckDB and BigQuery report their own type names, Arrow has
its types and Python its values; each maps onto one kind here, and contract checks, the request
schema and the score tables compare kinds, never type names. A leaf module: imports nothing of
the project.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pyarrow as pa

Kind = Literal["int", "float", "string", "bool", "date", "timestamp", "decimal"]
KINDS: tuple[str, ...] = ("int", "float", "string", "bool", "date", "timestamp", "decimal")
FEATURE_KINDS = frozenset({"int", "float", "bool", "string", "decimal"})

# What a numeric feature value may be, in training, batch scoring and the API alike: the model
# sees float32, so a float must be finite and within float32's range, and an int exactly
# representable as a double (|n| <= 2**53 - 1). Null is fine: the preprocessor imputes it.
FLOAT32_MAX = 3.4028234663852886e38
INT_EXACT_MAX = 2**53 - 1
NUMERIC_KINDS = frozenset({"int", "float", "bool", "decimal"})

# dbt contract types and the names DuckDB and BigQuery report (lower-cased, without arguments)
_TYPE_NAME_KIND = {
    **dict.fromkeys(
        (
            "int64", "integer", "int", "bigint", "smallint", "tinyint", "hugeint", "int32",
            "int16", "int8", "int4", "int2", "long", "ubigint", "uinteger", "usmallint",
            "utinyint", "uhugeint",
        ),
        "int",
    ),
    **dict.fromkeys(("float64", "double", "float", "real", "float32", "float4", "float8"), "float"),
    **dict.fromkeys(("string", "varchar", "text", "bpchar", "char"), "string"),
    **dict.fromkeys(("bool", "boolean", "logical"), "bool"),
    "date": "date",
    **dict.fromkeys(
        (
            "timestamp", "datetime", "timestamptz", "timestamp with time zone",
            "timestamp_us", "timestamp_ms", "timestamp_s", "timestamp_ns",
        ),
        "timestamp",
    ),
    **dict.fromkeys(("numeric", "decimal", "bignumeric"), "decimal"),
}  # fmt: skip


def declared_kind(data_type: str | None) -> str | None:
    """The kind of a type name ('int64', 'DECIMAL(38,9)', 'TIMESTAMP WITH TIME ZONE'); None when
    the name is not one the project knows."""
    if not data_type:
        return None
    base = data_type.strip().lower().split("(")[0].strip()
    return _TYPE_NAME_KIND.get(base)


def type_name_kind(type_name: str) -> str:
    """A warehouse's column type as a kind; an unknown type keeps its own (lower-cased) name, so
    a contract check reports it rather than mistaking it for a kind."""
    return declared_kind(type_name) or type_name.strip().lower()


def arrow_kind(dtype: pa.DataType) -> str:
    import pyarrow as pa

    checks = (
        (pa.types.is_boolean, "bool"),
        (pa.types.is_integer, "int"),
        (pa.types.is_floating, "float"),
        (pa.types.is_decimal, "decimal"),
        (pa.types.is_string, "string"),
        (pa.types.is_large_string, "string"),
        (pa.types.is_string_view, "string"),
        (pa.types.is_timestamp, "timestamp"),
        (pa.types.is_date, "date"),
        (pa.types.is_null, "null"),
    )
    return next((kind for check, kind in checks if check(dtype)), str(dtype))


def arrow_type(kind: str) -> pa.DataType:
    """The Arrow type a column of `kind` is written as (timestamps naive, meaning UTC)."""
    import pyarrow as pa

    types = {
        "int": pa.int64(),
        "float": pa.float64(),
        "string": pa.string(),
        "bool": pa.bool_(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us"),
        "decimal": pa.decimal128(38, 9),
    }
    return types.get(kind, pa.string())


def value_kind(value: Any) -> str:
    """The kind of a Python value (a context value written beside the scores)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, decimal.Decimal):
        return "decimal"
    if isinstance(value, dt.datetime):
        return "timestamp"
    if isinstance(value, dt.date):
        return "date"
    return "string"
