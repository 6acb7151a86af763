"""The MLflow store a command points at: only `ml train` and `ml tune` (create) start a new
local one; every other command refuses a missing store in one line and creates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml import tracking
from ml.config import load_settings
from ml.errors import TrackingError

MISSING = (
    "mlflow.tracking_uri (MLFLOW_TRACKING_URI): {path} does not exist (`ml train` creates the "
    "MLflow store; point the setting at the store the model was trained in)"
)


def _settings(root: Path, monkeypatch: pytest.MonkeyPatch, uri: str, artifacts: Path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("ML_ARTIFACT_LOCATION", str(artifacts))
    return load_settings(root=root)


@pytest.mark.parametrize("form", ["sqlite", "folder", "file-uri"])
def test_a_missing_store_is_refused_and_nothing_is_created(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    store = tmp_path / "no" / "such" / ("mlflow.db" if form == "sqlite" else "mlruns")
    uri = {"sqlite": f"sqlite:///{store}", "folder": str(store), "file-uri": store.as_uri()}
    settings = _settings(root, monkeypatch, uri[form], tmp_path / "artifacts")
    with pytest.raises(TrackingError) as refused:
        tracking.configure(settings)
    assert str(refused.value) == MISSING.format(path=store)
    assert sorted(tmp_path.rglob("*")) == []


def test_train_creates_a_new_sqlite_store(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "new" / "mlflow.db"
    settings = _settings(root, monkeypatch, f"sqlite:///{store}", tmp_path / "artifacts")
    try:
        tracking.configure(settings, create=True)
        assert store.is_file()
        tracking.configure(settings)  # there now: a reader finds it
    finally:
        import mlflow

        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
