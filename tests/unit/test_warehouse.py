from __future__ import annotations

from pathlib import Path

import pytest

from ml.config import load_settings
from ml.errors import ConfigError
from ml.kinds import declared_kind
from ml.warehouse import BACKENDS, Relation, connect
from ml.warehouse.duckdb.sql import select


def test_filters_are_bound_parameters_never_sql_text() -> None:
    value = "cmp'; drop table predictions.xgboost_x_learner; --"
    sql, params = select(
        Relation("warehouse", "analytics_loaders", "score_uplift"),
        ["customer_id"],
        {"campaign_id": value},
    )
    assert (
        sql
        == 'select "customer_id" from "warehouse"."analytics_loaders"."score_uplift" where "campaign_id" = ?'
    )
    assert params == [value]


def test_contract_types_map_to_kinds() -> None:
    assert [
        declared_kind(t)
        for t in ("int64", "BIGINT", "double", "float64", "string", "varchar(20)", "bool", "date")
    ] == ["int", "int", "float", "float", "string", "string", "bool", "date"]
    assert declared_kind("geography") is None


def test_the_backend_comes_from_the_table_and_connects_lazily(root: Path) -> None:
    settings = load_settings(root=root)
    wh = connect(settings)
    module, _, name = BACKENDS["duckdb"].partition(":")
    assert type(wh).__module__ == module and type(wh).__name__ == name
    # nothing opened yet: the DuckDB file is opened on first use
    assert wh._connection.raw is None  # type: ignore[attr-defined]


def test_an_unknown_backend_is_one_config_error(root: Path) -> None:
    settings = load_settings(root=root)
    odd = settings.model_copy(
        update={"warehouse": settings.warehouse.model_copy(update={"type": "snowflake"})}
    )
    with pytest.raises(ConfigError, match="warehouse.type: 'snowflake' is not supported"):
        connect(odd)


def _threads(wh) -> int:
    return int(wh.con.execute("select current_setting('threads')").fetchone()[0])


def _duckdb_settings(root: Path, tmp_path: Path, **duckdb: object):
    """The project's settings on a DuckDB file of the test's own, with `duckdb` overrides."""
    settings = load_settings(root=root)
    duck = settings.warehouse.duckdb.model_copy(
        update={"path": str(tmp_path / "w.duckdb"), **duckdb}
    )
    return settings.model_copy(
        update={"warehouse": settings.warehouse.model_copy(update={"duckdb": duck})}
    )


@pytest.mark.parametrize("configured", [None, 2])
def test_duckdb_streams_on_one_thread_unless_threads_are_configured(
    root: Path, tmp_path: Path, configured: int | None
) -> None:
    with connect(_duckdb_settings(root, tmp_path, threads=configured)) as wh:
        before = _threads(wh)
        with wh.streaming():
            assert _threads(wh) == (1 if configured is None else configured)
        assert _threads(wh) == before
        with pytest.raises(RuntimeError), wh.streaming():
            raise RuntimeError("a failed stream restores the setting too")
        assert _threads(wh) == before


def test_duckdb_key_stats_count_distinct_keys_only_when_asked(root: Path, tmp_path: Path) -> None:
    with connect(_duckdb_settings(root, tmp_path)) as wh:
        wh.con.execute(
            "create table t as select * from (values (1, 'a'), (2, 'a'), (2, 'a'), (null, 'a'), "
            "(3, 'b')) v(id, c)"
        )
        relation = Relation(None, "main", "t")
        counted = wh.key_stats(relation, ["id"], {"c": "a"})
        uncounted = wh.key_stats(relation, ["id"], {"c": "a"}, distinct=False)
        assert wh.in_process
    # distinct counts NULL as one key, as SELECT DISTINCT does
    assert (counted.rows, counted.nulls, counted.distinct, counted.duplicates) == (
        4,
        {"id": 1},
        3,
        1,
    )
    assert (uncounted.rows, uncounted.nulls, uncounted.distinct, uncounted.duplicates) == (
        4,
        {"id": 1},
        None,
        None,
    )
