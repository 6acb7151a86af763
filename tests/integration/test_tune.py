"""`ml tune`: the recipe's tuning section checked by `ml validate`; a small real study on the
session warehouse (trials tracked as nested MLflow runs, the best configuration trained, logged
and registered as by `ml train`), its determinism, resume and Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from cli_errors import one_line_error  # tests/integration/cli_errors.py
from click.testing import CliRunner
from warehouse_snapshots import fresh_copy  # tests/integration/warehouse_snapshots.py

from ml.cli import main
from ml.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
PATHS = [
    "model.params.models.params.max_depth",
    "model.params.models.params.learning_rate",
    "model.params.cate_models.params.subsample",
]


def _recipe(tmp: Path, name: str = "tune_x", **tuning: Any) -> str:
    """The demo X-learner, made small (few trees) so a trial fits in a second or two."""
    data = yaml.safe_load((ROOT / "recipes" / "xgboost_x_learner.yaml").read_text())
    data["name"] = name
    for learner in ("models", "cate_models", "propensity_model"):
        data["model"]["params"][learner]["params"]["n_estimators"] = 10
    data["evaluation"] = {"bootstrap_replicates": 50, "plots": False}
    data["tuning"] = {
        "search_space": {
            "model.params.models.params.max_depth": {"int": [2, 5]},
            "model.params.models.params.learning_rate": {"float": [0.02, 0.3], "log": True},
            "model.params.cate_models.params.subsample": {"float": [0.6, 1.0]},
        },
        "metric": "qini_coefficient",
        "n_trials": 3,
        "cv_folds": 2,
        "timeout_seconds": 600,
        **tuning,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_validate_reports_the_tuning_section(ml_env, tmp_path: Path) -> None:
    path = _recipe(tmp_path)
    result = CliRunner().invoke(main, ["validate", "--recipe", path])
    assert result.exit_code == 0, result.output
    assert "tunes 3 parameters for maximize qini_coefficient" in result.output
    result = CliRunner().invoke(main, ["validate", "--recipe", path, "--json"])
    report = json.loads(result.output)
    assert report["tuning"] == {
        "parameters": PATHS,
        "metric": "qini_coefficient",
        "direction": "maximize",
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"metric": "policy_gain_at_45"}, r"tuning\.metric: 'policy_gain_at_45' is not a metric"),
        ({"direction": "minimize"}, r"tuning\.direction: minimize is the wrong way"),
    ],
)
def test_validate_refuses_a_metric_the_task_does_not_rank(
    ml_env, tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    result = CliRunner().invoke(main, ["validate", "--recipe", _recipe(tmp_path, **change)])
    assert result.exit_code == 2
    assert re.search(expected, one_line_error(result))


# -- a real study --------------------------------------------------------------------------


@dataclass
class Studies:
    """The same small recipe tuned twice (two new studies) into one MLflow store."""

    store: Path
    recipe: str
    first: dict[str, Any]
    second: dict[str, Any]

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.store / 'mlflow.db'}"


@pytest.fixture(scope="module")
def studies(warehouse_env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studies]:
    base = tmp_path_factory.mktemp("tune")
    store = base / "store"
    env = {
        **warehouse_env,
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(store / "artifacts"),
    }
    with mock.patch.dict(os.environ, env), contextlib.chdir(ROOT):
        recipe = _recipe(base, n_trials=2)
        first = _tune("--recipe", recipe)
        yield Studies(store, recipe, first, _tune("--recipe", recipe, "--alias", "champion"))


def _tune(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["tune", *args, "--json"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout  # --json: one object on stdout, progress on stderr
    # progress is ml's own: one line per trial, none of Optuna's log lines
    assert re.search(r"^  trial \d+/\d+  ", result.stderr, re.M), result.stderr
    assert not re.search(r"^\[[IWE] \d{4}-", result.stderr, re.M), result.stderr
    return json.loads(lines[0])


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _trials(study_file: Path, study: str) -> list[tuple[int, str, float | None, dict]]:
    """(number, state, value, params) of a study, read from Optuna's SQLite file itself."""
    import optuna

    loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{study_file}")
    return [(t.number, t.state.name, t.value, t.params) for t in loaded.trials]


