"""The BigQuery warehouse: reads through the Storage Read API (REST when it is unavailable),
writes by load jobs and one MERGE per slice."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from ml.config import Settings
from ml.errors import ConfigError
from ml.warehouse.base import Constants, Filters, KeyStats, Population, ValueFaults
from ml.warehouse.bigquery import read, write
from ml.warehouse.bigquery.connection import BigQuery

if TYPE_CHECKING:
    import pyarrow as pa

    from ml.warehouse.base import Relation


class BigQueryWarehouse:
    """Implements `ml.warehouse.base.Warehouse` on the project `warehouse.bigquery.project`."""

    def __init__(self, settings: Settings, *, create: bool = False) -> None:
        # `create` is for a warehouse that is a file: a project is never created by ml
        bq = settings.warehouse.bigquery
        if bq is None:
            raise ConfigError(
                "config: warehouse.bigquery: required when warehouse.type is bigquery"
            )
        self.bq = BigQuery(bq)

    def open(self) -> BigQueryWarehouse:
        _ = self.bq.client
        return self

    def close(self) -> None:
        self.bq.close()

    def __enter__(self) -> BigQueryWarehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def present(self) -> bool:
        return True  # a missing dataset is a missing relation (`exists`)

    def exists(self, relation: Relation) -> bool:
        return self.bq.exists(relation)

    def columns(self, relation: Relation) -> dict[str, str]:
        return read.column_kinds(self.bq, relation)

    def read_arrow(self, relation: Relation, columns: list[str], filters: Filters) -> pa.Table:
        return read.read_arrow(self.bq, relation, columns, filters)

    def read_batches(
        self, relation: Relation, columns: list[str], filters: Filters, batch_size: int
    ) -> Iterator[pa.RecordBatch]:
        return read.read_batches(self.bq, relation, columns, filters, batch_size)

    def key_stats(
        self, relation: Relation, keys: list[str], filters: Filters, *, distinct: bool = True
    ) -> KeyStats:
        return read.key_stats(self.bq, relation, keys, filters, distinct=distinct)

    @property
    def in_process(self) -> bool:
        return False

    @contextlib.contextmanager
    def streaming(self) -> Iterator[None]:
        """Nothing to tune: BigQuery's work runs on its own machines."""
        yield

    @property
    def dialect(self) -> str:
        return "bigquery"

    def population(self, relation: Relation, columns: list[str], filters: Filters) -> Population:
        return read.population(self.bq, relation, columns, filters)

    def value_faults(
        self, relation: Relation, kinds: Mapping[str, str], filters: Filters
    ) -> ValueFaults:
        return read.value_faults(self.bq, relation, kinds, filters)

    def read_sample(
        self, relation: Relation, columns: list[str], filters: Filters, rows: int
    ) -> pa.Table:
        return read.read_sample(self.bq, relation, columns, filters, rows)

    def count_query_rows(self, sql: str, filters: Filters) -> int:
        return read.count_query_rows(self.bq, sql, filters)

    def slice_writer(
        self,
        schema: str,
        name: str,
        slice_: Filters,
        constants: Constants,
        *,
        current: bool = True,
    ) -> write.BigQuerySliceWriter:
        return write.BigQuerySliceWriter(self.bq, schema, name, slice_, constants, current=current)

    def replace_tables(self, schema: str, tables: Mapping[str, pa.Table]) -> None:
        write.replace_tables(self.bq, schema, tables)
