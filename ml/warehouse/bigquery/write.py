"""Writes to BigQuery: whole tables by load jobs, and atomic replacement of a score slice.

Writes never stream: rows go to a local Parquet file and one load job puts it into BigQuery.
A slice of a score table is loaded into a staging table that expires by itself, and one MERGE
replaces the slice, so rows appear all at once or not at all. The view `<name>__current` shows,
per context, the slice scored last.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.errors import ConfigError, WarehouseError, one_line
from ml.warehouse.bigquery.sql import (
    checked_ident,
    query_parameter,
    quote_ident,
    table_ref,
    where_sql,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from ml.warehouse.bigquery.connection import BigQuery

CURRENT_SUFFIX = "__current"  # `<name>__current`: the latest slice per context
STAGING_TTL = dt.timedelta(hours=6)  # a staging table left by a killed process expires by itself


def ensure_dataset(bq: BigQuery, dataset: str) -> None:
    from google.cloud import bigquery

    ref = bigquery.Dataset(f"{bq.project}.{checked_ident(dataset)}")
    ref.location = bq.settings.location
    bq.client.create_dataset(ref, exists_ok=True, retry=bq.retry, timeout=bq.timeout)


def load_parquet(
    bq: BigQuery, path: Path, table_id: str, schema: list[Any], write_disposition: str
) -> int:
    """One load job of a local Parquet file; returns the rows it loaded."""
    from google.cloud import bigquery

    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        schema=schema,
        write_disposition=write_disposition,
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
    )
    with open(path, "rb") as handle:
        job = bq.client.load_table_from_file(
            handle, table_id, job_config=config, timeout=bq.timeout
        )
    job.result(retry=bq.retry, timeout=bq.timeout)
    return int(job.output_rows or 0)


def replace_tables(bq: BigQuery, dataset: str, tables: Mapping[str, pa.Table]) -> None:
    """Create or replace whole tables, one load job each (WRITE_TRUNCATE is atomic per table)."""
    import pyarrow.parquet as pq

    try:
        ensure_dataset(bq, dataset)
        with tempfile.TemporaryDirectory(prefix="ml-bq-") as tmp:
            for name, table in tables.items():
                table = _bigquery_ready(table)
                path = Path(tmp) / f"{checked_ident(name)}.parquet"
                pq.write_table(table, path)
                schema = _bigquery_schema(table.schema)
                load_parquet(bq, path, f"{bq.project}.{dataset}.{name}", schema, "WRITE_TRUNCATE")
                path.unlink()
    except (ConfigError, WarehouseError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise WarehouseError(f"writing to dataset {dataset} failed: {one_line(exc)}") from None


class BigQuerySliceWriter:
    """Replaces one slice of a score table (rows matching `slice`) in one MERGE statement.

    Batches go to a local Parquet file as they come (memory stays at one batch); on a clean exit
    one load job puts the file into a staging table that expires by itself, one MERGE deletes
    the slice's old rows and inserts the new ones atomically, and the staging table is dropped.
    An exception before that leaves BigQuery untouched.
    """

    def __init__(
        self,
        bq: BigQuery,
        dataset: str,
        name: str,
        slice_: Mapping[str, Any],
        constants: Mapping[str, tuple[Any, Any]],
        *,
        current: bool = True,
    ) -> None:
        self.bq, self.dataset, self.name = bq, checked_ident(dataset), checked_ident(name)
        self.with_current = current
        self.slice, self.constants = dict(slice_), dict(constants)
        self.table_id = f"{bq.project}.{self.dataset}.{self.name}"
        self.rows = 0
        self._tmp: str | None = None
        self._writer: Any = None
        self._schema: Any = None
        self._query: tuple[str, list[Any], dict[str, str]] | None = None

    def __enter__(self) -> BigQuerySliceWriter:
        self._tmp = tempfile.mkdtemp(prefix="ml-bq-scores-")
        return self

    def write(self, batch: pa.RecordBatch) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = batch.num_rows
        columns = [*batch.columns]
        names = [*batch.schema.names]
        for column, (value, arrow_type) in self.constants.items():
            columns.append(pa.array([value] * n, type=arrow_type))
            names.append(column)
        table = _bigquery_ready(pa.Table.from_arrays(columns, names=names))
        if self._writer is None:
            if self._tmp is None:
                raise WarehouseError(f"{self.dataset}.{self.name}: write() outside `with`")
            self._schema = table.schema
            self._writer = pq.ParquetWriter(Path(self._tmp) / "scores.parquet", table.schema)
        self._writer.write_table(table.cast(self._schema))
        self.rows += n

    def write_query(self, query: str, params: list[Any], kinds: Mapping[str, str]) -> None:
        """The query's rows replace the slice on a clean exit, by one MERGE whose source is the
        query itself: no row leaves BigQuery."""
        if self._writer is not None or self._query is not None:
            raise WarehouseError(f"{self.dataset}.{self.name}: one write_query per slice")
        self._query = (query, list(params), dict(kinds))

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if exc_type is None and self._writer is not None:
                self._publish(Path(self._tmp or ".") / "scores.parquet")
            if exc_type is None and self._query is not None:
                self._publish_query(*self._query)
        finally:
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def _create_target(self, schema: list[Any]) -> None:
        """The score table (and its dataset) if missing; an existing one must have the scores'
        columns."""
        from google.cloud import bigquery

        bq = self.bq
        names = [f.name for f in schema]
        ensure_dataset(bq, self.dataset)
        target = bigquery.Table(self.table_id, schema=schema)
        existing = bq.client.create_table(
            target, exists_ok=True, retry=bq.retry, timeout=bq.timeout
        )
        if {f.name for f in existing.schema} != set(names):
            raise WarehouseError(
                f"{self.dataset}.{self.name}: existing columns ({', '.join(f.name for f in existing.schema)}) "
                f"differ from the scores ({', '.join(names)}); drop or rename the old table"
            )

    def _publish(self, path: Path) -> None:
        from google.cloud import bigquery

        bq = self.bq
        schema = _bigquery_schema(self._schema)
        names = [f.name for f in schema]
        staging = f"{bq.project}.{self.dataset}._ml_staging_{self.name}_{uuid.uuid4().hex[:12]}"
        try:
            self._create_target(schema)
            stage = bigquery.Table(staging, schema=schema)
            stage.expires = dt.datetime.now(dt.UTC) + STAGING_TTL
            bq.client.create_table(stage, retry=bq.retry, timeout=bq.timeout)
            try:
                loaded = load_parquet(bq, path, staging, schema, "WRITE_APPEND")
                if loaded != self.rows:
                    raise WarehouseError(
                        f"{self.dataset}.{self.name}: the load job staged {loaded} rows, expected "
                        f"{self.rows}; nothing was replaced"
                    )
                bq.query(*self._merge(staging, names))
                if self.with_current:
                    bq.query(self._current_view(), [])
            finally:
                bq.client.delete_table(
                    staging, not_found_ok=True, retry=bq.retry, timeout=bq.timeout
                )
        except WarehouseError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise WarehouseError(
                f"writing {self.dataset}.{self.name} failed: {one_line(exc)}; the previous scores are unchanged"
            ) from None

    def _publish_query(self, query: str, params: list[Any], kinds: Mapping[str, str]) -> None:
        import pyarrow as pa

        from ml.kinds import arrow_type

        bq = self.bq
        fields = [pa.field(c, arrow_type(k)) for c, k in kinds.items()]
        fields += [pa.field(c, t) for c, (_, t) in self.constants.items() if c not in kinds]
        schema = _bigquery_schema(pa.schema(fields))
        names = [f.name for f in schema]
        extra: list[str] = []
        constant_params: list[Any] = []
        for i, (column, (value, _)) in enumerate(self.constants.items()):
            if column in kinds:
                continue
            kind = next(f.field_type for f in schema if f.name == column)
            if value is None:
                extra.append(f"cast(null as {kind}) as {quote_ident(column)}")
            else:
                extra.append(f"@c{i} as {quote_ident(column)}")
                constant_params.append(query_parameter(f"c{i}", value, column))
        source = (
            f"select _ml_scored.*{''.join(', ' + e for e in extra)} from ({query}) as _ml_scored"
        )
        try:
            self._create_target(schema)
            sql, slice_params = self._merge(f"({source})", names, quoted=False)
            bq.query(sql, [*params, *constant_params, *slice_params])
            self.rows = self._slice_rows()
            if self.with_current:
                bq.query(self._current_view(), [])
        except WarehouseError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise WarehouseError(
                f"writing {self.dataset}.{self.name} failed: {one_line(exc)}; the previous scores are unchanged"
            ) from None

    def _slice_rows(self) -> int:
        """Rows the slice holds now (counted in BigQuery)."""
        where, params = where_sql(self.slice, "s")
        job = self.bq.query(
            f"select count(*) as n from {table_ref(self.table_id)} where {where}", params
        )
        return int(next(iter(job.result(retry=self.bq.retry, timeout=self.bq.timeout)))["n"] or 0)

    def _current_view(self) -> str:
        """`<name>__current`: per context, the slice scored last (then the highest run id)."""
        context = ", ".join(quote_ident(c) for c in self.slice if c != "run_id")
        partition = f"partition by {context} " if context else ""
        current = f"{self.table_id}{CURRENT_SUFFIX}"
        return (
            f"create or replace view {table_ref(current)} as select * except (_ml_rank) from ("
            f"select *, rank() over ({partition}order by `scored_at` desc, `run_id` desc) "
            f"as _ml_rank from {table_ref(self.table_id)}) where _ml_rank = 1"
        )

    def _merge(
        self, staging: str, names: list[str], *, quoted: bool = True
    ) -> tuple[str, list[Any]]:
        """ON FALSE matches nothing: the slice's old rows are 'not matched by source' and go,
        every staged row is 'not matched by target' and goes in; one statement, one commit.
        `staging` is a table id, or (unquoted) a parenthesized SELECT."""
        where, params = where_sql(self.slice, "s", alias="target")
        cols = ", ".join(quote_ident(c) for c in names)
        values = ", ".join(f"incoming.{quote_ident(c)}" for c in names)
        source = table_ref(staging) if quoted else staging
        sql = (
            f"merge into {table_ref(self.table_id)} as target "
            f"using {source} as incoming on false "
            f"when not matched by source and {where} then delete "
            f"when not matched by target then insert ({cols}) values ({values})"
        )
        return sql, params


# -- Arrow -> BigQuery types -----------------------------------------------------------------
def _bigquery_ready(table: pa.Table) -> pa.Table:
    """Naive timestamps are UTC (as on DuckDB): mark them so, which BigQuery loads as TIMESTAMP."""
    import pyarrow as pa

    fields = [
        pa.field(f.name, pa.timestamp("us", tz="UTC")) if pa.types.is_timestamp(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def _bigquery_schema(schema: pa.Schema) -> list[Any]:
    import pyarrow as pa
    from google.cloud import bigquery

    out = []
    for f in schema:
        t = f.type
        if pa.types.is_boolean(t):
            kind = "BOOL"
        elif pa.types.is_integer(t):
            kind = "INT64"
        elif pa.types.is_floating(t):
            kind = "FLOAT64"
        elif pa.types.is_decimal(t):
            kind = "NUMERIC" if t.precision <= 38 and t.scale <= 9 else "BIGNUMERIC"
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            kind = "STRING"
        elif pa.types.is_date(t):
            kind = "DATE"
        elif pa.types.is_timestamp(t):
            kind = "TIMESTAMP"
        else:
            raise WarehouseError(f"column '{f.name}': Arrow type {t} has no BigQuery mapping")
        out.append(bigquery.SchemaField(f.name, kind))
    return out