def test_tune_tracks_trials_and_trains_the_best(studies: Studies) -> None:
    out = studies.first
    assert set(out) >= {"best_params", "best_value", "trials", "study_run_id", "run_id"}
    assert out["trials"] == 2 and out["model_version"] == "1"
    assert set(out["best_params"]) == set(PATHS)
    client = _client(studies.uri)
    parent = client.get_run(out["study_run_id"])
    assert parent.data.tags["ml.kind"] == "tune" and parent.info.status == "FINISHED"
    assert parent.data.tags["ml.study"] == out["study"]
    assert parent.data.tags["ml.final_run_id"] == out["run_id"]
    assert parent.data.metrics["trials_complete"] == 2
    assert parent.data.metrics["best_qini_coefficient"] == pytest.approx(out["best_value"])
    png = Path(client.download_artifacts(parent.info.run_id, "plots/optimization_history.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "tuning/trials.json")).read_text()
    )
    assert [row["state"] for row in table] == ["complete", "complete"]

    # each trial a nested run: its parameters, the metric per fold and their mean
    trials = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert len(trials) == 2
    for run in trials:
        assert set(run.data.params) == set(PATHS)
        folds = [run.data.metrics[f"qini_coefficient_fold_{i}"] for i in (0, 1)]
        assert run.data.metrics["qini_coefficient"] == pytest.approx(sum(folds) / 2)
    best = max(trials, key=lambda r: r.data.metrics["qini_coefficient"])
    assert best.data.metrics["qini_coefficient"] == pytest.approx(out["best_value"])

    # the final run: a normal training run with the best values in its logged recipe
    final = client.get_run(out["run_id"])
    assert final.data.tags["ml.kind"] == "train" and final.info.status == "FINISHED"
    assert final.data.tags["ml.study_run_id"] == out["study_run_id"]
    for path, value in out["best_params"].items():
        assert final.data.params[path] == str(value)
        assert best.data.params[path] == str(value)
    assert "qini_coefficient" in final.data.metrics  # evaluated on the test split
    logged = load_recipe(client.download_artifacts(out["run_id"], "recipe/recipe.yaml"))
    depth = out["best_params"]["model.params.models.params.max_depth"]
    assert logged.model.params["models"]["params"]["max_depth"] == depth
    assert logged.tuning is not None and logged.tuning.metric == "qini_coefficient"
    assert client.get_model_version("tune_x", out["model_version"]).run_id == out["run_id"]

    # the study beside the MLflow store holds the same trials
    rows = _trials(studies.store / "optuna.db", out["study"])
    assert [state for _, state, _, _ in rows] == ["COMPLETE"] * 2


def test_same_recipe_and_data_give_the_same_trials(studies: Studies) -> None:
    first, second = studies.first, studies.second
    assert first["study"] != second["study"]  # two studies
    study_file = studies.store / "optuna.db"
    assert _trials(study_file, first["study"]) == _trials(study_file, second["study"])
    assert (first["best_params"], first["best_value"]) == (
        second["best_params"],
        second["best_value"],
    )
    # the second took the alias through the promotion gate (no holder yet: promoted)
    assert (first["alias"], second["alias"], second["promoted"]) == (None, "champion", True)
    version = _client(studies.uri).get_model_version_by_alias("tune_x", "champion")
    assert version.run_id == second["run_id"]


def test_resume_continues_the_last_study(studies: Studies, ml_env, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", studies.uri)
    monkeypatch.setenv("ML_ARTIFACT_LOCATION", str(studies.store / "artifacts"))
    before = _trials(studies.store / "optuna.db", studies.second["study"])
    resumed = _tune("--recipe", studies.recipe, "--resume", "--trials", "3")
    assert resumed["study"] == studies.second["study"] and resumed["trials"] == 3
    after = _trials(studies.store / "optuna.db", studies.second["study"])
    assert after[:2] == before and [n for n, *_ in after] == [0, 1, 2]
    assert resumed["best_value"] >= studies.second["best_value"]

    changed = Path(studies.recipe).with_name("changed.yaml")
    data = yaml.safe_load(Path(studies.recipe).read_text())
    data["tuning"]["cv_folds"] = 3
    changed.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["tune", "--recipe", str(changed), "--resume"])
    assert result.exit_code == 2
    assert re.search(
        r"--resume: the recipe's model, data, split or tuning section changed since study tune_x-",
        one_line_error(result),
    )


def test_timeout_ends_the_search_and_trains_the_best_so_far(
    warehouse_env, tmp_path: Path, monkeypatch
) -> None:
    """tuning.timeout_seconds stops starting trials once it has passed (a trial under way ends
    first), and the best configuration found so far is trained."""
    store = tmp_path / "store"
    for name, value in warehouse_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.setenv("ML_ARTIFACT_LOCATION", str(store / "artifacts"))
    monkeypatch.chdir(ROOT)
    recipe = _recipe(tmp_path, name="tune_timeout", n_trials=500, timeout_seconds=1)

    out = _tune("--recipe", recipe)

    assert 1 <= out["trials"] < 500
    rows = _trials(store / "optuna.db", out["study"])
    assert len(rows) == out["trials"]
    assert out["model_version"] == "1"


def test_resume_without_a_study_writes_nothing(ml_env, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    result = CliRunner().invoke(main, ["tune", "--recipe", _recipe(tmp_path), "--resume"])
    assert result.exit_code == 2
    assert re.search(r"--resume: no study of recipe tune_x in sqlite:///", one_line_error(result))
    assert not (tmp_path / "store" / "optuna.db").exists()


def test_ctrl_c_stops_cleanly_and_keeps_finished_trials(
    ml_env, pristine_warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGINT to `ml tune` in its own process: exit 130, one line, the finished trials
    stay in the study, nothing is registered; --resume then continues the same study."""
    env = {
        **os.environ,
        "ML_DUCKDB_PATH": str(fresh_copy(pristine_warehouse, tmp_path / "wh")),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(tmp_path / "store" / "artifacts"),
    }
    recipe = _recipe(tmp_path, n_trials=40)
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ml", "tune", "--recipe", recipe],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + 120
            while "trial 1/40" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert proc.returncode == 130, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[-1] == "Error: interrupted", text
    assert "Traceback" not in text
    assert not re.search(r"^\[[IWE] \d{4}-", text, re.M), text  # no Optuna log lines
    assert re.search(r"interrupted: \d+ finished trials kept in study tune_x-", text), text
    study_file = tmp_path / "store" / "optuna.db"
    with sqlite3.connect(study_file) as con:
        states = dict(con.execute("select state, count(*) from trials group by state").fetchall())
    assert states.get("COMPLETE", 0) >= 1 and "RUNNING" not in states, states
    kept = states["COMPLETE"] + states.get("PRUNED", 0)

    client = _client(env["MLFLOW_TRACKING_URI"])
    assert client.search_registered_models() == []
    tune_runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.`ml.kind` = 'tune'",
    )
    assert [r.info.status for r in tune_runs] == ["KILLED"]

    for name in ("ML_DUCKDB_PATH", "MLFLOW_TRACKING_URI", "ML_ARTIFACT_LOCATION"):
        monkeypatch.setenv(name, env[name])
    resumed = _tune("--recipe", recipe, "--resume", "--trials", str(kept + 1))
    assert resumed["trials"] == kept + 1 and resumed["study"] in text
