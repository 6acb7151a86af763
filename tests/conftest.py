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
