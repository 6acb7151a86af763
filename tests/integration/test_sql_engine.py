"""The SQL engine on a real DuckDB file: the session's X-learner compiled to SQL scores every
demo row (all campaigns) within 1e-6 of the Python engine; `ml score --engine sql` writes the
same slice, views, sources and scoring run as the Python engine; `ml compile` prints what the
training run logged."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
from click.testing import CliRunner
from warehouse_snapshots import fresh_copy  # tests/integration/warehouse_snapshots.py

from ml import registry, tracking
from ml.cli import main
from ml.dataset import feature_columns
from ml.registry import ModelRef
from ml.sqlcompile import compile_model

ROOT = Path(__file__).resolve().parents[2]
POPULATION = "analytics_loaders.score_uplift"


def test_compiled_x_learner_matches_the_python_engine_on_every_demo_row(
    trained_x_learner, settings, ml_env
) -> None:
    tracking.configure(settings)
    trained = registry.load_trained(registry.resolve(ModelRef(run_id=trained_x_learner.run_id)))
    model = trained.model
    keys = ["customer_id", "campaign_id"]
    compiled = compile_model(
        model.schema, model.preprocessor, model.estimator, "duckdb", POPULATION, keys
    )
    assert compiled.estimator == "econml.metalearners.XLearner" and compiled.trees == 350
    with duckdb.connect(ml_env["ML_DUCKDB_PATH"]) as con:
        sql = con.execute(f"{compiled.sql} order by customer_id, campaign_id").fetchnumpy()
        table = con.execute(
            f"select * from {POPULATION} order by customer_id, campaign_id"
        ).to_arrow_table()
    python = model.predict_columns(feature_columns(table, list(model.schema.features)))
    assert len(python) == len(sql["score"]) == table.num_rows > 100_000
    assert len(table.column("campaign_id").unique()) > 1  # every campaign, not one slice
    assert np.array_equal(sql["customer_id"], table.column("customer_id").to_numpy())
    diff = np.abs(np.asarray(sql["score"], dtype=np.float64) - python)
    assert diff.max() <= 1e-6, diff.max()
    assert np.std(python) > 0.01  # scores that differ: the trees split on the data


def _slice(path: Path, run_id: str, campaign: str = "cmp_2026_12") -> dict:
    """The run's scores for one campaign (other tests of the session may score others)."""
    with duckdb.connect(str(path)) as con:
        return con.execute(
            "select customer_id, campaign_id, score, model_name, model_version, scored_at "
            "from predictions.xgboost_x_learner where run_id = ? and campaign_id = ? "
            "order by customer_id",
            [run_id, campaign],
        ).fetchnumpy()


def test_ml_score_engine_sql_writes_the_python_engines_scores_inside_duckdb(
    trained_x_learner, scored_champion, pristine_warehouse, ml_env, tmp_path, monkeypatch
) -> None:
    from mlflow.tracking import MlflowClient

    wh = fresh_copy(pristine_warehouse, tmp_path / "wh")
    monkeypatch.setenv("ML_DUCKDB_PATH", str(wh))
    monkeypatch.setenv("ML_SCORE_ENGINE", "sql")  # predictions.engine
    run_id = trained_x_learner.run_id
    python = _slice(wh, run_id)  # the champion's slice, scored by the Python engine
    result = CliRunner().invoke(main, ["score", "--run-id", run_id, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["engine"] == "sql" and out["rows"] == len(python["customer_id"]) > 40_000
    sql = _slice(wh, run_id)
    assert np.array_equal(sql["customer_id"], python["customer_id"])  # replaced, not appended
    assert np.abs(sql["score"] - python["score"]).max() <= 1e-6
    assert sql["scored_at"].min() > python["scored_at"].max()
    assert set(sql["model_version"]) == {trained_x_learner.model_version}
    with duckdb.connect(str(wh)) as con:
        current = con.execute(
            "select count(*), min(run_id) from predictions.xgboost_x_learner__current "
            "where campaign_id = 'cmp_2026_12'"
        ).fetchone()
        policy = con.execute(
            "select count(*) from predictions.xgboost_x_learner__policy"
        ).fetchone()
    assert current == (out["rows"], run_id) and policy[0] > 0
    run = MlflowClient().get_run(out["score_run_id"])
    assert run.data.tags["ml.engine"] == "sql" and run.data.params["engine"] == "sql"
    assert run.data.metrics["rows"] == out["rows"]
    assert any(k.startswith("psi.") for k in run.data.metrics)  # drift from the sample
    drift = json.loads(
        Path(
            MlflowClient().download_artifacts(
                run.info.run_id, "drift/drift_report.json", str(tmp_path)
            )
        ).read_text()
    )
    assert set(drift["features"]) == set(trained_x_learner_features(run_id))


def trained_x_learner_features(run_id: str) -> list[str]:
    return list(registry.read_schema(registry.resolve(ModelRef(run_id=run_id))).features)


def test_ml_compile_prints_the_sql_the_training_run_logged(
    trained_x_learner, ml_env, tmp_path
) -> None:
    from mlflow.tracking import MlflowClient

    result = CliRunner().invoke(
        main, ["compile", "--model", "xgboost_x_learner@champion", "--dialect", "bigquery"]
    )
    assert result.exit_code == 0, result.output
    printed = result.output.rstrip("\n")
    assert printed.startswith("select `customer_id`, `campaign_id`, ")
    assert "from {{ ref('score_uplift') }} as _ml_population" in printed
    logged = {a.path for a in MlflowClient().list_artifacts(trained_x_learner.run_id, "model_sql")}
    assert logged == {"model_sql/duckdb.sql", "model_sql/bigquery.sql"}
    path = MlflowClient().download_artifacts(
        trained_x_learner.run_id, "model_sql/bigquery.sql", str(tmp_path)
    )
    assert Path(path).read_text() == printed
