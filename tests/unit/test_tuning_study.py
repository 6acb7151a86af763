"""`ml tune`'s parts on generated data: folds only from the training split, stratified as the
split is; a hopeless trial pruned; the study's storage derived from the MLflow store; a resume
that finds nothing creates nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pyarrow as pa
import pytest

from ml import dataset
from ml.config import load_settings
from ml.dbt import DbtModel
from ml.errors import ConfigError
from ml.plan import Plan
from ml.recipe import recipe_from_dict
from ml.tuning import folds as cv
from ml.tuning import study as studies
from ml.tuning.space import check_search
from ml.tuning.trial import Objective, TrialRuns
from ml.warehouse.base import Relation

N = 600


def _plan(task: str, class_path: str, metric: str, space: dict[str, Any]) -> Plan:
    data = {
        "name": "gen",
        "data": {"train_model": "m", "score_model": "m", "entity_keys": ["id"], "target": "y"},
        "model": {"class_path": class_path, "params": {}},
        "split": {"test_size": 0.25},
        "tuning": {"search_space": space, "metric": metric, "cv_folds": 3},
        "seed": 7,
    }
    recipe = recipe_from_dict(data)
    kinds = {"id": "int", "x1": "float", "x2": "float", "y": "float"}
    model = DbtModel("m", "model.p.m", Relation(None, "s", "m"), {}, True, "c", "m.sql", "")
    return Plan(recipe, "gen.yaml", task, model, model, ["x1", "x2"], kinds, ("sklearn",))


def _rows(p: Plan) -> cv.TrainingRows:
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=N), rng.normal(size=N)
    y = 3 * x1 + np.sin(4 * x2) + rng.normal(scale=0.1, size=N)
    if p.task == "classification":
        y = (y > 0.5).astype(float)
    table = pa.table({"id": np.arange(N), "x1": x1, "x2": x2, "y": y})
    strata = y if p.task == "classification" else None
    split = dataset.split_rows(table, p.recipe.split, p.recipe.seed, strata, "s.m")
    return cv.TrainingRows(table, y, None, strata, split.train)


def test_folds_cover_the_training_split_only_and_keep_class_shares() -> None:
    p = _plan(
        "classification",
        "sklearn.tree.DecisionTreeClassifier",
        "roc_auc",
        {"model.params.max_depth": {"int": [1, 6]}},
    )
    rows = _rows(p)
    folds = cv.make_folds(p, rows, 3)
    assert len(rows.train) == N * 3 // 4
    assert sum(len(f.y_val) for f in folds) == len(rows.train)
    assert all(len(f.y_fit) + len(f.y_val) == len(rows.train) for f in folds)
    # validation rows are training-split rows: their x1 values are among the training split's
    x1 = rows.table.column("x1").to_numpy().astype(np.float32)  # the matrices are float32
    train_x1, test_x1 = set(x1[rows.train]), set(np.delete(x1, rows.train))
    for fold in folds:
        assert set(fold.X_val[:, 0]) <= train_x1 and not set(fold.X_val[:, 0]) & test_x1
    share = rows.y[rows.train].mean()
    for fold in folds:  # stratified: each fold's positive share within one row of the split's
        assert abs(fold.y_val.mean() - share) <= 1 / len(fold.y_val) + 1e-9
    # the same seed cuts the same folds
    again = cv.make_folds(p, rows, 3)
    assert all(np.array_equal(a.y_val, b.y_val) for a, b in zip(folds, again, strict=True))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    """A real MLflow store for the nested trial runs, the process's store while the test runs."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        yield MlflowClient(uri)
    finally:
        mlflow.set_tracking_uri(None)


def _tree_depth_search() -> tuple[Plan, Any]:
    """A regression tree's max_depth searched by rmse, checked as `ml tune` checks it."""
    p = _plan(
        "regression",
        "sklearn.tree.DecisionTreeRegressor",
        "rmse",
        {"model.params.max_depth": {"int": [1, 8]}},
    )
    return p, check_search(p.recipe, p.task, p.label, p.allowed_modules)


