"""`ml train` on the demo warehouse: quality against the planted truth, MLflow lineage,
determinism, the CLI, `--build`, and one test per bad input (one-line error, nothing registered).

Tests that need a changed warehouse work on a copy of the session DuckDB file; tests that check
the registry use a fresh MLflow store of their own.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from ml.cli import main

ROOT = Path(__file__).resolve().parents[2]
X_LEARNER = "recipes/xgboost_x_learner.yaml"
TRAIN_UPLIFT = "analytics_loaders.train_uplift"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- helpers ---------------------------------------------------------------------------------------


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _download(uri: str, run_id: str, path: str, dst: Path) -> Path:
    import mlflow

    dst.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=path, dst_path=str(dst), tracking_uri=uri
    )
    return Path(local)


def _test_predictions(uri: str, run_id: str, dst: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(_download(uri, run_id, "evaluation/test_predictions.parquet", dst))


def _train_cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["train", *args])


def _settings() -> Any:
    """Settings read from the environment as the test left it (after fresh_store and copies)."""
    from ml.config import load_settings

    return load_settings(root=ROOT)


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.fixture
def fresh_store(ml_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty MLflow store for this test only, so 'nothing registered' can be proven."""
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("ML_ARTIFACT_LOCATION", str(tmp_path / "mlflow" / "artifacts"))
    return uri


