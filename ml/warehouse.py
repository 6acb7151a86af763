"""Warehouse access through ibis: one connection per target, Arrow in and out.

Filters are built as typed ibis expressions, so context values reach SQL as typed literals the
compiler quotes, never as text pasted into a query.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.dbt import Relation
from ml.errors import ConfigError, WarehouseError, one_line

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
        self._lock: Any = None
        self._bq: Any = None

    @property
    def bq(self) -> Any:
        """The BigQuery clients (ml.bigquery) when warehouse.type is bigquery."""
        if self._bq is None:
            if self.settings.warehouse.bigquery is None:
                raise ConfigError(
                    "config: warehouse.bigquery: required when warehouse.type is bigquery"
                )
            from ml.bigquery import BigQuery

            self._bq = BigQuery(self.settings.warehouse.bigquery)
        return self._bq

    # -- connection --------------------------------------------------------------------------
    @property
    def con(self) -> Any:
        if self._con is None:
            self._con = self._connect()
        return self._con

    def open(self) -> Warehouse:
        """Connect now rather than on first use: on DuckDB, import the backend, take the file
        lock and open the file; on BigQuery, build the API client."""
        _ = self.bq.client if self.kind == "bigquery" else self.con
        return self

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
            # One process may write a DuckDB file at a time: `ml` processes queue on a lock file
            # (bounded wait), and a file held by anything else is retried until the same deadline.
            deadline = time.monotonic() + wh.duckdb.lock_timeout_seconds
            self._lock = _acquire_file_lock(path.with_name(path.name + ".lock"), deadline, path)
            while True:
                try:
                    con = ibis.duckdb.connect(str(path))
                    _apply_limits(con, wh.duckdb)
                    return con
                except Exception as exc:  # noqa: BLE001 - a locked or corrupt file
                    locked = "lock" in str(exc).lower()
                    if locked and time.monotonic() < deadline:
                        time.sleep(0.25)
                        continue
                    self._release_lock()
                    if locked:
                        raise WarehouseError(
                            f"{path}: locked by another process for {wh.duckdb.lock_timeout_seconds:g}s "
                            f"({one_line(exc)}); retry when it has finished"
                        ) from None
                    raise WarehouseError(
                        f"{path}: cannot open the DuckDB file ({one_line(exc)})"
                    ) from None
        if wh.type == "bigquery":
            return self.bq.ibis_connection()
        raise ConfigError(f"config: warehouse.type: '{wh.type}' is not supported by this build")

    def close(self) -> None:
        if self._con is not None:
            disconnect = getattr(self._con, "disconnect", None)
            if disconnect:
                disconnect()
            self._con = None
        if self._bq is not None:
            self._bq.close()
            self._bq = None
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

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
            raise WarehouseError(f"relation {relation} does not exist ({one_line(exc)})") from None

    def exists(self, relation: Relation) -> bool:
        if self.kind == "bigquery":
            return bool(self.bq.exists(relation))
        con = self.con  # a file that cannot be opened (locked) is its own error, not "not built"
        try:
            return relation.name in con.list_tables(database=self._database(relation))
        except Exception:  # noqa: BLE001 - a missing schema means a missing relation
            return False

    def columns(self, relation: Relation) -> dict[str, str]:
        """Column name -> logical kind, in table order."""
        if self.kind == "bigquery":
            return dict(self.bq.columns(relation))
        schema = self.table(relation).schema()
        return {name: ibis_kind(dtype) for name, dtype in schema.items()}

    # DuckDB reads are SQL we write with quoted identifiers and `?` parameters: context values
    # are bound by the driver, never part of the SQL text.
    def _cursor(self) -> Any:
        return self.con.con.cursor()

    def _select(
        self, relation: Relation, columns: list[str], filters: Mapping[str, Any]
    ) -> tuple[str, list[Any]]:
        where = " and ".join(f"{quote_ident(c)} = ?" for c in filters)
        sql = f"select {', '.join(quote_ident(c) for c in columns)} from {_qualified(relation)}"
        return (f"{sql} where {where}" if where else sql), list(filters.values())

    def read_arrow(
        self, relation: Relation, columns: list[str], filters: Mapping[str, Any]
    ) -> pa.Table:
        if self.kind == "bigquery":  # typed query parameters, Storage Read API or REST
            return self.bq.read_arrow(relation, columns, filters)
        sql, params = self._select(relation, columns, filters)
        try:
            return self._cursor().execute(sql, params).to_arrow_table()
        except Exception as exc:  # noqa: BLE001
            raise WarehouseError(f"reading {relation} failed: {one_line(exc)}") from None

    def read_batches(
        self, relation: Relation, columns: list[str], filters: Mapping[str, Any], batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        if self.kind == "bigquery":
            yield from self.bq.read_batches(relation, columns, filters, batch_size)
            return
        sql, params = self._select(relation, columns, filters)
        cursor = self._cursor()  # held by this generator while it streams
        try:
            reader = cursor.execute(sql, params).to_arrow_reader(batch_size)
        except Exception as exc:  # noqa: BLE001
            raise WarehouseError(f"reading {relation} failed: {one_line(exc)}") from None
        yield from reader

    def key_stats(
        self, relation: Relation, keys: list[str], filters: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Rows, null keys and distinct keys of a filtered relation, computed in the warehouse."""
        if self.kind == "bigquery":
            return dict(self.bq.key_stats(relation, keys, filters))
        population, params = self._select(relation, keys, filters)
        key_list = ", ".join(quote_ident(k) for k in keys)
        nulls = "".join(f", count(*) - count({quote_ident(k)})" for k in keys)
        sql = (
            f"with population as ({population}) select count(*){nulls}, "
            f"(select count(*) from (select distinct {key_list} from population)) from population"
        )
        try:
            row = self._cursor().execute(sql, params).fetchone()
        except Exception as exc:  # noqa: BLE001
            raise WarehouseError(f"reading {relation} failed: {one_line(exc)}") from None
        return {
            "rows": int(row[0] or 0),
            "nulls": {k: int(row[1 + i] or 0) for i, k in enumerate(keys)},
            "distinct": int(row[-1] or 0),
        }

    # -- writing -----------------------------------------------------------------------------
    def slice_writer(
        self,
        schema: str,
        name: str,
        slice_: Mapping[str, Any],
        constants: Mapping[str, tuple[Any, Any]],
    ) -> Any:
        """Replace the rows matching `slice_` with batches plus constant columns, atomically."""
        if self.kind == "bigquery":  # a load job into staging, then one MERGE
            return self.bq.slice_writer(schema, name, slice_, constants)
        if self.kind != "duckdb":
            raise ConfigError(
                f"config: warehouse.type: '{self.kind}' is not supported by this build"
            )
        from ml.duckdb_slices import DuckDBSliceWriter

        return DuckDBSliceWriter(self.con.con, schema, name, slice_, constants)

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
                    f"writing to schema {schema} failed: {one_line(exc)}"
                ) from None
            return
        if self.kind == "bigquery":  # one load job per table
            self.bq.replace_tables(schema, tables)
            return
        raise ConfigError(f"config: warehouse.type: '{self.kind}' is not supported by this build")


