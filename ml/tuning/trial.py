"""One trial: sample the parameters, fit and score every fold (reporting each to the pruner),
and record it as an MLflow run nested under the study's run. Ctrl-C is taken between folds, so
a stop never cuts a write in half."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from ml.tuning.folds import Fold, fit_and_score, fold_metric
from ml.tuning.space import Search, suggest, with_params

if TYPE_CHECKING:
    import optuna

    from ml.plan import Plan

_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "interrupted": "KILLED", "failed": "FAILED"}


class TrialRuns:
    """Nested MLflow runs, one per trial: its parameters, the metric per fold and their mean.
    Three store calls per trial (create, one batch, terminate)."""

    def __init__(self, experiment_id: str, parent_run_id: str, metric: str, recipe: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.metric = metric
        self.recipe = recipe

    def start(self, number: int) -> str:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        tags = {
            MLFLOW_PARENT_RUN_ID: self.parent_run_id,
            "ml.kind": "trial",
            "ml.recipe": self.recipe,
            "ml.trial": str(number),
        }
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=f"trial-{number}")
        return str(run.info.run_id)

    def finish(self, run_id: str, values: dict[str, Any], scores: list[float], state: str) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric(f"{self.metric}_fold_{i}", v, now, 0) for i, v in enumerate(scores)]
        if scores:
            metrics.append(Metric(self.metric, float(np.mean(scores)), now, 0))
        params = [Param(path, str(value)) for path, value in values.items()]
        tags = [RunTag("ml.trial_state", state)]
        self.client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
        self.client.set_terminated(run_id, _STATUS[state])


class Objective:
    """Optuna's objective: the mean of the metric over the folds (the test split is never
    among them). A trial whose running mean falls below the median of earlier trials at the
    same fold is pruned."""

    def __init__(
        self, p: Plan, search: Search, folds: list[Fold], runs: TrialRuns, stop: threading.Event
    ) -> None:
        self.p, self.search, self.folds, self.runs, self.stop = p, search, folds, runs, stop

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        if self.stop.is_set():
            raise KeyboardInterrupt
        values = suggest(trial, self.search.space)
        model = with_params(self.p.recipe.model, values)
        run_id = self.runs.start(trial.number)
        scores: list[float] = []
        state = "failed"
        try:
            for i, fold in enumerate(self.folds):
                if self.stop.is_set():
                    raise KeyboardInterrupt
                score = fit_and_score(self.p, model, fold)
                s = self.search
                scores.append(fold_metric(s.metric, s.share, self.p.task, fold, score))
                trial.report(float(np.mean(scores)), i)
                if i < len(self.folds) - 1 and trial.should_prune():
                    state = "pruned"
                    raise optuna.TrialPruned(f"pruned after fold {i + 1}")
            state = "complete"
            return float(np.mean(scores))
        except KeyboardInterrupt:
            state = "interrupted"
            raise
        finally:
            self.runs.finish(run_id, values, scores, state)


class Progress:
    """One line per finished trial on stderr: count, its value (or pruned), the best so far."""

    def __init__(self, stream: TextIO, done: int, total: int, metric: str) -> None:
        self.stream, self.done, self.total, self.metric = stream, done, total, metric
        self.started = time.perf_counter()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from optuna.trial import TrialState

        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            return
        self.done += 1
        seconds = time.perf_counter() - self.started
        self.started = time.perf_counter()
        if trial.state == TrialState.PRUNED:
            what = f"pruned after fold {len(trial.intermediate_values)}"
        else:
            what = f"{self.metric} {trial.value:.4f}"
        try:
            best = study.best_trial
            so_far = f"best {best.value:.4f} (trial {best.number})"
        except ValueError:  # no trial has completed yet
            so_far = "no trial completed yet"
        self.stream.write(f"  trial {self.done}/{self.total}  {what}  {so_far}  {seconds:.1f}s\n")
        self.stream.flush()


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[threading.Event]:
    """The first Ctrl-C (SIGINT) asks the study to stop between folds; a second one stops at
    once. Off the main thread signals cannot be handled: the event is just never set."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
