"""The fitted model as one object: training schema + preprocessor + estimator.

Batch scoring rebuilds it from the run's separate artifacts; the MLflow pyfunc wraps the same
class, so the API and batch scoring produce the same score for the same row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ml.preprocess import Preprocessor


@dataclass(frozen=True)
class TrainingSchema:
    """What the model expects at score time, logged as training_schema.json."""

    recipe: str
    task: str
    entity_keys: list[str]
    features: dict[str, str]  # name -> logical kind (int, float, bool, string, decimal)
    context: dict[str, str]  # context param -> column
    categories: dict[str, list[str]] = field(default_factory=dict)
    target: str | None = None
    treatment: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingSchema:
        return cls(**dict(data))


class ScoringModel:
    """Predicts a score per row from feature columns: CATE, probability or value."""

    def __init__(self, schema: TrainingSchema, preprocessor: Preprocessor, estimator: Any) -> None:
        self.schema = schema
        self.preprocessor = preprocessor
        self.estimator = estimator

    def predict_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        return predict_matrix(
            self.estimator, self.schema.task, self.preprocessor.transform(columns)
        )


def predict_matrix(estimator: Any, task: str, X: np.ndarray) -> np.ndarray:
    """One score per row, as float64."""
    if task == "uplift":
        out = estimator.effect(X)
    elif task == "classification":
        out = estimator.predict_proba(X)[:, 1]
    else:
        out = estimator.predict(X)
    return np.asarray(out, dtype=np.float64).reshape(len(X), -1)[:, 0]


def fit_estimator(
    estimator: Any, task: str, X: np.ndarray, y: np.ndarray, t: np.ndarray | None
) -> Any:
    if task == "uplift":
        estimator.fit(y, t, X=X)
    else:
        estimator.fit(X, y)
    return estimator


def feature_importances(estimator: Any, n_features: int) -> np.ndarray | None:
    """Importances where the estimator has them (XGBoost, forests, X-learner CATE models)."""
    values = getattr(estimator, "feature_importances_", None)
    if values is None and hasattr(estimator, "models_cate"):
        parts = [getattr(m, "feature_importances_", None) for m in estimator.models_cate]
        parts = [p for p in parts if p is not None]
        values = np.mean(parts, axis=0) if parts else None
    if values is None:
        try:
            values = estimator.feature_importances()  # EconML forests expose it as a method
        except Exception:  # noqa: BLE001 - not every estimator has importances
            return None
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr if arr.size == n_features else None
