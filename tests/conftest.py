"""Shared fixtures: the repository root, isolated settings, and (for integration tests) a real
DuckDB warehouse with the demo data built by dbt, plus a temporary MLflow store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throwaway copy of config/ and recipes/ to break on purpose (dbt files are shared)."""
    dest = tmp_path / "project"
    dest.mkdir()
    shutil.copytree(ROOT / "config", dest / "config")
    shutil.copytree(ROOT / "recipes", dest / "recipes")
    return dest


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own overrides."""
    for name in list(os.environ):
        if name.startswith(("ML_", "BQ_", "MLFLOW_")) or name in {"APP_ENV", "DBT_TARGET"}:
            monkeypatch.delenv(name, raising=False)


# -- integration: a real DuckDB warehouse built by dbt, and a real MLflow store ------------------


@pytest.fixture(scope="session")
def warehouse_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Demo data (50k customers) loaded and `dbt build` run once per session, in a temp folder."""
    from unittest import mock

    base = tmp_path_factory.mktemp("warehouse")
    env = {
        "ML_DUCKDB_PATH": str(base / "warehouse.duckdb"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(base / "artifacts"),
    }
    with mock.patch.dict(os.environ, env):
        from ml.config import load_settings
        from ml.dbt import DbtProject
        from ml.demo import load_demo_data

        settings = load_settings(root=ROOT)
        load_demo_data(settings)
        DbtProject(settings).invoke(["build", "--quiet"])
    return env


@pytest.fixture
def ml_env(warehouse_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Activate the session warehouse and MLflow store for one test (dbt reads env at run time)."""
    for key, value in warehouse_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ROOT)
    return warehouse_env


@pytest.fixture
def settings(ml_env: dict[str, str]):
    from ml.config import load_settings

    return load_settings(root=ROOT)


@pytest.fixture(scope="session")
def trained_x_learner(warehouse_env: dict[str, str]):
    """The X-learner recipe trained once per session (alias `champion`)."""
    from unittest import mock

    with mock.patch.dict(os.environ, warehouse_env):
        from ml.config import load_settings
        from ml.train import train

        return train(
            load_settings(root=ROOT), ROOT / "recipes" / "xgboost_x_learner.yaml", alias="champion"
        )
