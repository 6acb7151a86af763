"""Reads from DuckDB into Arrow: column kinds, filtered batches and key statistics.

Every query is SQL written here with quoted identifiers and `?` parameters: context values are
bound by the driver, never part of the SQL text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ml.errors import WarehouseError, one_line
from ml.kinds import type_name_kind
from ml.warehouse.base import (
    FaultSpelling,
    Filters,
    KeyStats,
    Population,
    ValueFaults,
    value_fault_conditions,
)
from ml.warehouse.duckdb.sql import quote_ident, select

if TYPE_CHECKING:
    import pyarrow as pa

    from ml.warehouse.base import Relation


def _catalog_filter(relation: Relation) -> tuple[str, list[str]]:
    where = "table_schema = ? and table_name = ?"
    params = [relation.schema, relation.name]
    if relation.database:
        where += " and table_catalog = ?"
        params.append(relation.database)
    return where, params


def exists(con: Any, relation: Relation) -> bool:
    where, params = _catalog_filter(relation)
    row = (
        con.cursor()
        .execute(f"select count(*) from information_schema.tables where {where}", params)
        .fetchone()
    )
    return bool(row and row[0])


def column_kinds(con: Any, relation: Relation) -> dict[str, str]:
    """Column name -> kind, in table order."""
    where, params = _catalog_filter(relation)
    rows = (
        con.cursor()
        .execute(
            f"select column_name, data_type from information_schema.columns where {where} "
            "order by ordinal_position",
            params,
        )
        .fetchall()
    )
    if not rows:
        raise WarehouseError(f"relation {relation} does not exist")
    return {name: type_name_kind(data_type) for name, data_type in rows}


def read_arrow(con: Any, relation: Relation, columns: list[str], filters: Filters) -> pa.Table:
    sql, params = select(relation, columns, dict(filters))
    try:
        return con.cursor().execute(sql, params).to_arrow_table()
    except Exception as exc:  # noqa: BLE001 - duckdb.Error and its many subclasses
        raise WarehouseError(f"reading {relation} failed: {one_line(exc)}") from None


def read_batches(
    con: Any, relation: Relation, columns: list[str], filters: Filters, batch_size: int
) -> Iterator[pa.RecordBatch]:
    sql, params = select(relation, columns, dict(filters))
    cursor = con.cursor()  # held by this generator while it streams
    try:
        reader = cursor.execute(sql, params).to_arrow_reader(batch_size)
    except Exception as exc:  # noqa: BLE001
        raise WarehouseError(f"reading {relation} failed: {one_line(exc)}") from None
    yield from reader


def count_query_rows(con: Any, sql: str, filters: Filters) -> int:
    where = " and ".join(f"{quote_ident(c)} = ?" for c in filters) or "true"
    try:
        row = (
            con.cursor()
            .execute(
                f"select count(*) from ({sql}) as population where {where}", list(filters.values())
            )
            .fetchone()
        )
    except Exception as exc:  # noqa: BLE001
        raise WarehouseError(f"counting the rows of a query failed: {one_line(exc)}") from None
    return int(row[0] or 0)


def key_stats(
    con: Any, relation: Relation, keys: list[str], filters: Filters, *, distinct: bool = True
) -> KeyStats:
    population, params = select(relation, keys, dict(filters))
    key_list = ", ".join(quote_ident(k) for k in keys)
    nulls = "".join(f", count(*) - count({quote_ident(k)})" for k in keys)
    distinct_sql = (
        f"(select count(*) from (select distinct {key_list} from population))"
        if distinct
        else "null"
    )
    sql = (
        f"with population as ({population}) select count(*){nulls}, {distinct_sql} from population"
    )
    try:
        row = con.cursor().execute(sql, params).fetchone()
    except Exception as exc:  # noqa: BLE001
        raise WarehouseError(f"reading {relation} failed: {one_line(exc)}") from None
    return KeyStats(
        rows=int(row[0] or 0),
        nulls={k: int(row[1 + i] or 0) for i, k in enumerate(keys)},
        distinct=None if row[-1] is None else int(row[-1]),
    )


def population(relation: Relation, columns: list[str], filters: Filters) -> Population:
    sql, params = select(relation, columns, dict(filters))
    return Population(f"({sql})", params)


_FAULTS = FaultSpelling(float_type="double", is_nan="isnan", is_inf="isinf")


def value_faults(
    con: Any, relation: Relation, kinds: Mapping[str, str], filters: Filters
) -> ValueFaults:
    """One pass over the filtered relation counting, per numeric feature, what
    `ml.contract.check_feature_values` refuses."""
    counts = value_fault_conditions(kinds, quote_ident, _FAULTS)
    if not counts:
        return {}
    sql, params = select(relation, list(kinds), dict(filters))
    terms = ", ".join(f"count(*) filter (where {cond})" for _, _, cond in counts)
    try:
        row = con.cursor().execute(f"select {terms} from ({sql})", params).fetchone()
    except Exception as exc:  # noqa: BLE001
        raise WarehouseError(f"reading {relation} failed: {one_line(exc)}") from None
    faults: ValueFaults = {}
    for (name, fault, _), n in zip(counts, row, strict=True):
        faults.setdefault(name, {})[fault] = int(n or 0)
    return faults


def read_sample(
    con: Any, relation: Relation, columns: list[str], filters: Filters, rows: int
) -> pa.Table:
    """A reservoir sample of the filtered rows, seeded (the same rows for the same data)."""
    sql, params = select(relation, columns, dict(filters))
    sample = f"select * from ({sql}) using sample reservoir({int(rows)} rows) repeatable (42)"
    try:
        return con.cursor().execute(sample, params).to_arrow_table()
    except Exception as exc:  # noqa: BLE001
        raise WarehouseError(f"sampling {relation} failed: {one_line(exc)}") from None
