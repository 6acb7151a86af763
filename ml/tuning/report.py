"""What the study's MLflow run keeps: a summary of every trial, the best parameters, counts,
and the optimization-history plot."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial of the study (finished in this invocation or before)."""
    return [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            "folds": [t.intermediate_values[k] for k in sorted(t.intermediate_values)],
            "params": t.params,
            "seconds": t.duration.total_seconds() if t.duration else None,
        }
        for t in study.trials
    ]


def counts(study: optuna.Study) -> dict[str, int]:
    from optuna.trial import TrialState

    states = [t.state for t in study.trials]
    return {
        "trials_complete": states.count(TrialState.COMPLETE),
        "trials_pruned": states.count(TrialState.PRUNED),
        "trials_failed": states.count(TrialState.FAIL),
    }


def log_study(study: optuna.Study, metric: str) -> None:
    """Into the active MLflow run (the study's): counts, the best value, the trial table, the
    best parameters and the history plot."""
    import mlflow
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    from ml.plots import optimization_history_plot

    mlflow.log_metrics({k: float(v) for k, v in counts(study).items()})
    rows = trial_rows(study)
    mlflow.log_text(json.dumps(rows, indent=2, default=str), "tuning/trials.json")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if not complete:
        return
    best = study.best_trial
    mlflow.log_metric(f"best_{metric}", _value(best))
    mlflow.set_tag("ml.best_trial", str(best.number))
    mlflow.log_text(json.dumps(best.params, indent=2), "tuning/best_params.json")
    maximize = study.direction == StudyDirection.MAXIMIZE
    png = optimization_history_plot(
        [t.number for t in complete], [_value(t) for t in complete], metric, maximize
    )
    _log_png(png, "plots/optimization_history.png")


def _value(trial: optuna.trial.FrozenTrial) -> float:
    return float("nan") if trial.value is None else float(trial.value)


def _log_png(png: bytes, path: str) -> None:
    import tempfile
    from pathlib import Path

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / Path(path).name
        file.write_bytes(png)
        mlflow.log_artifact(str(file), str(Path(path).parent))
