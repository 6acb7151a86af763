"""The promotion gate and the decision metrics, on the demo, whose true effects are known.

- A deliberately useless challenger (an X-learner whose learners are DummyRegressors) does not
  take @champion from the demo model; it is registered without the alias, and says why.
- An equal retrain takes it; --force-alias moves it regardless; every decision is tagged.
- The policy gain at 30% estimated on held-out randomized rows covers the true gain of the same
  selection (raw.true_effects), and the X-learner beats random targeting at 30%.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from ml.cli import main

ROOT = Path(__file__).resolve().parents[2]
RECIPE = "xgboost_x_learner"


@pytest.fixture(scope="module")
def gate_store(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("gate-store")
    return {
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(base / "artifacts"),
    }


@pytest.fixture
def gate(gate_store, ml_env, monkeypatch):
    for key, value in gate_store.items():
        monkeypatch.setenv(key, value)
    from mlflow.tracking import MlflowClient

    uri = gate_store["MLFLOW_TRACKING_URI"]
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _useless_recipe(tmp_path: Path) -> Path:
    data = yaml.safe_load((ROOT / "recipes" / f"{RECIPE}.yaml").read_text())
    dummy = {"class_path": "sklearn.dummy.DummyRegressor", "params": {}}
    data["model"]["params"]["models"] = dummy
    data["model"]["params"]["cate_models"] = dummy
    path = tmp_path / f"{RECIPE}.yaml"  # same name: the same registered model
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _train(*args: str) -> dict:
    result = CliRunner().invoke(main, ["train", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _holder(client) -> str:
    return str(client.get_model_version_by_alias(RECIPE, "champion").version)


def test_the_gate(gate, tmp_path) -> None:
    client = gate
    first = _train("--recipe", f"recipes/{RECIPE}.yaml", "--alias", "champion")
    assert first["promoted"] is True and _holder(client) == first["model_version"]

    useless = _train("--recipe", str(_useless_recipe(tmp_path)), "--alias", "champion")
    assert useless["promoted"] is False
    comparison = useless["comparison"]
    assert comparison["difference_ci"][1] < 0  # worse with 95% confidence
    assert comparison["champion_version"] == first["model_version"]
    assert _holder(client) == first["model_version"]  # the alias did not move
    version = client.get_model_version(RECIPE, useless["model_version"])  # but it is registered
    assert version.tags["ml.promotion.promoted"] == "false"
    assert "not promoted to @champion" in version.tags["ml.promotion.reason"]

    equal = _train("--recipe", f"recipes/{RECIPE}.yaml", "--alias", "champion")
    assert equal["promoted"] is True
    assert equal["comparison"]["difference_ci"][0] <= 0 <= equal["comparison"]["difference_ci"][1]
    assert _holder(client) == equal["model_version"]

    forced = _train(
        "--recipe", str(_useless_recipe(tmp_path)), "--alias", "champion", "--force-alias"
    )
    assert forced["promoted"] is True and forced["comparison"]["forced"] is True
    assert _holder(client) == forced["model_version"]
    tags = client.get_model_version(RECIPE, forced["model_version"]).tags
    assert tags["ml.promotion.forced"] == "true"


def test_a_refused_promotion_says_why_in_one_line(gate, tmp_path) -> None:
    _train("--recipe", f"recipes/{RECIPE}.yaml", "--alias", "champion")
    result = CliRunner().invoke(
        main, ["train", "--recipe", str(_useless_recipe(tmp_path)), "--alias", "champion"]
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "promoted" in line]
    assert len(lines) == 1 and lines[0].startswith("not promoted to @champion: worse")
    assert "policy_gain_at_30" in lines[0] and "--force-alias" in lines[0]


def test_policy_gain_covers_the_truth_and_beats_random(
    trained_x_learner, settings, pristine_warehouse
) -> None:
    import mlflow
    import pyarrow.parquet as pq

    from ml import tracking

    tracking.configure(settings)  # the session store, where the champion was trained
    run = mlflow.get_run(trained_x_learner.run_id)
    m = run.data.metrics
    path = mlflow.artifacts.download_artifacts(
        run_id=trained_x_learner.run_id, artifact_path="evaluation/test_predictions.parquet"
    )
    held = pq.read_table(path).to_pandas()
    with duckdb.connect(str(pristine_warehouse), read_only=True) as con:
        truth = con.execute(
            "select customer_id, campaign_id, true_uplift from raw.true_effects"
        ).df()
    held = held.merge(truth, on=["customer_id", "campaign_id"], how="left")
    assert held["true_uplift"].notna().all()
    order = np.argsort(-held["score"].to_numpy(), kind="stable")
    top = order[: int(np.ceil(0.3 * len(held)))]
    true_gain = held["true_uplift"].to_numpy()[top].sum() / len(held)
    assert m["policy_gain_at_30_ci_low"] <= true_gain <= m["policy_gain_at_30_ci_high"]
    assert m["policy_gain_at_30_ci_low"] > m["random_gain_at_30"]


def test_holdout_contexts_join_the_held_out_rows(gate, tmp_path) -> None:
    data = yaml.safe_load((ROOT / "recipes" / f"{RECIPE}.yaml").read_text())
    data["evaluation"] = {"holdout_contexts": ["cmp_2026_06"]}
    path = tmp_path / "with_holdout.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    plain = _train("--recipe", f"recipes/{RECIPE}.yaml")
    held = _train("--recipe", str(path))
    assert held["rows"]["train"] == plain["rows"]["train"]  # the holdout campaign never trains
    assert held["rows"]["test"] > plain["rows"]["test"]  # it joins the held-out rows
    m = held["metrics"]
    assert m["policy_gain_at_30_ci_low"] <= m["policy_gain_at_30"] <= m["policy_gain_at_30_ci_high"]


def test_a_wrong_holdout_context_leaves_no_run(gate, tmp_path) -> None:
    client = gate

    def runs() -> int:
        experiments = [e.experiment_id for e in client.search_experiments()]
        return len(client.search_runs(experiments)) if experiments else 0

    data = yaml.safe_load((ROOT / "recipes" / f"{RECIPE}.yaml").read_text())
    data["evaluation"] = {"holdout_contexts": ["cmp_2026_09"]}  # the training context itself
    path = tmp_path / "bad_holdout.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    before = runs()
    result = CliRunner().invoke(main, ["train", "--recipe", str(path)])
    assert result.exit_code == 2, result.output
    assert "is the training context itself" in result.output
    assert runs() == before
