"""Which fitted estimators compile, and how their XGBoost models' predictions combine into the
score `ml.model.predict_matrix` returns:

- an XGBoost regressor: its prediction; a binary classifier: the probability of class 1;
- EconML's T-learner: models[1](X) - models[0](X);
- EconML's S-learner: overall_model(X, T=treated) - overall_model(X, T=control), the treatment
  as the two one-hot columns EconML appends to X;
- EconML's X-learner: p(X) * cate_controls(X) + (1 - p(X)) * cate_treated(X), with p the
  propensity model's probability of treatment (`propensity_models[0].predict_proba(X)[:, 1]`),
  as `XLearner.const_marginal_effect` computes it.

Anything else is refused, naming the estimator, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ml.errors import UnsupportedModelError
from ml.sqlcompile.trees import Booster, read_booster

SUPPORTED = (
    "xgboost.XGBRegressor, xgboost.XGBClassifier (binary), and econml.metalearners XLearner, "
    "TLearner, SLearner with XGBoost learners"
)


@dataclass(frozen=True)
class Part:
    """One XGBoost model's prediction in the score, with features held at constants."""

    name: str
    booster: Booster
    fixed: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreFormula:
    """The parts and the SQL combining their predictions (`{name}` placeholders)."""

    parts: list[Part]
    combine: str
    estimator: str


def class_path(obj: Any) -> str:
    cls = type(obj)
    module = cls.__module__
    for public in ("xgboost", "econml.metalearners", "sklearn"):
        if module.startswith(public + "."):
            module = public  # the path a recipe names, not the private module
    return f"{module}.{cls.__name__}"


def formula(estimator: Any, task: str, n_features: int) -> ScoreFormula:
    """The estimator's score as parts and a combination; UnsupportedModelError otherwise."""
    name = class_path(estimator)
    if name in ("econml.metalearners.XLearner", "econml.metalearners.TLearner",
                "econml.metalearners.SLearner"):  # fmt: skip
        if task != "uplift":
            raise UnsupportedModelError(f"estimator {name}: task {task} (uplift expected)")
        _check_binary_treatment(estimator, name)
    if name == "econml.metalearners.XLearner":
        parts = [
            Part(
                "p", _xgb(estimator.propensity_models[0], "classifier", f"{name} propensity model")
            ),
            Part("tc", _xgb(estimator.cate_controls_models[0], "regressor", f"{name} CATE model")),
            Part("tt", _xgb(estimator.cate_treated_models[0], "regressor", f"{name} CATE model")),
        ]
        return ScoreFormula(parts, "{p} * {tc} + (1.0e0 - {p}) * {tt}", name)
    if name == "econml.metalearners.TLearner":
        control = _xgb(estimator.models[0], "regressor", f"{name} model")
        treated = _xgb(estimator.models[1], "regressor", f"{name} model")
        return ScoreFormula([Part("y1", treated), Part("y0", control)], "{y1} - {y0}", name)
    if name == "econml.metalearners.SLearner":
        overall = _xgb(estimator.overall_model, "regressor", f"{name} overall model")
        if overall.n_features != n_features + 2:
            raise UnsupportedModelError(f"estimator {name}: unexpected treatment encoding")
        c, t = n_features, n_features + 1  # EconML appends [control, treated] one-hot columns
        parts = [
            Part("y1", overall, {c: 0.0, t: 1.0}),
            Part("y0", overall, {c: 1.0, t: 0.0}),
        ]
        return ScoreFormula(parts, "{y1} - {y0}", name)
    if name == "xgboost.XGBClassifier" and task == "classification":
        return ScoreFormula([Part("y", _xgb(estimator, "classifier", "estimator"))], "{y}", name)
    if name == "xgboost.XGBRegressor" and task == "regression":
        return ScoreFormula([Part("y", _xgb(estimator, "regressor", "estimator"))], "{y}", name)
    raise UnsupportedModelError(
        f"estimator {name} cannot be compiled to SQL (supported: {SUPPORTED}); "
        "score it with --engine python"
    )


def _xgb(model: Any, role: str, what: str) -> Booster:
    """An XGBoost model of the expected role; a classifier must be binary:logistic."""
    name = class_path(model)
    if name not in ("xgboost.XGBRegressor", "xgboost.XGBClassifier"):
        raise UnsupportedModelError(
            f"{what} {name} cannot be compiled to SQL (supported: {SUPPORTED}); "
            "score it with --engine python"
        )
    if role == "regressor" and name == "xgboost.XGBClassifier":
        raise UnsupportedModelError(f"{what} {name}: its predict() returns labels, not values")
    if name == "xgboost.XGBClassifier" and getattr(model, "n_classes_", 2) != 2:
        raise UnsupportedModelError(f"{what} {name}: {model.n_classes_} classes (binary only)")
    booster = read_booster(model, f"{what} {name}")
    if role == "classifier" and not booster.logistic:
        raise UnsupportedModelError(f"{what} {name}: a classifier must be binary:logistic")
    return booster


def _check_binary_treatment(estimator: Any, name: str) -> None:
    """One binary treatment, one outcome, and T0=0 -> T1=1 encoded as EconML's [1]."""
    import numpy as np

    d_t, d_y = tuple(estimator._d_t), tuple(estimator._d_y)
    if d_t != (1,) or d_y not in ((), (1,)):
        raise UnsupportedModelError(f"estimator {name}: several treatments or outcomes")
    _, t0, t1 = estimator._expand_treatments(None, 0, 1)
    if np.asarray(t1 - t0).ravel().tolist() != [1.0]:
        raise UnsupportedModelError(f"estimator {name}: treatment not encoded as 0/1")
