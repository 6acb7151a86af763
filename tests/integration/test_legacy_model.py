"""A model logged by an older layout of `ml` still loads and scores the same: its pickles name
`ml.preprocess` and its pyfunc code names `ml.pyfunc`, import paths kept for that reason.

The fixture (tests/fixtures/legacy_model) is a small X-learner's run artifacts and logged
pyfunc, written before the warehouse, registry and serving packages existed, with the scores it
gave then. The test puts them into a fresh MLflow store as a finished training run and a
registered version, and loads them the two ways `ml` does: batch scoring's separate artifacts
and serving's unified pyfunc.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_model"


@pytest.fixture
def legacy_version(tmp_path, monkeypatch, root):
    import mlflow

    from ml import tracking
    from ml.config import load_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("ML_ARTIFACT_LOCATION", str(tmp_path / "artifacts"))
    settings = load_settings(root=root)
    tracking.configure(settings, create=True)
    exp = tracking.experiment_id(settings, "legacy_x_learner")
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.set_tags({"ml.kind": "train", "ml.recipe": "legacy_x_learner"})
        mlflow.log_artifacts(str(FIXTURE / "run"))
        mlflow.log_artifacts(str(FIXTURE / "model"), artifact_path="model")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "legacy_x_learner")
    yield run.info.run_id, str(version.version)
    mlflow.set_tracking_uri(None)


def _expected() -> tuple[list[dict], np.ndarray]:
    data = json.loads((FIXTURE / "expected.json").read_text())
    return data["records"], np.asarray(data["scores"])


def _columns(records: list[dict], features: dict[str, str]) -> dict[str, np.ndarray]:
    return {
        name: np.asarray(
            [r[name] for r in records], dtype=object if kind == "string" else np.float64
        )
        for name, kind in features.items()
    }


def test_batch_scoring_loads_the_legacy_artifacts(legacy_version) -> None:
    from ml import registry

    run_id, _ = legacy_version
    trained = registry.load_trained(registry.resolve(registry.ModelRef(run_id=run_id)))
    records, expected = _expected()
    scores = trained.model.predict_columns(_columns(records, trained.model.schema.features))
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    assert type(trained.model.preprocessor).__module__ == "ml.preprocess"


def test_serving_loads_the_legacy_pyfunc(legacy_version) -> None:
    from ml import registry

    _, version = legacy_version
    resolved = registry.resolve(
        registry.ModelRef(name="legacy_x_learner", alias_or_version=version)
    )
    model = registry.load_pyfunc(resolved)
    records, expected = _expected()
    scores = model.predict_columns(_columns(records, model.schema.features))
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
