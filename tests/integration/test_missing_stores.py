"""A warehouse file or MLflow store that does not exist is named in one line by every command
that only reads or adds to it (`ml score`, `materialize`, `compile`, `serve`), and nothing is
created: no folder, no empty DuckDB file or MLflow store, no lock file. `ml demo-data` (and
dbt) create the warehouse, `ml train` and `ml tune` the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_errors import one_line_error  # tests/integration/cli_errors.py
from click.testing import CliRunner

from ml.cli import main

ROOT = Path(__file__).resolve().parents[2]
CHAMPION = "xgboost_x_learner@champion"
READERS = {
    "score": ["score", "--model", CHAMPION],
    "materialize": ["materialize", "--model", CHAMPION],
    "compile": ["compile", "--model", CHAMPION, "--dialect", "duckdb"],
    "serve": ["serve", "--model", CHAMPION, "--port", "0"],
}


def _tree(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


@pytest.fixture
def champion_env(ml_env, trained_x_learner, tmp_path, monkeypatch) -> Path:
    """The session's store and champion, an online store path of the test's own, and an empty
    folder for the missing paths; returns that folder."""
    monkeypatch.setenv("ML_ONLINE_STORE_PATH", str(tmp_path / "online" / "online.sqlite"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return scratch


@pytest.mark.parametrize("command", ["score", "materialize"])
def test_a_missing_warehouse_file_is_named_and_not_created(
    champion_env: Path, tmp_path: Path, monkeypatch, command: str
) -> None:
    path = champion_env / "nonexistent" / "dir" / "x.duckdb"
    monkeypatch.setenv("ML_DUCKDB_PATH", str(path))
    result = CliRunner().invoke(main, READERS[command])
    assert result.exit_code == 4, result.output
    assert one_line_error(result) == (
        f"Error: warehouse.duckdb.path (ML_DUCKDB_PATH): {path} does not exist "
        "(`ml demo-data` or `dbt build` creates it)"
    )
    assert _tree(champion_env) == []
    assert not (tmp_path / "online").exists()  # nor the online store


def test_a_warehouse_path_that_is_a_folder_leaves_no_lock_file(champion_env, monkeypatch):
    """ML_DUCKDB_PATH=data: the project's data folder, relative to the project root."""
    monkeypatch.setenv("ML_DUCKDB_PATH", "data")
    before = _tree(ROOT / "data"), (ROOT / "data.lock").exists()
    result = CliRunner().invoke(main, READERS["score"])
    assert result.exit_code == 4, result.output
    assert one_line_error(result) == (
        f"Error: warehouse.duckdb.path (ML_DUCKDB_PATH): {ROOT / 'data'} is not a regular "
        "file (expected a DuckDB database file)"
    )
    assert (_tree(ROOT / "data"), (ROOT / "data.lock").exists()) == before == (before[0], False)


@pytest.mark.parametrize("command", sorted(READERS))
def test_a_missing_mlflow_store_is_named_and_not_created(
    champion_env: Path, monkeypatch, command: str
) -> None:
    store = champion_env / "nonexistent3" / "x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    monkeypatch.setenv("ML_ARTIFACT_LOCATION", str(champion_env / "artifacts"))
    result = CliRunner().invoke(main, READERS[command])
    assert result.exit_code == 5, result.output
    assert one_line_error(result) == (
        f"Error: mlflow.tracking_uri (MLFLOW_TRACKING_URI): {store} does not exist (`ml train` "
        "creates the MLflow store; point the setting at the store the model was trained in)"
    )
    assert _tree(champion_env) == []


def test_demo_data_creates_a_new_warehouse_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "new" / "dir" / "warehouse.duckdb"
    monkeypatch.setenv("ML_DUCKDB_PATH", str(path))
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["demo-data", "--customers", "100"])
    assert result.exit_code == 0, result.output
    assert path.is_file() and "rows into raw.customers" in result.output
