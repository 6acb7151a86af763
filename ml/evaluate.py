"""Held-out evaluation: the metrics for the task and the plots that explain them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml import metrics as m
from ml.errors import RecipeError, TrainingError


@dataclass
class Evaluation:
    metrics: dict[str, float]
    tables: dict[str, Any] = field(default_factory=dict)  # JSON artifacts
    plots: dict[str, bytes] = field(default_factory=dict)  # PNG artifacts


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
) -> Evaluation:
    if not np.all(np.isfinite(score)):
        raise TrainingError("the model produced NaN or infinite scores on the test split")
    try:
        if task == "uplift":
            if t is None:
                raise TrainingError("an uplift evaluation needs the treatment column")
            values = m.uplift_metrics(y, t, score)
            deciles = m.uplift_by_decile(y, t, score)
            ev = Evaluation(values, {"uplift_by_decile": deciles})
        elif task == "classification":
            ev = Evaluation(m.classification_metrics(y, score))
        else:
            ev = Evaluation(m.regression_metrics(y, score))
    except ValueError as exc:
        raise TrainingError(f"evaluation on the test split failed: {exc}") from None

    if wanted:
        unknown = [name for name in wanted if name not in ev.metrics]
        if unknown:
            raise RecipeError(
                f"evaluation.metrics: unknown metric '{unknown[0]}' for a {task} model (available: {', '.join(ev.metrics)})"
            )
        ev.metrics = {k: v for k, v in ev.metrics.items() if k in wanted}

    if plots:
        from ml import plots as p

        if task == "uplift" and t is not None:
            ev.plots["qini_curve.png"] = p.qini_plot(y, t, score)
            ev.plots["uplift_by_decile.png"] = p.uplift_by_decile_plot(
                ev.tables["uplift_by_decile"]
            )
        if feature_names is not None and importances is not None:
            ev.plots["feature_importance.png"] = p.feature_importance_plot(
                feature_names, list(importances)
            )
    return ev
