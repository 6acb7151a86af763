"""Reads from BigQuery into Arrow: column kinds, filtered batches and key statistics.

Tables are read through the Storage Read API in Arrow when it is available, and through REST
pages otherwise. A filter becomes a parameterized query (typed parameters, never pasted values)
whose result table is read the same way; statistics are computed in BigQuery, not in Python.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ml.errors import WarehouseError, one_line
from ml.kinds import arrow_type, type_name_kind
from ml.warehouse.base import (
    FaultSpelling,
    KeyStats,
    Population,
    ValueFaults,
    value_fault_conditions,
)
from ml.warehouse.bigquery.sql import quote_ident, table_ref, where_sql

if TYPE_CHECKING:
    import pyarrow as pa

    from ml.warehouse.base import Relation
    from ml.warehouse.bigquery.connection import BigQuery


def column_kinds(bq: BigQuery, relation: Relation) -> dict[str, str]:
    """Each column's logical kind, the vocabulary the contract checks compare."""
    from google.api_core.exceptions import NotFound

    try:
        table = bq.get_table(bq.table_id(relation))
    except NotFound:
        raise WarehouseError(f"relation {relation} does not exist") from None
    except Exception as exc:  # noqa: BLE001
        raise WarehouseError(f"BigQuery: cannot look up {relation} ({one_line(exc)})") from None
    return {f.name: type_name_kind(f.field_type) for f in table.schema}


def _select(
    bq: BigQuery, relation: Relation, columns: list[str], filters: Mapping[str, Any]
) -> tuple[str, list[Any]]:
    where, params = where_sql(filters, "f")
    cols = ", ".join(quote_ident(c) for c in columns)
    return f"select {cols} from {table_ref(bq.table_id(relation))} where {where}", params


def read_batches(
    bq: BigQuery,
    relation: Relation,
    columns: list[str],
    filters: Mapping[str, Any],
    batch_size: int,
) -> Iterator[pa.RecordBatch]:
    """The filtered columns in Arrow batches: a plain table read when there is no filter,
    else a parameterized query whose result table is read the same way."""
    try:
        if filters:
            job = bq.query(*_select(bq, relation, columns, filters))
            dest = job.destination
            source = f"{dest.project}.{dest.dataset_id}.{dest.table_id}"
            yield from _read_table(bq, source, None, columns, batch_size, job)
        else:
            yield from _read_table(bq, bq.table_id(relation), columns, columns, batch_size)
    except WarehouseError:
        raise
    except Exception as exc:  # noqa: BLE001 - google.api_core and grpc errors
        raise WarehouseError(f"reading {relation} failed: {one_line(exc)}") from None


def read_arrow(
    bq: BigQuery, relation: Relation, columns: list[str], filters: Mapping[str, Any]
) -> pa.Table:
    import pyarrow as pa

    batches = list(read_batches(bq, relation, columns, filters, 100_000))
    if batches:
        return pa.Table.from_batches(batches)
    schema = bq.get_table(bq.table_id(relation)).schema
    by_name = {f.name: f for f in schema}
    return pa.schema([pa.field(c, _arrow_type(by_name[c])) for c in columns]).empty_table()


def _read_table(
    bq: BigQuery,
    table_id: str,
    fields: list[str] | None,
    columns: list[str],
    batch_size: int,
    job: Any = None,
) -> Iterator[pa.RecordBatch]:
    """A table (or a query's result table) through the Storage Read API, else REST pages."""
    storage = bq.storage()
    if storage is not None:
        batches = _storage_batches(bq, storage, table_id, fields)
        stream: Iterator[pa.RecordBatch] | None = batches
        try:
            first = next(batches, None)
        except _api_errors():  # e.g. an emulator that serves tables but not query results
            first, stream = None, None  # nothing was yielded yet: REST reads it whole
        if stream is not None:
            if first is not None:
                yield first.select(columns)
                for batch in stream:
                    yield batch.select(columns)
            return
    if job is not None:  # a query's result: its pages, as the job serves them
        rows = job.result(page_size=batch_size, retry=bq.retry, timeout=bq.timeout)
    else:
        by_name = {f.name: f for f in bq.get_table(table_id).schema}
        rows = bq.client.list_rows(
            table_id,
            selected_fields=[by_name[c] for c in fields or columns],
            page_size=batch_size,
            retry=bq.retry,
            timeout=bq.timeout,
        )
    for batch in rows.to_arrow_iterable(bqstorage_client=None):
        if batch.num_rows:  # REST may serve empty pages; the model wants rows
            yield batch.select(columns)


def _storage_batches(
    bq: BigQuery, storage: Any, table_id: str, fields: list[str] | None
) -> Iterator[pa.RecordBatch]:
    from google.cloud.bigquery_storage_v1 import types

    project, dataset, table = table_id.split(".")
    options = types.ReadSession.TableReadOptions(selected_fields=fields or [])
    session = storage.create_read_session(
        parent=f"projects/{bq.project}",
        read_session=types.ReadSession(
            table=f"projects/{project}/datasets/{dataset}/tables/{table}",
            data_format=types.DataFormat.ARROW,
            read_options=options,
        ),
        max_stream_count=1,  # one ordered stream: memory stays at one page
        timeout=bq.timeout,
    )
    for stream in session.streams:
        reader = storage.read_rows(stream.name, timeout=bq.timeout)
        for page in reader.rows(session).pages:
            batch = page.to_arrow()  # one RecordBatch per page
            if batch.num_rows:
                yield batch


