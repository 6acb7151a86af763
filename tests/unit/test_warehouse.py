from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ml.config import load_settings
from ml.errors import ConfigError, WarehouseError
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


def _duckdb_settings(root: Path, tmp_path: Path, path: Path | None = None, **duckdb: object):
    """The project's settings on a DuckDB file of the test's own (`path`, else
    tmp_path/w.duckdb), with `duckdb` overrides."""
    settings = load_settings(root=root)
    duck = settings.warehouse.duckdb.model_copy(
        update={"path": str(path or tmp_path / "w.duckdb"), **duckdb}
    )
    return settings.model_copy(
        update={"warehouse": settings.warehouse.model_copy(update={"duckdb": duck})}
    )


@pytest.mark.parametrize("configured", [None, 2])
def test_duckdb_streams_on_one_thread_unless_threads_are_configured(
    root: Path, tmp_path: Path, configured: int | None
) -> None:
    with connect(_duckdb_settings(root, tmp_path, threads=configured), create=True) as wh:
        before = _threads(wh)
        with wh.streaming():
            assert _threads(wh) == (1 if configured is None else configured)
        assert _threads(wh) == before
        with pytest.raises(RuntimeError), wh.streaming():
            raise RuntimeError("a failed stream restores the setting too")
        assert _threads(wh) == before


def test_duckdb_key_stats_count_distinct_keys_only_when_asked(root: Path, tmp_path: Path) -> None:
    with connect(_duckdb_settings(root, tmp_path), create=True) as wh:
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


def _tree(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


def test_a_missing_duckdb_file_is_refused_and_nothing_is_created(root: Path, tmp_path: Path):
    """Only `ml demo-data` (create) starts a new warehouse file: anything else names the
    setting and what creates the file, and leaves no folder, empty file or lock behind."""
    path = tmp_path / "no" / "such" / "x.duckdb"
    wh = connect(_duckdb_settings(root, tmp_path, path))
    assert not wh.present()
    with pytest.raises(WarehouseError) as refused, wh:
        wh.open()
    assert str(refused.value) == (
        f"warehouse.duckdb.path (ML_DUCKDB_PATH): {path} does not exist "
        "(`ml demo-data` or `dbt build` creates it)"
    )
    assert _tree(tmp_path) == []

    with connect(_duckdb_settings(root, tmp_path, path), create=True) as created:
        created.open()
        assert created.present()
    assert path.is_file()
    with connect(_duckdb_settings(root, tmp_path, path)) as again:  # there now: opened
        assert again.exists(Relation(None, "main", "nothing")) is False


@pytest.mark.parametrize("create", [False, True])
def test_a_duckdb_path_that_is_a_folder_is_refused_without_a_lock_file(
    root: Path, tmp_path: Path, create: bool
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    with (
        pytest.raises(WarehouseError) as refused,
        connect(_duckdb_settings(root, tmp_path, folder), create=create) as wh,
    ):
        wh.open()
    assert str(refused.value) == (
        f"warehouse.duckdb.path (ML_DUCKDB_PATH): {folder} is not a regular file "
        "(expected a DuckDB database file)"
    )
    assert _tree(tmp_path) == [folder]


def test_build_checks_rows_only_in_a_warehouse_that_exists(root: Path, tmp_path: Path) -> None:
    """`--build` on a warehouse dbt has not created yet: nothing to count, nothing created
    (dbt build creates the file)."""
    from ml.build import _check_rows

    path = tmp_path / "new" / "x.duckdb"
    settings = _duckdb_settings(root, tmp_path, path)
    model = SimpleNamespace(relation=Relation(None, "main", "t"), name="t")
    plan = SimpleNamespace(filters=lambda context: {})
    _check_rows(settings, None, plan, model, {}, {})  # type: ignore[arg-type]
    assert _tree(tmp_path) == []


_BYTES = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


@pytest.mark.parametrize(
    ("configured", "expected_bytes"),
    [
        (".5GB", 500 * 1000**2),
        ("1.GB", 1000**3),
        ("512 mb", 512 * 1000**2),
        ("1.5GiB", 1.5 * 1024**3),
    ],
)
def test_every_memory_limit_the_config_accepts_reaches_duckdb(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configured: str,
    expected_bytes: float,
) -> None:  # fmt: skip
    monkeypatch.setenv("ML_DUCKDB_MEMORY_LIMIT", configured)
    monkeypatch.setenv("ML_DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    with connect(load_settings(root=root), create=True) as wh:
        shown = wh.con.execute("select current_setting('memory_limit')").fetchone()[0]
    number, unit = shown.split()
    assert float(number) * _BYTES[unit] == pytest.approx(expected_bytes, rel=0.01)
