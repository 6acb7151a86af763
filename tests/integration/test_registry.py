"""The registry's faults, each one error for `ml score` and `ml serve` alike: a deleted run, a
run that did not finish, an artifact missing, truncated or replaced by a folder; and the
registry changes only for a finished run (a failed registration leaves no version behind).

Runs are made from the small logged model in tests/fixtures/legacy_model, in a store of the
test's own, so nothing here trains."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_errors import one_line_error  # tests/integration/cli_errors.py
from click.testing import CliRunner
from warehouse_snapshots import fresh_copy  # tests/integration/warehouse_snapshots.py

from ml.cli import main

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "legacy_model"
RECIPE = "xgboost_x_learner"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ml_env) -> dict[str, str]:
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(tmp_path / "artifacts"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _log_run(tmp_path: Path, *, status: str = "FINISHED", artifacts: Path = FIXTURE / "run") -> str:
    """A training run holding the fixture's artifacts (as `ml train` lays them out)."""
    import mlflow

    from ml import tracking
    from ml.config import load_settings

    settings = load_settings(root=ROOT)
    tracking.configure(settings, create=True)
    exp = tracking.experiment_id(settings, "legacy_x_learner")
    run = mlflow.start_run(experiment_id=exp)
    mlflow.set_tags({"ml.kind": "train", "ml.recipe": "legacy_x_learner"})
    mlflow.log_artifacts(str(artifacts))
    mlflow.log_artifacts(str(FIXTURE / "model"), artifact_path="model")
    mlflow.end_run(status=status)
    return str(run.info.run_id)


def _broken_copy(tmp_path: Path, how: str) -> Path:
    dest = tmp_path / "broken"
    shutil.copytree(FIXTURE / "run", dest)
    target = dest / "estimator" / "estimator.pkl"
    if how == "missing":
        target.unlink()
    elif how == "truncated":
        target.write_bytes(target.read_bytes()[:100])
    else:  # replaced by a folder
        target.unlink()
        (target / "inside").mkdir(parents=True)
        (target / "inside" / "x").write_text("x")
    return dest


@pytest.mark.parametrize("command", ["score", "serve"])
def test_a_deleted_run_is_never_scored_or_served(store, tmp_path, command) -> None:
    from mlflow.tracking import MlflowClient

    run_id = _log_run(tmp_path)
    MlflowClient().delete_run(run_id)
    result = CliRunner().invoke(main, [command, "--run-id", run_id])
    assert result.exit_code == 6, result.output
    assert one_line_error(result) == (
        f"Error: run '{run_id}' is not a finished training run (status DELETED)"
    )


@pytest.mark.parametrize("status", ["RUNNING", "FAILED", "KILLED"])
@pytest.mark.parametrize("command", ["score", "serve"])
def test_a_run_that_did_not_finish_is_never_scored_or_served(store, tmp_path, command, status):
    run_id = _log_run(tmp_path, status=status)
    result = CliRunner().invoke(main, [command, "--run-id", run_id])
    assert result.exit_code == 6, result.output
    assert one_line_error(result).endswith(
        f"run '{run_id}' is not a finished training run (status {status})"
    )


@pytest.mark.parametrize("how", ["missing", "truncated", "folder"])
def test_a_broken_artifact_is_one_line_naming_it(store, tmp_path, how) -> None:
    run_id = _log_run(tmp_path, artifacts=_broken_copy(tmp_path, how))
    result = CliRunner().invoke(main, ["score", "--run-id", run_id])
    assert result.exit_code == 5, result.output
    error = one_line_error(result)
    assert error.startswith(f"Error: run '{run_id}': ")
    assert "estimator" in error and len(error) < 400


def test_a_failed_registration_leaves_no_version_and_fails_the_run(
    store, tmp_path, monkeypatch
) -> None:
    from mlflow.tracking import MlflowClient

    from ml import registry

    run_id = _log_run(tmp_path)

    def refuse(*args, **kwargs):
        raise RuntimeError("the registry went away")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", refuse)
    with pytest.raises(Exception, match="registering legacy_x_learner failed"):
        registry.register_finished(
            "legacy_x_learner", run_id, f"runs:/{run_id}/model", alias="champion"
        )
    client = MlflowClient()
    assert client.search_model_versions("name = 'legacy_x_learner'") == []
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert "the registry went away" in run.data.tags["ml.error"]


def test_two_first_trains_on_an_empty_store_both_register(
    store, pristine_warehouse, tmp_path
) -> None:
    """Two `ml train` processes against a store that does not exist yet: each either succeeds or
    fails in one line; neither leaves a version whose run is not FINISHED."""
    from mlflow.tracking import MlflowClient

    # the session's file is open in this process (dbt): the subprocesses get a copy
    copy = fresh_copy(pristine_warehouse, tmp_path / "wh")
    env = {**os.environ, **store, "ML_DUCKDB_PATH": str(copy)}
    cmd = [sys.executable, "-m", "ml", "train", "--recipe", "recipes/conversion_xgb.yaml", "--json"]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            lines = [line for line in err.decode().splitlines() if line.strip()]
            assert lines[-1].startswith("Error: ") and "Traceback" not in err.decode()
    assert any(p.returncode == 0 for p in procs), [e.decode()[-600:] for _, e in outputs]
    uri = store["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions("name = 'conversion_xgb'")
    assert len(versions) == sum(p.returncode == 0 for p in procs)
    for version in versions:
        assert client.get_run(version.run_id).info.status == "FINISHED"


def test_an_unexpected_exception_is_one_line_and_debug_shows_the_traceback(monkeypatch) -> None:
    import ml.validate

    def boom(*args, **kwargs):
        raise RuntimeError("something\nnobody planned for")

    monkeypatch.setattr(ml.validate, "validate_recipe", boom)
    args = ["validate", "--recipe", f"recipes/{RECIPE}.yaml"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 70
    assert one_line_error(result) == (
        "Error: internal error: RuntimeError: something nobody planned for; "
        "rerun with --debug for the traceback"
    )
    debug = CliRunner().invoke(main, ["--debug", *args])
    assert debug.exit_code == 70 and "Traceback" in debug.output