def _apply_limits(con: Any, duck: Any) -> None:
    """DuckDB caches what it reads up to its memory limit; a set limit keeps scoring's memory
    bounded by the batch size rather than the table size."""
    if duck.memory_limit:
        con.raw_sql(f"set memory_limit = '{_setting(duck.memory_limit)}'")
    if duck.threads:
        con.raw_sql(f"set threads = {int(duck.threads)}")


def _setting(value: str) -> str:
    if not all(ch.isalnum() or ch in " ." for ch in value):
        raise ConfigError(
            f"config: warehouse.duckdb.memory_limit: expected a size like '1GB', got {value!r}"
        )
    return value


def _acquire_file_lock(lock_path: Path, deadline: float, db_path: Path) -> Any:
    import fcntl

    handle = open(lock_path, "a+")  # noqa: SIM115 - held until Warehouse.close()
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                raise WarehouseError(
                    f"{db_path}: in use by another ml process (waited for {lock_path.name}); "
                    "retry when it has finished"
                ) from None
            time.sleep(0.1)


def quote_ident(name: str) -> str:
    """A validated identifier, double-quoted for DuckDB SQL."""
    return '"' + _ident(name).replace('"', '""') + '"'


def _qualified(relation: Relation) -> str:
    return ".".join(
        quote_ident(p) for p in (relation.database, relation.schema, relation.name) if p
    )


def _ident(name: str) -> str:
    """Identifiers we create come from config and recipe names, validated; refuse anything odd."""
    if not name or '"' in name or "`" in name or "\x00" in name:
        raise ConfigError(f"invalid identifier {name!r}")
    return name


def connect(settings: Settings) -> Warehouse:
    return Warehouse(settings)