@pytest.fixture
def warehouse_copy(fresh_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A private copy of the session warehouse; call it with SQL to change the copy."""
    import duckdb

    source = Path(os.environ["ML_DUCKDB_PATH"])
    # The file name is the DuckDB catalog the dbt staging views refer to: keep it.
    dest = tmp_path / "wh" / source.name
    dest.parent.mkdir()
    shutil.copy(source, dest)
    wal = source.with_name(source.name + ".wal")
    if wal.exists():
        shutil.copy(wal, dest.with_name(wal.name))
    monkeypatch.setenv("ML_DUCKDB_PATH", str(dest))

    def execute(*statements: str) -> None:
        con = duckdb.connect(str(dest))
        try:
            for sql in statements:
                con.execute(sql)
        finally:
            con.close()

    execute.path = dest  # type: ignore[attr-defined]
    return execute


def _assert_one_line_error(result: Any, exit_code: int, *fragments: str) -> str:
    """Non-zero exit, nothing on stdout, exactly one `Error: ...` line naming what is wrong."""
    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    assert result.stdout == ""
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip("\n").splitlines()[-1] == errors[0]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def _assert_nothing_registered(uri: str, error: str) -> None:
    """The store has no model and no version, and its one run is FAILED with the error."""
    client = _client(uri)
    assert client.search_registered_models() == []
    assert client.search_model_versions() == []
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert len(runs) == 1
    assert runs[0].info.status == "FAILED"
    assert runs[0].data.tags["ml.error"] == error.removeprefix("Error: ")


# -- quality on the demo data ------------------------------------------------------------------


def test_x_learner_ranks_close_to_the_oracle(trained_x_learner, ml_env, tmp_path: Path) -> None:
    """The planted effect is recoverable: Qini >= 0.6 of the true-uplift ranking, well above random."""
    import duckdb

    from ml.metrics import qini_coefficient

    uri = ml_env["MLFLOW_TRACKING_URI"]
    held_out = _test_predictions(uri, trained_x_learner.run_id, tmp_path)
    assert held_out.num_rows == trained_x_learner.rows["test"]
    con = duckdb.connect(ml_env["ML_DUCKDB_PATH"])
    try:
        con.register("held_out", held_out)
        rows = con.execute(
            """
            select h.converted, h.treatment, h.score, e.true_uplift
            from held_out as h
            inner join raw.true_effects as e using (campaign_id, customer_id)
            """
        ).fetchnumpy()
    finally:
        con.close()
    assert len(rows["score"]) == held_out.num_rows  # every test row has its ground truth
    y, t = rows["converted"].astype(float), rows["treatment"].astype(float)

    model = qini_coefficient(y, t, rows["score"])
    oracle = qini_coefficient(y, t, rows["true_uplift"])
    rng = np.random.default_rng(0)
    random = [qini_coefficient(y, t, rng.random(len(y))) for _ in range(20)]

    # The run's logged metric is the one recomputed here, on the same rows.
    assert model == pytest.approx(trained_x_learner.metrics["qini_coefficient"], rel=1e-9)
    assert oracle > 0
    assert model >= 0.6 * oracle, (model, oracle)
    # Random rankings scatter around 0; the model sits more than 5 of their SDs above.
    assert model > 5 * np.std(random), (model, np.std(random))


def test_conversion_classifier_beats_chance(fresh_store: str) -> None:
    from ml.train import train

    result = train(_settings(), "recipes/conversion_xgb.yaml")
    assert set(result.metrics) == {"roc_auc", "log_loss", "accuracy"}
    assert result.metrics["roc_auc"] > 0.6, result.metrics


@pytest.mark.slow
def test_causal_forest_trains_in_a_minute_and_stays_small(fresh_store: str, tmp_path: Path) -> None:
    import mlflow

    from ml.train import train

    settings = _settings()
    start = time.perf_counter()
    result = train(settings, "recipes/causal_forest.yaml")
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"causal_forest took {elapsed:.1f}s"
    assert result.metrics["qini_coefficient"] > 0

    run_dir = _download(fresh_store, result.run_id, "", tmp_path / "run")
    model_dir = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/causal_forest/{result.model_version}",
            dst_path=str(tmp_path / "model"),
        )
    )
    assert (run_dir / "estimator" / "estimator.pkl").is_file()
    assert (model_dir / "MLmodel").is_file()
    size = _dir_bytes(run_dir) + _dir_bytes(model_dir)
    assert size < 100 * 2**20, f"causal_forest artifacts take {size / 2**20:.1f} MB"


# -- lineage -------------------------------------------------------------------------------------


def test_run_records_params_metrics_and_tags(trained_x_learner, settings, root: Path) -> None:
    from ml.dbt import DbtProject

    run = _client(settings.mlflow.tracking_uri).get_run(trained_x_learner.run_id)
    assert run.info.status == "FINISHED"
    params, tags = run.data.params, run.data.tags
    assert params["model.class_path"] == "econml.metalearners.XLearner"
    assert params["model.params.models.params.max_depth"] == "3"
    assert params["model.params.cate_models.params.n_estimators"] == "150"
    assert params["data.train_model"] == "train_uplift"
    assert params["seed"] == "42"

    assert run.data.metrics["qini_coefficient"] == trained_x_learner.metrics["qini_coefficient"]
    assert run.data.metrics["rows_test"] == trained_x_learner.rows["test"]

    # The commit the code was at: a real commit of this repository, HEAD or an ancestor of it
    # (HEAD may move while the suite runs).
    commit = tags["ml.git_commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", commit), commit
    ancestor = subprocess.run(
        ["git", "-C", str(root), "merge-base", "--is-ancestor", commit, "HEAD"]
    )
    assert ancestor.returncode == 0, commit
    assert tags["ml.dbt_target"] == "dev"
    assert tags["ml.app_env"] == "dev"
    assert json.loads(tags["ml.context"]) == {"campaign_id": "cmp_2026_09"}
    model = DbtProject(settings).find_model("train_uplift")
    assert model is not None and model.checksum
    assert tags["ml.dbt_model_checksum"] == model.checksum
    assert tags["ml.relation"] == str(model.relation)
    assert tags["ml.relation"].endswith(TRAIN_UPLIFT)


def test_run_logs_every_artifact(trained_x_learner, settings, tmp_path: Path) -> None:
    from ml.recipe import load_recipe

    run_dir = _download(settings.mlflow.tracking_uri, trained_x_learner.run_id, "", tmp_path)

    recipe = yaml.safe_load((run_dir / "recipe" / "recipe.yaml").read_text())
    assert recipe == load_recipe(X_LEARNER).model_dump(mode="json")

    config = yaml.safe_load((run_dir / "config" / "config.yaml").read_text())
    assert config == settings.redacted()
    assert config["warehouse"]["duckdb"]["path"] == str(settings.warehouse.duckdb.path)

    sql = (run_dir / "dbt" / "train_uplift.sql").read_text()
    assert '"analytics_features"."customer_features"' in sql  # compiled: refs resolved
    assert "{{" not in sql

    schema = json.loads((run_dir / "schema" / "training_schema.json").read_text())
    assert schema["target"] == "converted"
    assert schema["treatment"] == "treatment"
    assert schema["entity_keys"] == ["customer_id"]
    assert schema["features"]["recency_days"] == "int"
    assert not {"customer_id", "campaign_id", "converted", "treatment"} & set(schema["features"])

    for name in ("preprocessor/preprocessor.pkl", "estimator/estimator.pkl"):
        assert pickle.loads((run_dir / name).read_bytes()) is not None
    for plot in (
        "qini_curve",
        "uplift_by_decile",
        "policy_gain",
        "net_value_vs_budget",
        "feature_importance",
    ):
        png = run_dir / "plots" / f"{plot}.png"
        assert png.read_bytes().startswith(PNG_MAGIC), plot
        assert png.stat().st_size > 5_000, plot

    held_out = _test_predictions(settings.mlflow.tracking_uri, trained_x_learner.run_id, tmp_path)
    assert held_out.column_names == [
        "customer_id",
        "campaign_id",
        "converted",
        "treatment",
        "score",
    ]
    assert set(held_out.column("campaign_id").to_pylist()) == {"cmp_2026_09"}


def test_registered_version_carries_the_alias(trained_x_learner, settings) -> None:
    client = _client(settings.mlflow.tracking_uri)
    version = client.get_model_version("xgboost_x_learner", trained_x_learner.model_version)
    assert version.run_id == trained_x_learner.run_id
    assert version.tags["run_id"] == trained_x_learner.run_id
    assert trained_x_learner.alias == "champion"
    assert "champion" in version.aliases


def test_pyfunc_predicts_what_the_reassembled_model_predicts(
    trained_x_learner, settings, tmp_path: Path
) -> None:
    """The registered pyfunc = the run's preprocessor + estimator, and = the logged test scores."""
    import mlflow
    import pandas as pd
    import pyarrow.compute as pc

    from ml import dataset, tracking
    from ml.dbt import DbtProject
    from ml.model import ScoringModel, TrainingSchema
    from ml.warehouse import connect

    tracking.configure(settings)
    uri = settings.mlflow.tracking_uri
    run_dir = _download(uri, trained_x_learner.run_id, "", tmp_path)
    schema = TrainingSchema.from_dict(
        json.loads((run_dir / "schema" / "training_schema.json").read_text())
    )
    reassembled = ScoringModel(
        schema,
        pickle.loads((run_dir / "preprocessor" / "preprocessor.pkl").read_bytes()),
        pickle.loads((run_dir / "estimator" / "estimator.pkl").read_bytes()),
    )

    held_out = _test_predictions(uri, trained_x_learner.run_id, tmp_path / "p")
    held_out = held_out.sort_by("customer_id").slice(0, 500)
    with connect(settings) as wh:
        relation = DbtProject(settings).find_model("train_uplift").relation
        table = wh.read_arrow(
            relation, ["customer_id", *schema.features], {"campaign_id": "cmp_2026_09"}
        )
    wanted = pc.is_in(table.column("customer_id"), held_out.column("customer_id"))
    rows = table.filter(wanted)
    order = np.argsort(rows.column("customer_id").to_numpy())
    rows = rows.take(order)
    assert rows.column("customer_id").to_pylist() == held_out.column("customer_id").to_pylist()

    expected = reassembled.predict_columns(dataset.feature_columns(rows, list(schema.features)))
    frame = pd.DataFrame(
        {
            name: (
                pd.Series(rows.column(name).to_pylist(), dtype=object)
                if kind == "string"
                else rows.column(name).to_pandas().astype("float64")
            )
            for name, kind in schema.features.items()
        }
    )
    pyfunc = mlflow.pyfunc.load_model(
        f"models:/xgboost_x_learner/{trained_x_learner.model_version}"
    )
    served = np.asarray(pyfunc.predict(frame), dtype=np.float64)

    assert np.std(expected) > 0  # real, varying scores: the comparison can fail
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(held_out.column("score").to_numpy(), expected, rtol=1e-9)


def test_same_data_recipe_and_seed_give_the_same_metrics(
    trained_x_learner, ml_env, fresh_store: str, tmp_path: Path
) -> None:
    from ml.train import train

    again = train(_settings(), X_LEARNER)
    assert again.run_id != trained_x_learner.run_id
    assert again.metrics == trained_x_learner.metrics
    assert again.rows == trained_x_learner.rows
    first = _test_predictions(ml_env["MLFLOW_TRACKING_URI"], trained_x_learner.run_id, tmp_path)
    second = _test_predictions(fresh_store, again.run_id, tmp_path / "again")
    assert first.equals(second)


def test_the_same_rows_in_another_physical_order_train_the_same_model(
    trained_x_learner, ml_env, warehouse_copy, tmp_path: Path
) -> None:
    """A parallel `dbt build` (or BigQuery's read streams) returns the same rows in another
    order each time; the seeded split must not depend on it."""
    import duckdb

    from ml.train import train

    def first_keys(path: str) -> list[tuple]:
        with duckdb.connect(path) as con:
            return con.execute(
                f"select customer_id, campaign_id from {TRAIN_UPLIFT} limit 50"
            ).fetchall()

    before = first_keys(ml_env["ML_DUCKDB_PATH"])
    warehouse_copy(
        f"create or replace table {TRAIN_UPLIFT} as "
        f"select * from {TRAIN_UPLIFT} order by hash(customer_id, campaign_id)"
    )
    assert (
        first_keys(str(warehouse_copy.path)) != before
    )  # the rows really come back in another order

    again = train(_settings(), X_LEARNER)
    assert again.metrics == trained_x_learner.metrics
    assert again.rows == trained_x_learner.rows
    first = _test_predictions(ml_env["MLFLOW_TRACKING_URI"], trained_x_learner.run_id, tmp_path)
    second = _test_predictions(os.environ["MLFLOW_TRACKING_URI"], again.run_id, tmp_path / "again")
    assert first.equals(second)


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_json_prints_exactly_one_object(fresh_store: str) -> None:
    result = _train_cli("--recipe", X_LEARNER, "--json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert payload["model_name"] == "xgboost_x_learner"
    assert payload["model_version"] == "1"
    assert payload["alias"] is None
    assert set(payload["metrics"]) >= {"qini_coefficient", "auuc_normalized", "uplift_at_10"}
    run = _client(fresh_store).get_run(payload["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["qini_coefficient"] == payload["metrics"]["qini_coefficient"]


def test_cli_prints_a_metrics_table_and_sets_the_alias(fresh_store: str) -> None:
    result = _train_cli("--recipe", X_LEARNER, "--alias", "challenger")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "model xgboost_x_learner version 1 (@challenger)" in out
    run_id = re.search(r"^run\s+([0-9a-f]{32})$", out, re.M)
    assert run_id, out
    interval = r"\[(-?\d+\.\d{4}), (-?\d+\.\d{4})\]"
    rows = re.findall(rf"^  (\w+)\s+(-?\d+\.\d{{4}})  {interval}$", out, re.M)
    table = {name: (float(v), float(lo), float(hi)) for name, v, lo, hi in rows}
    assert {
        "qini_coefficient",
        "auuc_normalized",
        "uplift_at_10",
        "uplift_at_20",
        "uplift_at_30",
        "ate_estimated",
        "ate_observed",
        "policy_gain_at_30",
        "random_gain_at_30",
        "treat_all_gain",
    } <= set(table)
    assert all(lo <= v <= hi for v, lo, hi in table.values()), table
    version = _client(fresh_store).get_model_version_by_alias("xgboost_x_learner", "challenger")
    assert str(version.version) == "1"
    assert version.run_id == run_id.group(1)


def test_cli_build_rebuilds_a_dropped_training_model(warehouse_copy) -> None:
    import duckdb

    warehouse_copy(f"drop table {TRAIN_UPLIFT}")
    result = _train_cli("--recipe", X_LEARNER, "--build", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    con = duckdb.connect(str(warehouse_copy.path))
    try:
        (count,) = con.execute(
            f"select count(*) from {TRAIN_UPLIFT} where campaign_id = 'cmp_2026_09'"
        ).fetchone()
    finally:
        con.close()
    assert payload["rows"]["population"] == count > 0


# -- bad inputs: one line, non-zero exit, nothing registered -------------------------------------


def test_relation_not_built(warehouse_copy, fresh_store: str) -> None:
    warehouse_copy(f"drop table {TRAIN_UPLIFT}")
    result = _train_cli("--recipe", X_LEARNER)
    error = _assert_one_line_error(
        result, 4, f"relation warehouse.{TRAIN_UPLIFT}", "is not built", "--build"
    )
    _assert_nothing_registered(fresh_store, error)


def test_empty_population_for_the_context(fresh_store: str) -> None:
    result = _train_cli("--recipe", X_LEARNER, "--context-params", '{"campaign_id": "cmp_2026_12"}')
    error = _assert_one_line_error(
        result, 3, TRAIN_UPLIFT, "population is empty", "campaign_id='cmp_2026_12'"
    )
    _assert_nothing_registered(fresh_store, error)


def test_column_the_recipe_needs_is_gone(warehouse_copy, fresh_store: str) -> None:
    warehouse_copy(
        f"create or replace table {TRAIN_UPLIFT} as "
        f"select * exclude (recency_days) from {TRAIN_UPLIFT}"
    )
    result = _train_cli("--recipe", X_LEARNER)
    error = _assert_one_line_error(result, 3, TRAIN_UPLIFT, "'recency_days' is missing")
    _assert_nothing_registered(fresh_store, error)


def test_column_changed_type(warehouse_copy, fresh_store: str) -> None:
    warehouse_copy(
        f"create or replace table {TRAIN_UPLIFT} as "
        f"select * replace (cast(recency_days as varchar) as recency_days) from {TRAIN_UPLIFT}"
    )
    result = _train_cli("--recipe", X_LEARNER)
    error = _assert_one_line_error(
        result, 3, TRAIN_UPLIFT, "'recency_days' is string, expected int"
    )
    _assert_nothing_registered(fresh_store, error)


def test_target_with_nulls(warehouse_copy, fresh_store: str) -> None:
    warehouse_copy(
        f"create or replace table {TRAIN_UPLIFT} as select * replace "
        f"(case when customer_id % 100 = 0 then null else converted end as converted) "
        f"from {TRAIN_UPLIFT}"
    )
    result = _train_cli("--recipe", X_LEARNER)
    error = _assert_one_line_error(
        result, 3, TRAIN_UPLIFT, "target column 'converted' has", "null value(s)"
    )
    _assert_nothing_registered(fresh_store, error)


def test_treatment_with_three_values(warehouse_copy, fresh_store: str) -> None:
    warehouse_copy(
        f"create or replace table {TRAIN_UPLIFT} as select * replace "
        f"(case when customer_id % 50 = 0 then 2 else treatment end as treatment) "
        f"from {TRAIN_UPLIFT}"
    )
    result = _train_cli("--recipe", X_LEARNER)
    error = _assert_one_line_error(
        result, 3, TRAIN_UPLIFT, "treatment column 'treatment' has values [0, 1, 2]"
    )
    _assert_nothing_registered(fresh_store, error)


def test_all_rows_in_control(warehouse_copy, fresh_store: str) -> None:
    warehouse_copy(
        f"create or replace table {TRAIN_UPLIFT} as "
        f"select * replace (cast(0 as bigint) as treatment) from {TRAIN_UPLIFT}"
    )
    result = _train_cli("--recipe", X_LEARNER)
    error = _assert_one_line_error(
        result, 3, TRAIN_UPLIFT, "treatment column 'treatment'", "all rows are control"
    )
    _assert_nothing_registered(fresh_store, error)


def test_a_value_xgboost_refuses_is_refused_before_fitting(
    fresh_store: str, root: Path, tmp_path: Path
) -> None:
    recipe = yaml.safe_load((root / X_LEARNER).read_text())
    recipe["model"]["params"]["models"]["params"]["max_depth"] = -3
    path = tmp_path / "bad_depth.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))

    result = _train_cli("--recipe", str(path))
    _assert_one_line_error(result, 2, str(path), "max_depth", "-3")
    assert "fitting" not in result.stderr
    client = _client(fresh_store)  # refused before the run: no run, no model
    assert client.search_registered_models() == []
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_estimator_fails_to_fit(fresh_store: str, root: Path, tmp_path: Path) -> None:
    # each value is valid alone; scikit-learn refuses the combination only when it fits
    recipe = yaml.safe_load((root / X_LEARNER).read_text())
    recipe["model"]["params"]["propensity_model"] = {
        "class_path": "sklearn.linear_model.LogisticRegression",
        "params": {"penalty": "l1", "solver": "newton-cg"},
    }
    path = tmp_path / "bad_solver.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))

    result = _train_cli("--recipe", str(path))
    error = _assert_one_line_error(result, 7, str(path), "XLearner failed to fit", "l1")
    _assert_nothing_registered(fresh_store, error)


def test_mlflow_store_unreachable(ml_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    start = time.perf_counter()
    result = _train_cli("--recipe", X_LEARNER)
    elapsed = time.perf_counter() - start
    _assert_one_line_error(result, 5, "MLflow tracking store http://127.0.0.1:9 is unreachable")
    # It fails at the first step, before reading data or fitting anything.
    assert "checking the MLflow store ... failed" in result.stderr
    assert "reading" not in result.stderr and "fitting" not in result.stderr
    assert elapsed < 15, f"took {elapsed:.1f}s to give up"


def test_warehouse_locked_by_another_process(warehouse_copy, fresh_store: str) -> None:
    """A file another process holds is reported as locked, not as a relation that is not built."""
    from ml.errors import WarehouseError
    from ml.train import train

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('ready', flush=True); time.sleep(120)",
            str(warehouse_copy.path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        settings = _settings()
        duckdb_settings = settings.warehouse.duckdb.model_copy(update={"lock_timeout_seconds": 1})
        settings = settings.model_copy(
            update={"warehouse": settings.warehouse.model_copy(update={"duckdb": duckdb_settings})}
        )
        with pytest.raises(WarehouseError) as exc:
            train(settings, X_LEARNER)
    finally:
        holder.kill()
        holder.wait()
    message = exc.value.message
    assert str(warehouse_copy.path) in message and "locked by another process" in message
    assert "not built" not in message
    _assert_nothing_registered(fresh_store, "Error: " + message)


def test_compiled_sql_is_reused_from_the_last_dbt_invocation(settings, monkeypatch) -> None:
    """After a dbt build/compile, the logged SQL comes from run_results.json without running dbt
    again, but only while that invocation's manifest is current and its vars match."""
    from ml.dbt import DbtProject

    project = DbtProject(settings)
    project.invoke(["compile", "--select", "train_uplift", "--quiet"], quiet=True)
    recorded = project.recorded_sql("train_uplift")
    assert recorded is not None
    assert '"analytics_features"."customer_features"' in recorded and "{{" not in recorded

    def no_dbt(*args, **kwargs):
        raise AssertionError("dbt was invoked")

    monkeypatch.setattr(project, "invoke", no_dbt)
    assert project.compiled_sql("train_uplift") == recorded
    assert project.recorded_sql("train_uplift", vars={"campaign_id": "cmp_2026_09"}) is None
    assert project.recorded_sql("no_such_model") is None
    monkeypatch.undo()

    project.parse()  # a newer invocation wrote the manifest: the recorded SQL may be stale
    assert DbtProject(settings).recorded_sql("train_uplift") is None


def test_mls_own_manifest_is_parsed_again_for_another_duckdb_file(
    settings, tmp_path, monkeypatch
) -> None:
    """ml's own manifest names relations in the file it was parsed against: pointed at
    another DuckDB file (ML_DUCKDB_PATH), ml parses again instead of looking for them there."""
    from ml.dbt import DbtProject
    from ml.warehouse import database_name

    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "no-dbt-run"))  # ml's own only
    project = DbtProject(settings)
    project.manifest()
    manifest = json.loads(project.manifest_path.read_text())
    for node in manifest["nodes"].values():
        node["database"] = "other_file"  # as if parsed while another file was configured
    project.manifest_path.write_text(json.dumps(manifest))  # newer than every project file

    again = DbtProject(settings)
    parses: list[int] = []
    parse = again.parse
    monkeypatch.setattr(again, "parse", lambda: (parses.append(1), parse())[-1])
    models = [n for n in again.manifest()["nodes"].values() if n["resource_type"] == "model"]
    assert parses == [1]
    assert {n["database"] for n in models} == {database_name(settings)}
    assert DbtProject(settings).manifest()["nodes"] and parses == [1]  # fresh and right now


def test_dbts_own_artifacts_are_reused_for_the_same_target(settings, tmp_path, monkeypatch) -> None:
    """After `dbt compile/build --target dev` in dbt's own target folder, `ml` reads that
    manifest and compiled SQL rather than parsing the project again; not for another target,
    not with vars, not against another database, and not once a project file is newer."""
    from ml.dbt import DbtProject

    shared = tmp_path / "dbt-target"
    monkeypatch.setenv("DBT_TARGET_PATH", str(shared))
    dbt = str(Path(sys.executable).with_name("dbt"))
    cmd = [dbt, "compile", "--select", "train_uplift", "--target", "dev", "--quiet"]
    # its own file: this process's dbt keeps the session warehouse open (same catalog name)
    env = {**os.environ, "ML_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    def no_dbt(*args, **kwargs):
        raise AssertionError("dbt was invoked")

    project = DbtProject(settings)
    monkeypatch.setattr(project, "invoke", no_dbt)
    model = project.find_model("train_uplift")
    assert model is not None and str(model.relation).endswith(TRAIN_UPLIFT)
    sql = project.compiled_sql("train_uplift")
    assert '"analytics_features"."customer_features"' in sql and "{{" not in sql
    assert (
        project.manifest()["metadata"]["invocation_id"]
        == json.loads((shared / "manifest.json").read_text())["metadata"]["invocation_id"]
    )

    results_path = shared / "run_results.json"
    results = json.loads(results_path.read_text())
    for change in ({"target": "prod"}, {"vars": {"campaign_id": "cmp_2026_09"}}):
        results_path.write_text(json.dumps({**results, "args": {**results["args"], **change}}))
        assert DbtProject(settings)._shared_artifacts() is None, change
    results_path.write_text(json.dumps(results))
    assert DbtProject(settings)._shared_artifacts() is not None

    manifest_path = shared / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    elsewhere = json.loads(json.dumps(manifest))
    for node in elsewhere["nodes"].values():
        node["database"] = "other_file"  # dbt ran against another DuckDB file
    manifest_path.write_text(json.dumps(elsewhere))
    assert DbtProject(settings)._shared_artifacts() is None
    manifest_path.write_text(json.dumps(manifest))
    assert DbtProject(settings)._shared_artifacts() is not None

    older = (ROOT / "dbt_project.yml").stat().st_mtime - 60
    os.utime(manifest_path, (older, older))  # a project file changed after that dbt run
    assert DbtProject(settings)._shared_artifacts() is None
