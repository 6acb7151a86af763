"""The DuckDB warehouse: one local file, opened under a file lock."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.errors import ConfigError
from ml.warehouse.base import Constants, Filters, KeyStats, Population, ValueFaults
from ml.warehouse.duckdb import read, write
from ml.warehouse.duckdb.connection import Connection

if TYPE_CHECKING:
    import pyarrow as pa

    from ml.warehouse.base import Relation


class DuckDBWarehouse:
    """Implements `ml.warehouse.base.Warehouse` on the file `warehouse.duckdb.path`."""

    def __init__(self, settings: Settings, *, create: bool = False) -> None:
        duck = settings.warehouse.duckdb
        if duck is None:
            raise ConfigError("config: warehouse.duckdb: required when warehouse.type is duckdb")
        self._connection = Connection(settings.path(duck.path), duck, create=create)
        self._threads = duck.threads

    @property
    def con(self) -> Any:
        """The raw DuckDB connection, opened on first use."""
        if self._connection.raw is None:
            self._connection.open()
        return self._connection.raw

    def open(self) -> DuckDBWarehouse:
        _ = self.con
        return self

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> DuckDBWarehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def present(self) -> bool:
        return self._connection.path.exists()

    def exists(self, relation: Relation) -> bool:
        return read.exists(self.con, relation)

    def columns(self, relation: Relation) -> dict[str, str]:
        return read.column_kinds(self.con, relation)

    def read_arrow(self, relation: Relation, columns: list[str], filters: Filters) -> pa.Table:
        return read.read_arrow(self.con, relation, columns, filters)

    def read_batches(
        self, relation: Relation, columns: list[str], filters: Filters, batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        return read.read_batches(self.con, relation, columns, filters, batch_size)

    def key_stats(
        self, relation: Relation, keys: list[str], filters: Filters, *, distinct: bool = True
    ) -> KeyStats:
        return read.key_stats(self.con, relation, keys, filters, distinct=distinct)

    @property
    def in_process(self) -> bool:
        return True

    @contextlib.contextmanager
    def streaming(self) -> Iterator[None]:
        """One DuckDB thread while rows stream through a model here, unless
        warehouse.duckdb.threads is set: a scan handing batches to Arrow and appends of the
        scores gain nothing from more, and the extra threads contend with the model's
        (bench/score_bench.py's 1M rows x 20 features on 2 cores: reading 0.54 -> 0.30-0.39
        CPU-s, appending 0.25 -> 0.14, wall time no longer)."""
        if self._threads is not None:
            yield
            return
        con = self.con
        before = con.execute("select current_setting('threads')").fetchone()[0]
        con.execute("set threads = 1")
        try:
            yield
        finally:
            con.execute(f"set threads = {int(before)}")

    @property
    def dialect(self) -> str:
        return "duckdb"

    def population(self, relation: Relation, columns: list[str], filters: Filters) -> Population:
        return read.population(relation, columns, filters)

    def value_faults(
        self, relation: Relation, kinds: Mapping[str, str], filters: Filters
    ) -> ValueFaults:
        return read.value_faults(self.con, relation, kinds, filters)

    def read_sample(
        self, relation: Relation, columns: list[str], filters: Filters, rows: int
    ) -> pa.Table:
        return read.read_sample(self.con, relation, columns, filters, rows)

    def count_query_rows(self, sql: str, filters: Filters) -> int:
        return read.count_query_rows(self.con, sql, filters)

    def slice_writer(
        self,
        schema: str,
        name: str,
        slice_: Filters,
        constants: Constants,
        *,
        current: bool = True,
    ) -> write.DuckDBSliceWriter:
        return write.DuckDBSliceWriter(self.con, schema, name, slice_, constants, current=current)

    def replace_tables(self, schema: str, tables: Mapping[str, pa.Table]) -> None:
        write.replace_tables(self.con, schema, tables)
