"""Writes to DuckDB: whole tables in one transaction, and score tables as a view over narrow
slices, so a slice is replaced atomically without holding it in one large transaction.

`<schema>.<name>`, the relation users and dbt read, is a view over two tables:
- `_<name>__scores`: one row per scored entity: `slice_id`, the entity keys, `score`;
- `_<name>__slices`: one row per slice (context + training run): `slice_id`, `state`, the
  context columns, model_name, model_version, run_id, scored_at.

The view shows the rows of `live` slices only. A write appends its rows under a new slice id,
committing every million rows or so (memory stays bounded by that, not by the population;
the per-row constants are stored once per slice, not once per row), and then one short
transaction marks the new slice live and the slice it replaces `replaced`: readers see the old
rows until that commit and the new ones after it, never a mixture. The replaced rows are
deleted afterwards. A write that fails deletes its own rows; one that was killed leaves a
`writing` slice that the next write to the table removes (writers hold the warehouse lock, so
no other writer can be running). Tables written by an older layout (one table holding every
column) are converted on the first write.

`<schema>.<name>__current` is a view of the same rows restricted to the slice written last for
each context: the scores analysts mean when they ask for "the" scores of a campaign.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from ml.errors import ConfigError, WarehouseError, one_line
from ml.warehouse.duckdb.sql import marks as _marks
from ml.warehouse.duckdb.sql import quote_ident as q

LIVE, WRITING, REPLACED = "live", "writing", "replaced"
CURRENT_SUFFIX = "__current"  # `<name>__current`: the latest slice per context
# Rows appended per transaction while a slice is written: large enough that commits cost
# little, small enough that the open transaction's rows (held in memory) stay a few MB.
COMMIT_ROWS = 1_000_000


class DuckDBSliceWriter:
    """Replaces the rows of `<schema>.<name>` matching `slice_` (column -> value) with the
    batches written, plus constant columns (column -> (value, Arrow type))."""

    def __init__(
        self,
        raw: Any,
        schema: str,
        name: str,
        slice_: Mapping[str, Any],
        constants: Mapping[str, tuple[Any, Any]],
        *,
        current: bool = True,
    ) -> None:
        self.schema, self.name, self.slice = schema, name, dict(slice_)
        self.with_current = current
        self.constants = dict(constants)
        self.view = f"{q(schema)}.{q(name)}"
        self.current = f"{q(schema)}.{q(name + CURRENT_SUFFIX)}"
        self.scores = f"{q(schema)}.{q(f'_{name}__scores')}"
        self.slices = f"{q(schema)}.{q(f'_{name}__slices')}"
        self.rows = 0
        self._con = raw.cursor()  # its own connection: reads stream on the other one
        self._insert = ""
        self._slice_id: int | None = None
        self._score_cols: list[str] = []
        self._uncommitted = -1  # rows appended in the open transaction; -1: none open

    def __enter__(self) -> DuckDBSliceWriter:
        return self

    # -- writing -----------------------------------------------------------------------------
    def write(self, batch: pa.Table | pa.RecordBatch) -> None:
        if not self._insert:
            self._prepare(batch.schema)
        if self._uncommitted < 0:
            self._con.execute("begin transaction")
            self._uncommitted = 0
        self._con.register("_ml_batch", batch)
        try:
            self._con.execute(self._insert, [self._slice_id])
        finally:
            self._con.unregister("_ml_batch")
        self.rows += batch.num_rows
        self._uncommitted += batch.num_rows
        if self._uncommitted >= COMMIT_ROWS:
            self._con.execute("commit")
            self._uncommitted = -1

    def write_query(self, query: str, params: list[Any], kinds: Mapping[str, str]) -> None:
        """`insert into _<name>__scores select ...`: the query's rows go into the new slice
        without leaving DuckDB, in one transaction of their own; the swap follows on exit."""
        from ml.kinds import arrow_type

        schema = pa.schema([pa.field(c, arrow_type(k)) for c, k in kinds.items()])
        if not self._insert:
            self._prepare(schema)
        if self._uncommitted >= 0:
            self._con.execute("commit")
            self._uncommitted = -1
        cols = ", ".join(q(c) for c in self._score_cols)
        insert = (
            f"insert into {self.scores} (slice_id, {cols}) select cast(? as bigint), {cols} "
            f"from ({query}) as _ml_scored"
        )
        self._con.execute("begin transaction")
        try:
            row = self._con.execute(insert, [self._slice_id, *params]).fetchone()
            self._con.execute("commit")
        except Exception as exc:  # noqa: BLE001 - duckdb.Error and its many subclasses
            self._con.execute("rollback")
            raise WarehouseError(
                f"{self.schema}.{self.name}: scoring in DuckDB failed ({one_line(exc)}); "
                "the previous scores are unchanged"
            ) from None
        self.rows += int(row[0] if row else 0)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if self._slice_id is None:
                return  # nothing was written (an empty population is refused before this)
            if self._uncommitted >= 0:
                self._con.execute("commit" if exc_type is None else "rollback")
                self._uncommitted = -1
            if exc_type is None:
                self._swap()
            else:
                self._discard(self._slice_id)
        finally:
            self._con.close()

    def _swap(self) -> None:
        where = " and ".join(f"{q(c)} = ?" for c in self.slice) or "true"
        con = self._con
        con.execute("begin transaction")
        try:
            old = [
                r[0]
                for r in con.execute(
                    f"select slice_id from {self.slices} where state = ? and {where}",
                    [LIVE, *self.slice.values()],
                ).fetchall()
            ]
            if old:
                con.execute(
                    f"update {self.slices} set state = ? where slice_id in ({_marks(old)})",
                    [REPLACED, *old],
                )
            con.execute(
                f"update {self.slices} set state = ? where slice_id = ?", [LIVE, self._slice_id]
            )
            con.execute("commit")
        except Exception:
            con.execute("rollback")
            raise
        for slice_id in old:  # no longer visible; a crash here leaves them for the next write
            self._discard(slice_id)

    def _discard(self, slice_id: int) -> None:
        self._con.execute(f"delete from {self.scores} where slice_id = ?", [slice_id])
        self._con.execute(f"delete from {self.slices} where slice_id = ?", [slice_id])

    # -- layout ------------------------------------------------------------------------------
    def _prepare(self, batch_schema: pa.Schema) -> None:
        """Create or check the tables and the view, clear what killed writers left, and open
        a new slice in state `writing`."""
        con = self._con
        meta_fields = [f for f in batch_schema if f.name in self.slice] + [
            pa.field(c, t) for c, (_, t) in self.constants.items()
        ]
        meta_names = {f.name for f in meta_fields}
        score_fields = [f for f in batch_schema if f.name not in meta_names]
        self._score_cols = [f.name for f in score_fields]
        view_cols = [f.name for f in batch_schema] + [
            c for c in self.constants if c not in {f.name for f in batch_schema}
        ]
        scores_schema = pa.schema([pa.field("slice_id", pa.int64()), *score_fields])
        slices_schema = pa.schema(
            [pa.field("slice_id", pa.int64()), pa.field("state", pa.string()), *meta_fields]
        )
        con.execute(f"create schema if not exists {q(self.schema)}")
        con.execute("begin transaction")
        try:
            kind = self._relation_kind()
            if kind == "BASE TABLE":
                self._convert(scores_schema, slices_schema, view_cols)
            else:
                for table, schema in ((self.scores, scores_schema), (self.slices, slices_schema)):
                    con.register("_ml_empty", schema.empty_table())
                    con.execute(f"create table if not exists {table} as select * from _ml_empty")
                    con.unregister("_ml_empty")
                    self._check_columns(table, schema.names)
                self._create_view(view_cols, meta_names)
            con.execute("commit")
        except Exception as exc:
            con.execute("rollback")
            if isinstance(exc, WarehouseError):
                raise
            raise WarehouseError(
                f"{self.schema}.{self.name}: cannot prepare the score tables ({one_line(exc)})"
            ) from None
        self._clear_leftovers()
        self._slice_id = con.execute(
            f"select greatest((select coalesce(max(slice_id), 0) from {self.slices}), "
            f"(select coalesce(max(slice_id), 0) from {self.scores})) + 1"
        ).fetchone()[0]
        values = {**self.slice, **{c: v for c, (v, _) in self.constants.items()}}
        meta = [f.name for f in meta_fields]
        con.execute(
            f"insert into {self.slices} (slice_id, state, {', '.join(q(c) for c in meta)}) "
            f"values (?, ?, {_marks(meta)})",
            [self._slice_id, WRITING, *(values[c] for c in meta)],
        )
        cols = ", ".join(q(c) for c in self._score_cols)
        self._insert = (
            f"insert into {self.scores} (slice_id, {cols}) select cast(? as bigint), {cols} "
            "from _ml_batch"
        )

    def _relation_kind(self) -> str | None:
        row = self._con.execute(
            "select table_type from information_schema.tables "
            "where table_schema = ? and table_name = ?",
            [self.schema, self.name],
        ).fetchone()
        return row[0] if row else None

    def _check_columns(self, relation: str, expected: list[str]) -> None:
        existing = [
            r[0] for r in self._con.execute(f"select * from {relation} limit 0").description
        ]
        if set(existing) != set(expected):
            shown = relation.replace('"', "")
            raise WarehouseError(
                f"{shown}: existing columns ({', '.join(existing)}) differ "
                f"from the scores ({', '.join(expected)}); drop or rename {shown}"
            )

    def _create_view(self, view_cols: list[str], meta_names: set[str]) -> None:
        """`<name>`: every live slice (one per context and run); `<name>__current`: per context,
        the slice written last (slice ids only grow)."""
        select = ", ".join(f"m.{q(c)}" if c in meta_names else f"s.{q(c)}" for c in view_cols)
        joined = (
            f"select {select} from {self.scores} s join {self.slices} m "
            f"on s.slice_id = m.slice_id where m.state = '{LIVE}'"
        )
        self._con.execute(f"create or replace view {self.view} as {joined}")
        if not self.with_current:
            return
        context = [c for c in self.slice if c != "run_id"]
        same = "".join(f" and latest.{q(c)} is not distinct from m.{q(c)}" for c in context)
        self._con.execute(
            f"create or replace view {self.current} as {joined} and m.slice_id = ("
            f"select max(latest.slice_id) from {self.slices} latest "
            f"where latest.state = '{LIVE}'{same})"
        )

    def _clear_leftovers(self) -> None:
        stale = [
            r[0]
            for r in self._con.execute(
                f"select slice_id from {self.slices} where state <> ?", [LIVE]
            ).fetchall()
        ]
        for slice_id in stale:
            self._discard(slice_id)

    def _convert(self, scores: pa.Schema, slices: pa.Schema, view_cols: list[str]) -> None:
        """An older layout's single table becomes the two tables and the view, in the caller's
        transaction; every row keeps its values."""
        con = self._con
        self._check_columns(self.view, view_cols)
        meta = [c for c in slices.names if c not in ("slice_id", "state")]
        old = f"{q(self.schema)}.{q(f'_{self.name}__old')}"
        con.execute(f"alter table {self.view} rename to {q(f'_{self.name}__old')}")
        meta_sql = ", ".join(q(c) for c in meta)
        con.execute(
            f"create table {self.slices} as select row_number() over () as slice_id, "
            f"'{LIVE}' as state, {meta_sql} from (select distinct {meta_sql} from {old})"
        )
        join = " and ".join(f"o.{q(c)} is not distinct from m.{q(c)}" for c in meta)
        score_sql = ", ".join(f"o.{q(c)}" for c in scores.names if c != "slice_id")
        con.execute(
            f"create table {self.scores} as select m.slice_id, {score_sql} "
            f"from {old} o join {self.slices} m on {join}"
        )
        con.execute(f"drop table {old}")
        self._create_view(view_cols, set(meta))


def replace_tables(con: Any, schema: str, tables: Mapping[str, pa.Table]) -> None:
    """Create or replace whole tables in one transaction (the raw demo data)."""
    con.execute(f"create schema if not exists {q(schema)}")
    con.execute("begin transaction")
    try:
        for name, table in tables.items():
            con.register("_ml_incoming", table)
            con.execute(
                f"create or replace table {q(schema)}.{q(name)} as select * from _ml_incoming"
            )
            con.unregister("_ml_incoming")
        con.execute("commit")
    except Exception as exc:  # noqa: BLE001 - duckdb.Error and its many subclasses
        con.execute("rollback")
        if isinstance(exc, ConfigError):
            raise
        raise WarehouseError(f"writing to schema {schema} failed: {one_line(exc)}") from None
