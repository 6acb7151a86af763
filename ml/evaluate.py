"""Held-out evaluation: the metrics for the task and the plots that explain them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml import metrics as m
from ml.errors import RecipeError, TrainingError
from ml.policy import share_label
from ml.recipe import Economics, EvaluationSpec

CI_SUFFIXES = ("_ci_low", "_ci_high")


@dataclass
class Evaluation:
    metrics: dict[str, float]
    tables: dict[str, Any] = field(default_factory=dict)  # JSON artifacts
    plots: dict[str, bytes] = field(default_factory=dict)  # PNG artifacts


_TASK_METRICS = {
    "classification": ["roc_auc", "log_loss", "accuracy"],
    "regression": ["rmse", "mae", "r2"],
}
_UPLIFT_METRICS = [
    "qini_coefficient",
    "auuc_normalized",
    "uplift_at_10",
    "uplift_at_20",
    "uplift_at_30",
    "ate_estimated",
    "ate_observed",
]


def logged_metrics(task: str, spec: EvaluationSpec | None = None) -> list[str]:
    """Every metric name `evaluate` returns for this task and spec, before `wanted` narrows them:
    what a recipe's `evaluation.metrics` may name, known before any data is read."""
    if task != "uplift":
        return list(_TASK_METRICS[task])
    spec = spec or EvaluationSpec()
    shares = sorted({*spec.policy_shares, spec.decision_share})
    names = [
        *_UPLIFT_METRICS,
        *(f"{kind}_gain_at_{share_label(s)}" for s in shares for kind in ("policy", "random")),
        "treat_all_gain",
        "blp_slope",
    ]
    return [f"{name}{suffix}" for name in names for suffix in ("", *CI_SUFFIXES)]


def evaluate(
    task: str,
    y: np.ndarray,
    score: np.ndarray,
    t: np.ndarray | None = None,
    *,
    wanted: list[str] | None = None,
    plots: bool = True,
    feature_names: list[str] | None = None,
    importances: np.ndarray | None = None,
    propensity: np.ndarray | None = None,
    spec: EvaluationSpec | None = None,
    population: int | None = None,
) -> Evaluation:
    """Metrics, tables and plots on the held-out rows.

    For uplift: the point metrics with 95% bootstrap intervals (`<metric>_ci_low/_ci_high`,
    `spec.bootstrap_replicates` resamples within each arm, `spec.bootstrap_seed`), and the IPW
    policy value (whole-row resamples, same count and seed) at `spec.policy_shares` (plus `spec.decision_share`) and on the fine grid of
    `tables["policy_curve"]`. `propensity` is each held-out row's KNOWN treatment probability
    (its campaign's randomized treated share); when None, the treated share of the held-out
    rows is used as one probability for all, which makes treat-all gain the difference in arm
    means. `wanted` keeps the named metrics and their intervals; `spec` defaults to
    `EvaluationSpec()`, and `wanted` and `plots` are taken as given, not from it. With
    `spec.economics`, the net value against budget is drawn for `economics.population` customers
    (else `population`, else the held-out rows).
    """
    if not np.all(np.isfinite(score)):
        raise TrainingError("the model produced NaN or infinite scores on the test split")
    spec = spec or EvaluationSpec()
    qini_band: tuple[np.ndarray, ...] | None = None
    try:
        if task == "uplift":
            if t is None:
                raise TrainingError("an uplift evaluation needs the treatment column")
            ev, qini_band = _uplift(y, t, score, propensity, spec)
        elif task == "classification":
            ev = Evaluation(m.classification_metrics(y, score))
        else:
            ev = Evaluation(m.regression_metrics(y, score))
    except ValueError as exc:
        raise TrainingError(f"evaluation on the test split failed: {exc}") from None

    if wanted:
        ev.metrics = _keep(ev.metrics, wanted, task)

    if plots:
        from ml import plots as p

        if task == "uplift" and t is not None and qini_band is not None:
            ev.plots["qini_curve.png"] = p.qini_plot(y, t, score, band=qini_band)
            ev.plots["uplift_by_decile.png"] = p.uplift_by_decile_plot(
                ev.tables["uplift_by_decile"]
            )
            ev.plots["policy_gain.png"] = p.policy_gain_plot(
                ev.tables["policy_curve"], ev.tables["policy_value"]["treat_all"]
            )
            if spec.economics is not None:
                ev.plots["net_value_vs_budget.png"] = _net_value_plot(
                    ev.tables["policy_curve"], spec.economics, population or len(y)
                )
        if feature_names is not None and importances is not None:
            ev.plots["feature_importance.png"] = p.feature_importance_plot(
                feature_names, list(importances)
            )
    return ev


