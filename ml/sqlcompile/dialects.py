"""What differs between the SQL dialects the compiler writes: identifier quoting, how a boolean
becomes a number, and the longest query the warehouse accepts. Everything else the compiled
query uses (CASE, COALESCE, EXP, arithmetic on DOUBLE/FLOAT64, sub-selects) reads the same on
DuckDB and BigQuery.
"""

from __future__ import annotations

from dataclasses import dataclass

from ml.errors import UnsupportedModelError


@dataclass(frozen=True)
class Dialect:
    name: str
    quote: str  # identifier quote character
    double: str  # the 64-bit float type name
    max_query_chars: int | None  # the warehouse's limit on a query's text, if any

    def ident(self, name: str) -> str:
        if not name or self.quote in name or "\\" in name or "\x00" in name or "\n" in name:
            raise UnsupportedModelError(f"column name {name!r} cannot be quoted for {self.name}")
        return f"{self.quote}{name}{self.quote}"

    def string(self, value: str) -> str:
        """A string literal: DuckDB doubles a quote, BigQuery escapes it with a backslash."""
        if any(ch in value for ch in "\x00\n\r"):
            raise UnsupportedModelError(f"category {value!r} cannot be written as an SQL literal")
        if self.name == "bigquery":
            value = value.replace("\\", "\\\\").replace("'", "\\'")
        else:
            value = value.replace("'", "''")
        return f"'{value}'"

    def to_double(self, expr: str, kind: str) -> str:
        """A numeric feature as a 64-bit float, exactly as `float(value)` in Python: ints up to
        2**53 (the contract check refuses larger ones) and floats convert exactly; booleans do
        not cast to FLOAT64 on BigQuery, so they go through IF/CASE."""
        if kind == "bool":
            return f"(case when {expr} then 1.0e0 when not {expr} then 0.0e0 end)"
        if kind == "float":
            return expr
        return f"cast({expr} as {self.double})"


# BigQuery: "Maximum query length: 1,024K characters" (Quotas and limits, query jobs).
BIGQUERY_MAX_QUERY_CHARS = 1024 * 1024

DIALECTS = {
    "duckdb": Dialect("duckdb", '"', "double", None),
    "bigquery": Dialect("bigquery", "`", "float64", BIGQUERY_MAX_QUERY_CHARS),
}


def dialect(name: str) -> Dialect:
    if name not in DIALECTS:
        raise UnsupportedModelError(
            f"dialect '{name}' is not supported (expected one of: {', '.join(DIALECTS)})"
        )
    return DIALECTS[name]


def number(value: float) -> str:
    """A float literal both dialects read as the same 64-bit float: the shortest round-trip
    digits, always with an exponent (a plain `0.1` is a DECIMAL on DuckDB)."""
    text = repr(float(value))
    if text in ("inf", "-inf", "nan"):
        raise UnsupportedModelError(f"the model holds a non-finite constant ({text})")
    return text if "e" in text else f"{text}e0"
