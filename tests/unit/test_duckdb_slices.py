"""Score relations on DuckDB: a view over narrow slices, replaced atomically, on a real file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from ml.errors import WarehouseError
from ml.warehouse.duckdb.write import DuckDBSliceWriter

WHEN = dt.datetime(2026, 11, 24, 8, 0, 0)


def _constants(run: str, version: str | None = "1", when: dt.datetime = WHEN) -> dict:
    return {
        "model_name": ("uplift", pa.string()),
        "model_version": (version, pa.string()),
        "run_id": (run, pa.string()),
        "scored_at": (when, pa.timestamp("us")),
    }


def _batch(ids: range, campaign: str, score: float) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array(list(ids), pa.int64()),
            "campaign_id": pa.array([campaign] * len(ids)),
            "score": pa.array([score] * len(ids), pa.float64()),
        }
    )


def _write(con, campaign: str, run: str, batches: list[pa.Table], **kw) -> DuckDBSliceWriter:
    slice_ = {"campaign_id": campaign, "run_id": run}
    with DuckDBSliceWriter(con, "predictions", "uplift", slice_, _constants(run, **kw)) as w:
        for b in batches:
            w.write(b)
    return w


def _rows(con, where: str = "true") -> list[tuple]:
    return con.execute(
        "select customer_id, campaign_id, score, model_name, model_version, run_id, scored_at "
        f"from predictions.uplift where {where} order by all"
    ).fetchall()


@pytest.fixture
def con(tmp_path: Path):
    c = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield c
    c.close()


def test_view_has_the_score_columns_in_order(con) -> None:
    w = _write(con, "c1", "r1", [_batch(range(3), "c1", 0.5)])
    assert w.rows == 3
    described = con.execute("describe predictions.uplift").fetchall()
    assert [(r[0], r[1]) for r in described] == [
        ("customer_id", "BIGINT"),
        ("campaign_id", "VARCHAR"),
        ("score", "DOUBLE"),
        ("model_name", "VARCHAR"),
        ("model_version", "VARCHAR"),
        ("run_id", "VARCHAR"),
        ("scored_at", "TIMESTAMP"),
    ]
    assert _rows(con) == [(i, "c1", 0.5, "uplift", "1", "r1", WHEN) for i in range(3)]
    kinds = dict(
        con.execute(
            "select table_name, table_type from information_schema.tables "
            "where table_schema = 'predictions'"
        ).fetchall()
    )
    assert kinds == {
        "uplift": "VIEW",
        "uplift__current": "VIEW",
        "_uplift__scores": "BASE TABLE",
        "_uplift__slices": "BASE TABLE",
    }


def test_rescoring_replaces_only_its_slice(con) -> None:
    _write(con, "c1", "r1", [_batch(range(0, 4), "c1", 0.1), _batch(range(4, 8), "c1", 0.1)])
    _write(con, "c2", "r1", [_batch(range(5), "c2", 0.2)])
    _write(con, "c1", "r2", [_batch(range(2), "c1", 0.3)])
    _write(con, "c1", "r1", [_batch(range(6), "c1", 0.9)])  # again: replaces, never adds

    assert _rows(con, "campaign_id = 'c1' and run_id = 'r1'") == [
        (i, "c1", 0.9, "uplift", "1", "r1", WHEN) for i in range(6)
    ]
    assert len(_rows(con, "campaign_id = 'c2'")) == 5
    assert len(_rows(con, "run_id = 'r2'")) == 2
    # the replaced rows are gone from storage too, not just hidden
    assert con.execute("select count(*) from predictions._uplift__scores").fetchone()[0] == 13
    states = con.execute("select distinct state from predictions._uplift__slices").fetchall()
    assert states == [("live",)]


def test_readers_see_the_old_rows_until_the_swap(con) -> None:
    _write(con, "c1", "r1", [_batch(range(3), "c1", 0.1)])
    reader = con.cursor()
    slice_ = {"campaign_id": "c1", "run_id": "r1"}
    with DuckDBSliceWriter(con, "predictions", "uplift", slice_, _constants("r1")) as w:
        w.write(_batch(range(10), "c1", 0.7))
        assert {r[2] for r in _rows(reader)} == {0.1} and len(_rows(reader)) == 3
        w.write(_batch(range(10, 20), "c1", 0.7))
        assert len(_rows(reader)) == 3
    assert {r[2] for r in _rows(reader)} == {0.7} and len(_rows(reader)) == 20


def test_a_failed_write_leaves_the_previous_rows_and_no_trace(con, monkeypatch) -> None:
    monkeypatch.setattr("ml.warehouse.duckdb.write.COMMIT_ROWS", 10)  # part committed, part open
    _write(con, "c1", "r1", [_batch(range(3), "c1", 0.1)])
    before = _rows(con)
    with pytest.raises(RuntimeError, match="boom"):
        slice_ = {"campaign_id": "c1", "run_id": "r1"}
        with DuckDBSliceWriter(con, "predictions", "uplift", slice_, _constants("r1")) as w:
            w.write(_batch(range(50), "c1", 0.8))
            w.write(_batch(range(50, 55), "c1", 0.8))
            raise RuntimeError("boom")
    assert _rows(con) == before
    assert con.execute("select count(*) from predictions._uplift__scores").fetchone()[0] == 3
    assert con.execute("select count(*) from predictions._uplift__slices").fetchone()[0] == 1


def test_a_killed_writer_is_invisible_and_cleared_by_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "ml.warehouse.duckdb.write.COMMIT_ROWS", 10
    )  # commit as it goes, like 10M rows
    path = str(tmp_path / "warehouse.duckdb")
    with duckdb.connect(path) as con:
        _write(con, "c1", "r1", [_batch(range(3), "c1", 0.1)])
        killed = DuckDBSliceWriter(
            con, "predictions", "uplift", {"campaign_id": "c1", "run_id": "r1"}, _constants("r1")
        )
        killed.write(_batch(range(40), "c1", 0.6))  # committed, never swapped in
        killed.write(_batch(range(40, 45), "c1", 0.6))  # still in the open transaction
        # the process dies here: no __exit__
    with duckdb.connect(path) as con:
        assert len(_rows(con)) == 3 and {r[2] for r in _rows(con)} == {0.1}
        assert con.execute("select count(*) from predictions._uplift__scores").fetchone()[0] == 43
        _write(con, "c2", "r1", [_batch(range(2), "c2", 0.2)])  # any later write clears it
        assert con.execute("select count(*) from predictions._uplift__scores").fetchone()[0] == 5
        assert len(_rows(con, "campaign_id = 'c1'")) == 3


def test_a_table_from_the_older_layout_is_converted_with_its_values(con) -> None:
    con.execute("create schema predictions")
    con.execute(
        "create table predictions.uplift (customer_id bigint, campaign_id varchar, score double, "
        "model_name varchar, model_version varchar, run_id varchar, scored_at timestamp)"
    )
    con.execute(
        "insert into predictions.uplift values "
        "(1, 'c1', 0.1, 'uplift', '1', 'r1', ?), (2, 'c1', 0.2, 'uplift', '1', 'r1', ?), "
        "(1, 'c2', 0.3, 'uplift', null, 'r0', ?)",
        [WHEN, WHEN, WHEN],
    )
    _write(con, "c3", "r1", [_batch(range(2), "c3", 0.4)])
    assert _rows(con, "campaign_id <> 'c3'") == [
        (1, "c1", 0.1, "uplift", "1", "r1", WHEN),
        (1, "c2", 0.3, "uplift", None, "r0", WHEN),
        (2, "c1", 0.2, "uplift", "1", "r1", WHEN),
    ]
    assert len(_rows(con, "campaign_id = 'c3'")) == 2
    _write(con, "c1", "r1", [_batch(range(1), "c1", 0.5)])  # converted slices replace as usual
    assert _rows(con, "campaign_id = 'c1'") == [(0, "c1", 0.5, "uplift", "1", "r1", WHEN)]


def test_different_columns_are_refused_in_one_line(con) -> None:
    _write(con, "c1", "r1", [_batch(range(3), "c1", 0.1)])
    other = pa.table({"account_id": pa.array([1]), "campaign_id": ["c1"], "score": [0.2]})
    with pytest.raises(WarehouseError) as err:
        _write(con, "c1", "r2", [other])
    message = str(err.value)
    assert "\n" not in message
    assert "predictions._uplift__scores: existing columns" in message
    assert "drop or rename" in message
    assert len(_rows(con)) == 3


def test_current_view_has_the_slice_written_last_per_context(con) -> None:
    _write(con, "c1", "r1", [_batch(range(3), "c1", 0.1)])
    _write(con, "c2", "r1", [_batch(range(2), "c2", 0.2)])
    _write(con, "c1", "r2", [_batch(range(4), "c1", 0.3)])  # another run, same context

    def current(campaign: str) -> set[tuple]:
        return set(
            con.execute(
                "select customer_id, score, run_id from predictions.uplift__current "
                "where campaign_id = ?",
                [campaign],
            ).fetchall()
        )

    assert len(_rows(con, "campaign_id = 'c1'")) == 7  # the history keeps both runs' slices
    assert current("c1") == {(i, 0.3, "r2") for i in range(4)}
    assert current("c2") == {(i, 0.2, "r1") for i in range(2)}
    _write(con, "c1", "r1", [_batch(range(1), "c1", 0.9)])  # re-scoring r1 makes it the latest
    assert current("c1") == {(0, 0.9, "r1")}


def test_current_view_keeps_the_old_slice_while_a_new_one_fails(con) -> None:
    _write(con, "c1", "r1", [_batch(range(3), "c1", 0.1)])
    with (
        pytest.raises(RuntimeError),
        DuckDBSliceWriter(
            con, "predictions", "uplift", {"campaign_id": "c1", "run_id": "r2"}, _constants("r2")
        ) as w,
    ):
        w.write(_batch(range(5), "c1", 0.7))
        raise RuntimeError("killed mid-write")
    rows = con.execute("select score from predictions.uplift__current").fetchall()
    assert rows == [(0.1,)] * 3