def _uplift(
    y: np.ndarray,
    t: np.ndarray,
    score: np.ndarray,
    propensity: np.ndarray | None,
    spec: EvaluationSpec,
) -> tuple[Evaluation, tuple[np.ndarray, ...]]:
    """Point metrics, their intervals, the decile table and the policy value, on one set of
    resamples."""
    from ml import policy

    values = m.uplift_metrics(y, t, score)
    replicates, seed = spec.bootstrap_replicates, spec.bootstrap_seed
    counts = m.bootstrap_counts(t, replicates, seed)  # within arms: the metrics compare arms
    intervals, qini_band = m.uplift_bootstrap(y, t, score, counts)
    for name in list(values):
        values[f"{name}_ci_low"] = intervals[f"{name}_ci_low"]
        values[f"{name}_ci_high"] = intervals[f"{name}_ci_high"]

    deciles = m.uplift_by_decile(y, t, score)
    for row, (low, high) in zip(deciles, m.decile_intervals(y, t, score, counts), strict=True):
        row["observed_ci_low"], row["observed_ci_high"] = low, high

    p = np.full(len(y), float(np.mean(t))) if propensity is None else propensity
    shares = sorted({*spec.policy_shares, spec.decision_share})
    rows = policy.policy_counts(len(y), replicates, seed)  # whole rows: see ml.policy
    summary = policy.policy_curve(y, t, p, score, shares, counts=rows)
    fine = policy.policy_curve(y, t, p, score, policy.FINE_SHARES, counts=rows)
    values.update(policy.policy_metrics(summary))
    slope = policy.blp_slope(y, t, p, score, rows)
    values["blp_slope"], values["blp_slope_ci_low"], values["blp_slope_ci_high"] = slope
    tables = {
        "uplift_by_decile": deciles,
        "policy_curve": fine.table(),
        "policy_value": {
            "shares": summary.table(),
            "decision_share": spec.decision_share,
            "treat_all": {
                "gain": summary.treat_all,
                "ci_low": summary.treat_all_ci_low,
                "ci_high": summary.treat_all_ci_high,
            },
            "propensity": "known" if propensity is not None else "held-out treated share",
            "bootstrap": {"replicates": spec.bootstrap_replicates, "seed": spec.bootstrap_seed},
        },
    }
    return Evaluation(values, tables), qini_band


def _net_value_plot(curve: list[dict[str, Any]], economics: Economics, population: int) -> bytes:
    from ml.report import net_value_plot

    def column(name: str) -> list[float]:
        return [float(row[name]) for row in curve]

    return net_value_plot(
        column("share"),
        column("gain"),
        column("gain_ci_low"),
        column("gain_ci_high"),
        population=economics.population or population,
        value_per_conversion=economics.value_per_conversion,
        cost_per_contact=economics.cost_per_contact,
        random_gain=column("random_gain"),
        budget=economics.budget,
    )


def _base_name(name: str) -> str:
    for suffix in CI_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def _keep(values: dict[str, float], wanted: list[str], task: str) -> dict[str, float]:
    """The wanted metrics, each with its interval when it has one."""
    unknown = [name for name in wanted if name not in values]
    if unknown:
        available = ", ".join(k for k in values if _base_name(k) == k)
        raise RecipeError(
            f"evaluation.metrics: unknown metric '{unknown[0]}' for a {task} model (available: {available})"
        )
    return {k: v for k, v in values.items() if k in wanted or _base_name(k) in wanted}
