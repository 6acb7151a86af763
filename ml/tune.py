"""`ml tune`: search the recipe's `tuning:` space with Optuna by k-fold cross-validation inside
the training split, track every trial under one MLflow run, then train the best configuration
as `ml train` does (logged, evaluated on the untouched test split, registered, and given
`alias` only through the promotion gate).

Everything is checked before the first write: the recipe and its tuning section, the context,
the study's storage, the data. The study persists in Optuna's RDB storage, so `resume`
continues it and Ctrl-C keeps the finished trials.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml import registry
from ml.config import Settings, redact
from ml.dbt import DbtProject
from ml.errors import RecipeError, TrainingError
from ml.plan import plan
from ml.progress import Steps
from ml.recipe import load_recipe, parse_context_params, resolve_context
from ml.train import TrainResult, train
from ml.tuning import folds as cv
from ml.tuning import study as studies
from ml.tuning.space import Search, check_search, with_model
from ml.tuning.trial import Objective, Progress, TrialRuns, stop_on_interrupt

if TYPE_CHECKING:
    import optuna

    from ml.plan import Plan


@dataclass
class TuneResult:
    study: str
    metric: str
    best_params: dict[str, Any]
    best_value: float
    trials: int  # finished trials of the study (complete or pruned), this run's and before
    study_run_id: str
    final: TrainResult

    def to_dict(self) -> dict[str, Any]:
        f = self.final
        return {
            "best_params": self.best_params,
            "best_value": self.best_value,
            "trials": self.trials,
            "study_run_id": self.study_run_id,
            "run_id": f.run_id,
            "model_version": f.model_version,
            "study": self.study,
            "metric": self.metric,
            "model_name": f.model_name,
            "alias": f.alias,
            "promoted": f.promoted,
        }


def tune(
    settings: Settings,
    recipe_path: str | Path,
    context_params: str | dict[str, Any] | None = None,
    *,
    trials: int | None = None,
    resume: bool = False,
    alias: str | None = None,
    steps: Steps | None = None,
) -> TuneResult:
    """Run (or with `resume` continue) the recipe's study up to `trials` finished trials in
    all (default: its tuning.n_trials), then train, register and gate the best."""
    steps = steps or Steps(enabled=False)
    if alias is not None:
        registry.check_alias(alias)
    recipe = load_recipe(recipe_path)
    if recipe.tuning is None:
        raise RecipeError(
            f"{recipe_path}: tuning: the recipe has no tuning section (see 'Tuning a recipe' "
            "in the README)"
        )
    given = parse_context_params(context_params)
    context = resolve_context(recipe, given, "train")
    with steps.step("checking the recipe and its search space"):
        p = plan(recipe, str(recipe_path), DbtProject(settings))
        search = check_search(recipe, p.task, p.label, p.allowed_modules)
    url = studies.storage_url(settings)
    studies.check_storage(url)
    same = studies.fingerprint(p, search, context)
    resumed = studies.resumable(url, recipe.name, same) if resume else None

    from ml import tracking

    with steps.step("checking the MLflow store"):
        tracking.configure(settings, create=True)
    with steps.step(f"reading {p.train_model.relation}"):
        rows = cv.read_training_rows(settings, p, context)
    k = search.cv_folds
    with steps.step(f"preparing {k} folds of {len(rows.train):,} training rows"):
        folds = cv.make_folds(p, rows, k)
    study = studies.open_study(url, p, search, same, resumed)
    total = trials or search.n_trials
    study_run_id = _run_study(settings, p, search, folds, study, total, url, context, steps)
    best = _best(study, p)
    steps.note(f"best {search.metric} {best.value:.4f} (trial {best.number}): {best.params}")
    final = train(
        settings,
        recipe_path,
        context,
        alias=alias,
        steps=steps,
        recipe=with_model(recipe, best.params),
        tags={"ml.study": study.study_name, "ml.study_run_id": study_run_id},
    )
    from mlflow.tracking import MlflowClient

    MlflowClient().set_tag(study_run_id, "ml.final_run_id", final.run_id)
    finished = _finished(study)
    value = float(best.value) if best.value is not None else float("nan")
    return TuneResult(
        study.study_name, search.metric, best.params, value, finished, study_run_id, final
    )


def _run_study(
    settings: Settings,
    p: Plan,
    search: Search,
    folds: list[cv.Fold],
    study: optuna.Study,
    total: int,
    url: str,
    context: dict[str, Any],
    steps: Steps,
) -> str:
    """The trials up to `total` finished ones, under one MLflow run with the study's summary;
    its run id. Ctrl-C ends the run KILLED, keeps the finished trials and re-raises."""
    import json

    import mlflow

    from ml import tracking
    from ml.tuning.report import log_study

    recipe = p.recipe
    done = _finished(study)
    exp_id = tracking.experiment_id(settings, recipe.experiment_name)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"tune-{recipe.name}") as run:
        mlflow.set_tags(
            {
                "ml.kind": "tune",
                "ml.recipe": recipe.name,
                "ml.study": study.study_name,
                "ml.study_storage": str(redact(url)),
                "ml.context": json.dumps(context, default=str, sort_keys=True),
                "ml.git_commit": tracking.git_commit(settings.root),
            }
        )
        tuning = recipe.tuning.model_dump(mode="json", by_alias=True) if recipe.tuning else {}
        mlflow.log_params(tracking.flatten({"tuning": {**tuning, "n_trials": total}}))
        runs = TrialRuns(exp_id, run.info.run_id, search.metric, recipe.name)
        steps.note(
            f"study {study.study_name}: {done} of {total} trials finished before, "
            f"{search.direction} {search.metric} over {len(folds)} folds"
        )
        with stop_on_interrupt() as stop:
            interrupted = False
            try:
                if total > done:
                    study.optimize(
                        Objective(p, search, folds, runs, stop),
                        n_trials=total - done,
                        timeout=search.timeout_seconds,
                        callbacks=_callbacks(steps, done, total, search.metric, stop),
                        gc_after_trial=False,
                    )
            except KeyboardInterrupt:
                interrupted = True
            interrupted = interrupted or stop.is_set()
        log_study(study, search.metric)
        if interrupted:
            mlflow.end_run("KILLED")
            steps.note(
                f"interrupted: {_finished(study)} finished trials kept in study "
                f"{study.study_name}; `ml tune --resume` continues it"
            )
            raise KeyboardInterrupt
    return str(run.info.run_id)


def _callbacks(steps: Steps, done: int, total: int, metric: str, stop: Any) -> list[Any]:
    def stop_when_asked(study: optuna.Study, trial: Any) -> None:
        if stop.is_set():
            study.stop()

    shown = [Progress(steps.stream, done, total, metric)] if steps.enabled else []
    return [*shown, stop_when_asked]


def _finished(study: optuna.Study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _best(study: optuna.Study, p: Plan) -> optuna.trial.FrozenTrial:
    try:
        return study.best_trial
    except ValueError:
        raise TrainingError(
            f"{p.label}: tuning: no trial of study {study.study_name} completed, so there is no "
            "best configuration to train (raise tuning.timeout_seconds or n_trials)"
        ) from None
