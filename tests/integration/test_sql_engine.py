"""The session's X-learner compiled to SQL and run by the real DuckDB warehouse: on every demo
row of the scoring population (all campaigns) the score equals the Python engine's within
1e-6."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np

from ml import registry, tracking
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
    compiled = compile_model(model, "duckdb", POPULATION, keys)
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
