"""The fitted model as one object: training schema + preprocessor + estimator.

Batch scoring rebuilds it from the run's separate artifacts; the MLflow pyfunc wraps the same
class, so the API and batch scoring produce the same score for the same row.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ml.fastpredict import accelerate, threads_at_most
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
    """Predicts a score per row from feature columns: CATE, probability or value.

    Built from loaded artifacts only (batch scoring, the pyfunc): it gives the XGBoost models
    inside the estimator the low-overhead predict path of `ml.fastpredict`, which returns the
    same floats as XGBoost's own; with `small_batches` (serving), also its numpy walk for a few
    rows, built and checked here (for a model of many trees, a noticeable part of loading).
    """

    def __init__(
        self,
        schema: TrainingSchema,
        preprocessor: Preprocessor,
        estimator: Any,
        *,
        small_batches: bool = True,
    ) -> None:
        self.schema = schema
        self.preprocessor = preprocessor
        self.estimator = estimator
        self.accelerated = accelerate(
            estimator, len(preprocessor.feature_names), walk=small_batches
        )

    def predict_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        return predict_matrix(
            self.estimator, self.schema.task, self.preprocessor.transform(columns)
        )

    def threads_at_most(self, limit: int) -> AbstractContextManager[None]:
        """Until exit, the XGBoost models inside predict on at most `limit` threads."""
        return threads_at_most(self.estimator, limit)


def predict_matrix(estimator: Any, task: str, X: np.ndarray) -> np.ndarray:
    """One score per row, as float64."""
    if task == "uplift":
        out = _effect(estimator, X)
    elif task == "classification":
        out = estimator.predict_proba(X)[:, 1]
    else:
        out = estimator.predict(X)
    return np.asarray(out, dtype=np.float64).reshape(len(X), -1)[:, 0]


_TREATMENT_DELTA: weakref.WeakKeyDictionary[Any, np.ndarray] = weakref.WeakKeyDictionary()


def _effect(estimator: Any, X: np.ndarray) -> np.ndarray:
    """`estimator.effect(X)` (T0=0 -> T1=1) with the same arithmetic, minus re-encoding the two
    constant treatments on every call: EconML's one-hot encoding of T0 and T1 costs ~1 ms per
    call, more than the trees themselves when the API scores one row."""
    delta = _treatment_delta(estimator)
    if delta is None:
        return estimator.effect(X)
    # LinearCateEstimator.effect: einsum of the marginal effect with dT = T1 - T0 per row.
    eff = estimator.const_marginal_effect(X)
    dT = np.repeat(delta[np.newaxis], len(X), axis=0)
    spec = "myt,mt->my"
    if dT.ndim == 1:
        spec = spec.replace("t", "")
    if eff.ndim == dT.ndim:
        spec = spec.replace("y", "")
    return np.einsum(spec, eff, dT)


def _treatment_delta(estimator: Any) -> np.ndarray | None:
    """T1 - T0 for one row as the estimator encodes it, cached per fitted estimator; None where
    `effect` is not EconML's linear one (then the estimator's own `effect` runs)."""
    try:
        return _TREATMENT_DELTA[estimator]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable: no cache, so no shortcut either
        return None
    try:
        from econml._cate_estimator import LinearCateEstimator, TreatmentExpansionMixin
    except ImportError:
        return None
    defining = [c for c in type(estimator).__mro__ if "effect" in vars(c)]
    if defining[:2] != [TreatmentExpansionMixin, LinearCateEstimator]:
        return None
    _, T0, T1 = estimator._expand_treatments(None, 0, 1)
    delta = np.asarray(T1 - T0)[0]
    _TREATMENT_DELTA[estimator] = delta
    return delta


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
    if values is None:
        # Meta-learners keep their CATE models in lists: the DR-learner's `models_cate`, the
        # X-learner's `cate_treated_models` and `cate_controls_models`.
        cate_models = [
            m
            for attr in ("models_cate", "cate_treated_models", "cate_controls_models")
            for m in getattr(estimator, attr, None) or []
        ]
        found = [getattr(m, "feature_importances_", None) for m in cate_models]
        parts = [p for p in found if p is not None]
        values = np.mean(parts, axis=0) if parts else None
    if values is None:
        try:
            values = estimator.feature_importances()  # EconML forests expose it as a method
        except Exception:  # noqa: BLE001 - not every estimator has importances
            return None
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr if arr.size == n_features else None