def count_query_rows(bq: BigQuery, sql: str, filters: Mapping[str, Any]) -> int:
    where, params = where_sql(filters, "f")
    try:
        job = bq.query(f"select count(*) as n from ({sql}) where {where}", params)
        row = next(iter(job.result(retry=bq.retry, timeout=bq.timeout)))
    except Exception as exc:  # noqa: BLE001
        raise WarehouseError(f"counting the rows of a query failed: {one_line(exc)}") from None
    return int(row["n"] or 0)


def key_stats(
    bq: BigQuery,
    relation: Relation,
    keys: list[str],
    filters: Mapping[str, Any],
    *,
    distinct: bool = True,
) -> KeyStats:
    """Rows, null keys and (when asked) distinct keys of a filtered relation, computed in
    BigQuery."""
    where, params = where_sql(filters, "f")
    key_cols = ", ".join(quote_ident(k) for k in keys)
    nulls = ", ".join(
        f"(select countif({quote_ident(k)} is null) from population) as nulls_{i}"
        for i, k in enumerate(keys)
    )
    distinct_sql = (
        f"(select count(*) from (select distinct {key_cols} from population))"
        if distinct
        else "cast(null as int64)"
    )
    sql = (
        f"with population as (select {key_cols} from {table_ref(bq.table_id(relation))} where {where}) "
        f"select (select count(*) from population) as n_rows, "
        f"{distinct_sql} as n_distinct{', ' if nulls else ''}{nulls}"
    )
    try:
        job = bq.query(sql, params)
        row = next(iter(job.result(retry=bq.retry, timeout=bq.timeout)))
    except Exception as exc:  # noqa: BLE001
        raise WarehouseError(f"reading {relation} failed: {one_line(exc)}") from None
    return KeyStats(
        rows=int(row["n_rows"] or 0),
        nulls={k: int(row[f"nulls_{i}"] or 0) for i, k in enumerate(keys)},
        distinct=None if row["n_distinct"] is None else int(row["n_distinct"]),
    )


def population(
    bq: BigQuery, relation: Relation, columns: list[str], filters: Mapping[str, Any]
) -> Population:
    sql, params = _select(bq, relation, columns, filters)
    return Population(f"({sql})", params)


_FAULTS = FaultSpelling(float_type="float64", is_nan="is_nan", is_inf="is_inf")


def value_faults(
    bq: BigQuery, relation: Relation, kinds: Mapping[str, str], filters: Mapping[str, Any]
) -> ValueFaults:
    """One query counting, per numeric feature, what `ml.contract.check_feature_values`
    refuses."""
    counts = value_fault_conditions(kinds, quote_ident, _FAULTS)
    if not counts:
        return {}
    sql, params = _select(bq, relation, list(kinds), filters)
    terms = ", ".join(f"countif({cond}) as n{i}" for i, (_, _, cond) in enumerate(counts))
    try:
        job = bq.query(f"select {terms} from ({sql})", params)
        row = next(iter(job.result(retry=bq.retry, timeout=bq.timeout)))
    except Exception as exc:  # noqa: BLE001
        raise WarehouseError(f"reading {relation} failed: {one_line(exc)}") from None
    faults: ValueFaults = {}
    for i, (name, fault, _) in enumerate(counts):
        faults.setdefault(name, {})[fault] = int(row[f"n{i}"] or 0)
    return faults


def read_sample(
    bq: BigQuery, relation: Relation, columns: list[str], filters: Mapping[str, Any], rows: int
) -> pa.Table:
    """About `rows` of the filtered rows, chosen by a hash of each row's values (the same rows
    for the same data): only the sample leaves BigQuery."""
    import pyarrow as pa

    sql, params = _select(bq, relation, columns, filters)
    values = ", ".join(quote_ident(c) for c in columns)
    row_hash = f"farm_fingerprint(to_json_string(struct({values})))"
    try:
        counted = bq.query(f"select count(*) as n from ({sql})", params)
        total = int(next(iter(counted.result(retry=bq.retry, timeout=bq.timeout)))["n"] or 0)
        per_million = int(min(1.0, rows / total) * 1_000_000) if total else 1_000_000
        job = bq.query(
            f"select * from ({sql}) where mod(abs({row_hash}), 1000000) < {per_million}", params
        )
        batches = list(_read_table(bq, _destination(job), None, columns, 100_000, job))
    except Exception as exc:  # noqa: BLE001
        raise WarehouseError(f"sampling {relation} failed: {one_line(exc)}") from None
    return pa.Table.from_batches(batches) if batches else _empty(bq, relation, columns)


def _destination(job: Any) -> str:
    dest = job.destination
    return f"{dest.project}.{dest.dataset_id}.{dest.table_id}"


def _empty(bq: BigQuery, relation: Relation, columns: list[str]) -> pa.Table:
    import pyarrow as pa

    by_name = {f.name: f for f in bq.get_table(bq.table_id(relation)).schema}
    return pa.schema([pa.field(c, _arrow_type(by_name[c])) for c in columns]).empty_table()


def _api_errors() -> tuple[type[BaseException], ...]:
    """What a refused or unsupported Storage Read API call raises (not programming errors)."""
    import grpc
    from google.api_core.exceptions import GoogleAPIError

    return (GoogleAPIError, grpc.RpcError)


def _arrow_type(field: Any) -> Any:
    """A BigQuery field's Arrow type as BigQuery reads return it (timestamps in UTC)."""
    import pyarrow as pa

    kind = type_name_kind(field.field_type)
    return pa.timestamp("us", tz="UTC") if kind == "timestamp" else arrow_type(kind)
