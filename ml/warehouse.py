"""Warehouse access through ibis: one connection per target, Arrow in and out.

Filters are built as typed ibis expressions, so context values reach SQL as typed literals the
compiler quotes, never as text pasted into a query.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.dbt import Relation
from ml.errors import ConfigError, WarehouseError

if TYPE_CHECKING:
    import pyarrow as pa

# Logical kinds shared by dbt contracts, ibis and Arrow; contract checks compare these.
KINDS = ("int", "float", "string", "bool", "date", "timestamp", "decimal")
_DECLARED_KIND = {
    "int64": "int",
    "integer": "int",
    "int": "int",
    "bigint": "int",
    "smallint": "int",
    "tinyint": "int",
    "hugeint": "int",
    "int32": "int",
    "float64": "float",
    "double": "float",
    "float": "float",
    "real": "float",
    "float32": "float",
    "string": "string",
    "varchar": "string",
    "text": "string",
    "bool": "bool",
    "boolean": "bool",
    "date": "date",
    "timestamp": "timestamp",
    "datetime": "timestamp",
    "numeric": "decimal",
    "decimal": "decimal",
    "bignumeric": "decimal",
}


def declared_kind(data_type: str | None) -> str | None:
    """The logical kind of a dbt contract data_type ('int64' -> 'int'); None when unknown."""
    if not data_type:
        return None
    base = data_type.strip().lower().split("(")[0].strip()
    return _DECLARED_KIND.get(base)


def ibis_kind(dtype: Any) -> str:
    if dtype.is_boolean():
        return "bool"
    if dtype.is_integer():
        return "int"
    if dtype.is_floating():
        return "float"
    if dtype.is_decimal():
        return "decimal"
    if dtype.is_string():
        return "string"
    if dtype.is_timestamp():
        return "timestamp"
    if dtype.is_date():
        return "date"
    return str(dtype)


class Warehouse:
    """A live connection to the configured warehouse."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kind = settings.warehouse.type
        self._con: Any = None

    # -- connection --------------------------------------------------------------------------
    @property
    def con(self) -> Any:
        if self._con is None:
            self._con = self._connect()
        return self._con

    def _connect(self) -> Any:
        import ibis

        wh = self.settings.warehouse
        if wh.type == "duckdb":
            if wh.duckdb is None:
                raise ConfigError(
                    "config: warehouse.duckdb: required when warehouse.type is duckdb"
                )
            path = self.settings.path(wh.duckdb.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                return ibis.duckdb.connect(str(path))
            except Exception as exc:  # noqa: BLE001 - a locked or corrupt file
                raise WarehouseError(
                    f"{path}: cannot open the DuckDB file ({_one_line(exc)})"
                ) from None
        raise ConfigError(f"config: warehouse.type: '{wh.type}' is not supported by this build")

    def close(self) -> None:
        if self._con is not None:
            disconnect = getattr(self._con, "disconnect", None)
            if disconnect:
                disconnect()
            self._con = None

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------
    def _database(self, relation: Relation) -> Any:
        if self.kind == "duckdb":
            return (relation.database, relation.schema) if relation.database else relation.schema
        return (relation.database, relation.schema) if relation.database else relation.schema

    def table(self, relation: Relation) -> Any:
        try:
            return self.con.table(relation.name, database=self._database(relation))
        except Exception as exc:  # noqa: BLE001 - ibis raises backend-specific errors
            raise WarehouseError(f"relation {relation} does not exist ({_one_line(exc)})") from None

    def exists(self, relation: Relation) -> bool:
        try:
            return relation.name in self.con.list_tables(database=self._database(relation))
        except Exception:  # noqa: BLE001 - a missing schema means a missing relation
            return False

    def columns(self, relation: Relation) -> dict[str, str]:
        """Column name -> logical kind, in table order."""
        schema = self.table(relation).schema()
        return {name: ibis_kind(dtype) for name, dtype in schema.items()}

    def query(self, relation: Relation, columns: list[str], filters: Mapping[str, Any]) -> Any:
        import ibis

        t = self.table(relation)
        expr = t
        for column, value in filters.items():
            expr = expr.filter(t[column] == ibis.literal(value, type=_literal_type(value)))
        return expr.select(*columns)

    def read_arrow(
        self, relation: Relation, columns: list[str], filters: Mapping[str, Any]
    ) -> pa.Table:
        expr = self.query(relation, columns, filters)
        try:
            return expr.to_pyarrow()
        except Exception as exc:  # noqa: BLE001
            raise WarehouseError(f"reading {relation} failed: {_one_line(exc)}") from None

    def read_batches(
        self, relation: Relation, columns: list[str], filters: Mapping[str, Any], batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        expr = self.query(relation, columns, filters)
        try:
            reader = expr.to_pyarrow_batches(chunk_size=batch_size)
        except Exception as exc:  # noqa: BLE001
            raise WarehouseError(f"reading {relation} failed: {_one_line(exc)}") from None
        yield from reader

    def count(self, relation: Relation, filters: Mapping[str, Any]) -> int:
        import ibis

        t = self.table(relation)
        expr = t
        for column, value in filters.items():
            expr = expr.filter(t[column] == ibis.literal(value, type=_literal_type(value)))
        return int(expr.count().execute())

    # -- writing -----------------------------------------------------------------------------
    def replace_tables(self, schema: str, tables: Mapping[str, pa.Table]) -> None:
        """Create or replace whole tables (used to load raw demo data)."""
        if self.kind == "duckdb":
            raw = self.con.con
            raw.execute(f'create schema if not exists "{_ident(schema)}"')
            raw.execute("begin transaction")
            try:
                for name, table in tables.items():
                    raw.register("_ml_incoming", table)
                    raw.execute(
                        f'create or replace table "{_ident(schema)}"."{_ident(name)}" as select * from _ml_incoming'
                    )
                    raw.unregister("_ml_incoming")
                raw.execute("commit")
            except Exception as exc:  # noqa: BLE001
                raw.execute("rollback")
                raise WarehouseError(
                    f"writing to schema {schema} failed: {_one_line(exc)}"
                ) from None
            return
        raise ConfigError(f"config: warehouse.type: '{self.kind}' is not supported by this build")


def _literal_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return "date"
    if isinstance(value, str):
        return "string"
    return None


def _ident(name: str) -> str:
    """Identifiers we create come from config and recipe names, validated; refuse anything odd."""
    if not name or '"' in name or "`" in name or "\x00" in name:
        raise ConfigError(f"invalid identifier {name!r}")
    return name


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:400]


def connect(settings: Settings) -> Warehouse:
    return Warehouse(settings)