def test_a_hopeless_trial_is_pruned_after_its_first_fold(client: Any) -> None:
    p, search = _tree_depth_search()
    assert search.direction == "minimize"
    folds = cv.make_folds(p, _rows(p), 3)

    exp_id = client.create_experiment("gen")
    parent = client.create_run(exp_id).info.run_id
    runs = TrialRuns(exp_id, parent, "rmse", "gen")
    study = optuna.create_study(
        sampler=optuna.samplers.TPESampler(seed=7),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
        direction=search.direction,
    )
    for depth in (6, 7, 8, 6, 7, 1):
        study.enqueue_trial({"model.params.max_depth": depth})
    study.optimize(Objective(p, search, folds, runs, threading.Event()), n_trials=6)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE"] * 5 + ["PRUNED"]
    assert len(study.trials[-1].intermediate_values) == 1
    nested = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent}'")
    by_trial = {int(r.data.tags["ml.trial"]): r for r in nested}
    assert [by_trial[i].data.tags["ml.trial_state"] for i in range(6)] == ["complete"] * 5 + [
        "pruned"
    ]
    assert [by_trial[i].info.status for i in (0, 5)] == ["FINISHED", "KILLED"]
    assert set(by_trial[5].data.metrics) == {"rmse_fold_0", "rmse"}
    assert by_trial[5].data.params == {"model.params.max_depth": "1"}
    assert study.best_value < 1.0  # rmse of a deep tree on this data


def test_a_stop_request_ends_the_trial_between_folds(client: Any) -> None:
    p, search = _tree_depth_search()

    class AfterFirstFold(threading.Event):
        """Set by Ctrl-C while the first fold fits: seen at the check before the second."""

        checks = 0

        def is_set(self) -> bool:
            self.checks += 1
            return self.checks > 2  # before the trial, before fold 0: not yet

    stop = AfterFirstFold()
    study = optuna.create_study(direction=search.direction)
    exp_id = client.create_experiment("gen")
    runs = TrialRuns(exp_id, client.create_run(exp_id).info.run_id, "rmse", "gen")
    objective = Objective(p, search, cv.make_folds(p, _rows(p), 3), runs, stop)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(objective, n_trials=3)
    assert [t.state.name for t in study.trials] == ["FAIL"]
    (run,) = client.search_runs([exp_id], "tags.ml.trial = '0'")
    assert (run.data.tags["ml.trial_state"], run.info.status) == ("interrupted", "KILLED")
    assert set(run.data.metrics) == {"rmse_fold_0", "rmse"}


def test_the_study_file_goes_beside_a_local_mlflow_store(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    settings = load_settings(root=root)
    assert studies.storage_url(settings) == f"sqlite:///{tmp_path / 'store' / 'optuna.db'}"

    monkeypatch.setenv("ML_TUNING_STORAGE", "postgresql://tuner@db.internal/optuna")
    assert studies.storage_url(load_settings(root=root)) == "postgresql://tuner@db.internal/optuna"

    monkeypatch.delenv("ML_TUNING_STORAGE")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://user:pw@mlflow.example.com")
    with pytest.raises(ConfigError, match=r"^tuning\.storage \(ML_TUNING_STORAGE\): required when"):
        studies.storage_url(load_settings(root=root))


def test_storage_refusals_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'not a url' is not a URL"):
        studies.check_storage("not a url")
    with pytest.raises(ConfigError, match=r"folder .*nope does not exist"):
        studies.check_storage(f"sqlite:///{tmp_path / 'nope' / 'optuna.db'}")
    missing = tmp_path / "optuna.db"
    with pytest.raises(ConfigError, match=r"--resume: no study of recipe gen in sqlite:///"):
        studies.resumable(f"sqlite:///{missing}", "gen", "fingerprint")
    assert not missing.exists()
