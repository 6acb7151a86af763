"""The training split read once and cut into k folds, each with its preprocessing fitted once:
every trial fits only the estimator. The test split is never part of a fold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ml import dataset, population
from ml.errors import TrainingError, estimator_failures
from ml.heldout import check_population, known_propensity

if TYPE_CHECKING:
    from ml.config import Settings
    from ml.plan import Plan
    from ml.recipe import ClassSpec


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold of the training split, as model matrices."""

    X_fit: np.ndarray
    y_fit: np.ndarray
    t_fit: np.ndarray | None
    X_val: np.ndarray
    y_val: np.ndarray
    t_val: np.ndarray | None
    propensity_val: np.ndarray | None  # known treatment probabilities (policy gain metrics)


@dataclass(frozen=True)
class TrainingRows:
    """The population as `ml train` reads and splits it; only `train` rows are tuned on."""

    table: Any  # pyarrow.Table
    y: np.ndarray
    t: np.ndarray | None
    strata: np.ndarray | None
    train: np.ndarray  # row indices of the training split


def read_training_rows(settings: Settings, p: Plan, context: dict[str, Any]) -> TrainingRows:
    """Read, check and split exactly as `ml train` does (same order, same seed, same split)."""
    relation = p.train_model.relation
    table = population.read_training_population(settings, p, context, p.train_columns)
    check_population(table, p, context)
    d = p.recipe.data
    table = dataset.in_key_order(table, list(d.entity_keys))
    y = dataset.vector(table, d.target)
    t = dataset.vector(table, d.treatment) if d.treatment else None
    strata = (t * 2 + (y > 0)) if t is not None else (y if p.task == "classification" else None)
    split = dataset.split_rows(table, p.recipe.split, p.recipe.seed, strata, str(relation))
    return TrainingRows(table, y, t, strata, split.train)


def make_folds(p: Plan, rows: TrainingRows, k: int) -> list[Fold]:
    """k folds of the training split, stratified as the recipe's split is, each with its own
    preprocessor fitted on its fitting rows (so no fold sees its validation rows)."""
    from ml.preprocess import Preprocessor

    propensity = known_propensity(rows.table, rows.t, p) if rows.t is not None else None
    kinds = {f: p.kinds[f] for f in p.features}
    folds = []
    for fit_idx, val_idx in _cuts(p, rows, k):
        fit_rows, val_rows = rows.train[fit_idx], rows.train[val_idx]
        fit_cols = dataset.feature_columns(rows.table, p.features, fit_rows)
        pre = Preprocessor.fit(fit_cols, kinds, p.recipe.preprocessing)
        val_cols = dataset.feature_columns(rows.table, p.features, val_rows)
        t = rows.t
        folds.append(
            Fold(
                pre.transform(fit_cols),
                rows.y[fit_rows],
                None if t is None else t[fit_rows],
                pre.transform(val_cols),
                rows.y[val_rows],
                None if t is None else t[val_rows],
                None if propensity is None else propensity[val_rows],
            )
        )
    return folds


def _cuts(p: Plan, rows: TrainingRows, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(rows.train)
    if n < 2 * k:
        raise TrainingError(
            f"{p.label}: tuning.cv_folds: {k} folds of {n} training rows leave too few rows per fold"
        )
    split = p.recipe.split
    strata = rows.strata[rows.train] if rows.strata is not None else None
    seed = p.recipe.seed
    if split.method == "random" and split.stratify and strata is not None:
        _, counts = np.unique(strata, return_counts=True)
        if counts.min() >= k:
            skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            return list(skf.split(np.zeros(n), strata))
    return list(KFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n)))


def fit_and_score(p: Plan, model: ClassSpec, fold: Fold) -> np.ndarray:
    """The estimator built from `model`, fitted on the fold's fitting rows; its validation
    scores (the same build, fit and predict `ml train` uses)."""
    from ml.estimators import build
    from ml.model import fit_estimator, predict_matrix

    estimator = build(model.class_path, model.params, p.recipe.seed, "model", p.allowed_modules)
    with estimator_failures(f"{p.label}: model: {model.class_path} failed to fit a tuning trial"):
        fit_estimator(estimator, p.task, fold.X_fit, fold.y_fit, fold.t_fit)
        return predict_matrix(estimator, p.task, fold.X_val)


def fold_metric(
    metric: str, share: float | None, task: str, fold: Fold, score: np.ndarray
) -> float:
    """The tuned metric on the fold's validation rows: the point value `ml train` logs (no
    bootstrap intervals: they do not change the point)."""
    from ml import metrics as m
    from ml import policy

    y = fold.y_val
    if not np.all(np.isfinite(score)):
        raise TrainingError("the model produced NaN or infinite scores on a tuning fold")
    try:
        if task == "classification":
            return m.classification_metrics(y, score)[metric]
        if task == "regression":
            return m.regression_metrics(y, score)[metric]
        t = fold.t_val
        if t is None:
            raise TrainingError("an uplift metric needs the treatment column")
        if share is not None and fold.propensity_val is not None:
            return policy.policy_gain(y, t, fold.propensity_val, score, share)
        if metric.startswith("uplift_at_"):
            return m.uplift_at_k(y, t, score, int(metric.rsplit("_", 1)[1]) / 100)
        return {"qini_coefficient": m.qini_coefficient, "auuc_normalized": m.auuc_normalized}[
            metric
        ](y, t, score)
    except ValueError as exc:
        raise TrainingError(f"{metric} on a tuning fold failed: {exc}") from None
