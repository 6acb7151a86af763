"""`ml validate`: the demo recipes pass; every bad input fails with one line, exit 2, no writes."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_errors import one_line_error  # tests/integration/cli_errors.py
from click.testing import CliRunner

from ml.cli import main

DEMO = ["example_recipe", "xgboost_x_learner", "causal_forest", "conversion_xgb"]


@pytest.fixture
def run(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Point every write location into tmp so a test can prove nothing was written.
    monkeypatch.chdir(root)
    monkeypatch.setenv("ML_DUCKDB_PATH", str(tmp_path / "wh" / "warehouse.duckdb"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")

    def invoke(*args: str):
        result = CliRunner().invoke(main, list(args))
        return result

    invoke.tmp = tmp_path  # type: ignore[attr-defined]
    return invoke


def _write(tmp_path: Path, recipe: dict, name: str = "bad.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return str(path)


def _recipe(root: Path, name: str = "xgboost_x_learner") -> dict:
    return yaml.safe_load((root / "recipes" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", DEMO)
def test_demo_recipes_validate(run, name: str) -> None:
    result = run("validate", "--recipe", f"recipes/{name}.yaml")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"OK  recipes/{name}.yaml")


def test_validate_json_lists_features_and_relations(run) -> None:
    import json

    result = run("validate", "--recipe", "recipes/xgboost_x_learner.yaml", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["task"] == "uplift"
    assert report["train_relation"].endswith("analytics_loaders.train_uplift")
    assert "recency_days" in report["features"]
    assert not {"customer_id", "campaign_id", "converted", "treatment"} & set(report["features"])


def test_exclude_and_a_composite_key_with_the_context_column(run, root: Path) -> None:
    import json

    recipe = _recipe(root, "conversion_xgb")
    recipe["data"]["entity_keys"] = ["customer_id", "campaign_id"]  # also the context column
    recipe["data"]["exclude"] = ["region"]
    recipe["description"] = "Scores {{ no_such_macro() }} for the team."  # plain text to ml
    result = run("validate", "--recipe", _write(run.tmp, recipe, "composite.yaml"), "--json")
    assert result.exit_code == 0, result.output
    features = json.loads(result.output)["features"]
    assert "recency_days" in features
    assert not {"region", "customer_id", "campaign_id"} & set(features)
    _assert_nothing_written(run.tmp)


def _mutate(recipe: dict, path: str, value) -> dict:
    keys = path.split(".")
    node = recipe
    for key in keys[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return recipe


_DELETE = object()

# (id, base recipe, field path, new value, expected error after "bad.yaml: ")
CASES = [
    ("unknown-key", "xgboost_x_learner", "data.featurez", ["a"], r"data.featurez: unknown key"),
    (
        "param-wrong-type",
        "conversion_xgb",
        "model.params.max_depth",
        "six",
        r"model.params.max_depth: input should be a valid integer.*\(got 'six'\)",
    ),
    (
        "nested-param-wrong-type",
        "xgboost_x_learner",
        "model.params.models.params.n_estimators",
        "many",
        r"model.params.models.params.n_estimators: input should be a valid integer",
    ),
    (
        "recipe-field-wrong-type",
        "xgboost_x_learner",
        "split.test_size",
        "most",
        r"split.test_size: input should be a valid number.*\(got 'most'\)",
    ),
    (
        "unknown-dbt-model",
        "xgboost_x_learner",
        "data.train_model",
        "train_upliftt",
        r"data.train_model: dbt model 'train_upliftt' not found in the project",
    ),
    (
        "feature-not-in-model",
        "xgboost_x_learner",
        "data.features",
        ["recency_days", "shoe_size"],
        r"data.features: column 'shoe_size' is not in the contract of dbt model train_uplift",
    ),
    (
        "exclude-not-in-model",
        "conversion_xgb",
        "data.exclude",
        ["region", "nope_col"],
        r"data.exclude: column 'nope_col' is not in the contract of dbt model score_uplift$",
    ),
    (
        "entity-key-twice",
        "conversion_xgb",
        "data.entity_keys",
        ["customer_id", "customer_id"],
        r"data.entity_keys: 'customer_id' is listed twice \(expected each column once\)$",
    ),
    (
        "feature-twice",
        "conversion_xgb",
        "data.features",
        ["recency_days", "recency_days"],
        r"data.features: 'recency_days' is listed twice \(expected each column once\)$",
    ),
    (
        "description-ends-its-raw-block",
        "conversion_xgb",
        "description",
        "Scores {% endraw %}{{ no_such_macro() }}",
        r"description: must not contain an '\{% endraw %\}' tag",
    ),
    (
        "target-missing-from-model",
        "xgboost_x_learner",
        "data.target",
        "purchased",
        r"data.target: column 'purchased' is not in the contract of dbt model train_uplift",
    ),
    (
        "target-key-missing",
        "xgboost_x_learner",
        "data.target",
        _DELETE,
        r"data.target: required key is missing",
    ),
    (
        "treatment-for-non-uplift",
        "conversion_xgb",
        "data.treatment",
        "treatment",
        r"data.treatment: xgboost.XGBClassifier is a classification estimator, not an uplift one",
    ),
    (
        "treatment-missing-for-uplift",
        "xgboost_x_learner",
        "data.treatment",
        _DELETE,
        r"data.treatment: required for the uplift estimator econml.metalearners.XLearner",
    ),
    (
        "estimator-not-importable",
        "conversion_xgb",
        "model.class_path",
        "xgboost.NoSuchModel",
        r"model.class_path: 'xgboost.NoSuchModel' is not a class in module xgboost",
    ),
    (
        "estimator-module-missing",
        "conversion_xgb",
        "model.class_path",
        "xgboost.nosuchsub.Model",
        r"model.class_path: cannot import 'xgboost.nosuchsub.Model' \(No module named 'xgboost.nosuchsub'\)",
    ),
    (
        "param-not-accepted",
        "xgboost_x_learner",
        "model.params.cate_modelz",
        {"class_path": "xgboost.XGBRegressor"},
        r"model.params.cate_modelz: XLearner does not accept parameter 'cate_modelz'",
    ),
    (
        "context-default-wrong-type",
        "xgboost_x_learner",
        "context.campaign_id.default",
        202609,
        r"context.campaign_id.default: expected a string, got int 202609",
    ),
    (
        "context-type-vs-column",
        "xgboost_x_learner",
        "context.campaign_id",
        {"type": "int", "apply": ["filter"], "default": {"train": 1, "score": 2}},
        r"context.campaign_id: declared int, but column 'campaign_id' of train_uplift is string",
    ),
]


@pytest.mark.parametrize(
    ("case", "base", "path", "value", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_recipe(run, root: Path, case: str, base: str, path: str, value, expected: str) -> None:
    recipe_path = _write(run.tmp, _mutate(_recipe(root, base), path, value))
    result = run("validate", "--recipe", recipe_path)
    _assert_one_line_error(result, re.escape(recipe_path) + ": " + expected)
    _assert_nothing_written(run.tmp)


# Knowable from the recipe, the config and the manifest: refused by `ml validate`, and by
# `ml train` before it creates its MLflow run (none is left FAILED, nothing is registered).
# (id, base recipe, field path, new value, expected error after "bad.yaml: ")
ANY_MODEL = (
    r"a recipe's model must be a regressor, a classifier with predict_proba, or an uplift "
    r"estimator \(EconML\)$"
)
BEFORE_RUN = [
    (
        "estimator-without-predict",
        "conversion_xgb",
        "model",
        {"class_path": "sklearn.decomposition.PCA"},
        r"model\.class_path: 'sklearn\.decomposition\.PCA' is not a predictor \(it has no "
        r"predict method\); " + ANY_MODEL,
    ),
    (
        "estimator-a-clusterer",
        "conversion_xgb",
        "model",
        {"class_path": "sklearn.cluster.KMeans", "params": {"n_clusters": 2}},
        r"model\.class_path: 'sklearn\.cluster\.KMeans' is a clusterer; " + ANY_MODEL,
    ),
    (
        "classifier-without-probabilities",
        "conversion_xgb",
        "model",
        {"class_path": "sklearn.svm.SVC", "params": {"probability": False}},
        r"model\.class_path: 'sklearn\.svm\.SVC' has no predict_proba with these params; a "
        r"classification model must be a classifier with predict_proba \(set "
        r"model\.params\.probability: true\)$",
    ),
    (
        "xgboost-classifier-regression-objective",
        "conversion_xgb",
        "model.params.objective",
        "reg:squarederror",
        r"model\.params\.objective: 'reg:squarederror' does not predict the probability of a "
        r"binary target, which a classification model scores; use binary:logistic",
    ),
    (
        "uplift-propensity-regression-objective",
        "xgboost_x_learner",
        "model.params.propensity_model.params.objective",
        "reg:squarederror",
        r"model\.params\.propensity_model\.params\.objective: 'reg:squarederror' does not "
        r"predict the probability of a binary target, which XLearner's propensity_model scores",
    ),
    (
        "metric-unknown",
        "conversion_xgb",
        "evaluation",
        {"metrics": ["nope_metric"]},
        r"evaluation\.metrics: unknown metric 'nope_metric' for a classification model "
        r"\(available: roc_auc, log_loss, accuracy\)$",
    ),
    (
        "metric-of-another-task",
        "xgboost_x_learner",
        "evaluation.metrics",
        ["qini_coefficient", "roc_auc"],
        r"evaluation\.metrics: unknown metric 'roc_auc' for an uplift model \(available: "
        r"qini_coefficient, .*policy_gain_at_<pct> and random_gain_at_<pct> for pct 10, 20, ",
    ),
    (
        "split-column-unknown",
        "conversion_xgb",
        "split",
        {"method": "column", "column": "nope", "test_values": ["a"]},
        r"split\.column: column 'nope' is not in the contract of dbt model train_uplift$",
    ),
    (
        "split-values-of-another-kind",
        "conversion_xgb",
        "split",
        {"method": "column", "column": "age", "test_values": [30, "forty"]},
        r"split\.test_values: 'forty' can never match column 'age' of train_uplift, which is "
        r"int \(expected integers\)$",
    ),
    (
        "xgboost-no-rounds",
        "conversion_xgb",
        "model.params.n_estimators",
        -5,
        r"model\.params\.n_estimators: expected at least 1 \(got -5\): XGBoost would train a "
        r"model of no trees$",
    ),
    (
        "nested-xgboost-no-rounds",
        "xgboost_x_learner",
        "model.params.cate_models.params.n_estimators",
        0,
        r"model\.params\.cate_models\.params\.n_estimators: expected at least 1 \(got 0\)",
    ),
    (
        "economics-overflow",
        "xgboost_x_learner",
        "evaluation.economics",
        {"value_per_conversion": 1.0e306, "cost_per_contact": 0.05, "budget": 300.0},
        r"evaluation\.economics\.value_per_conversion: expected an amount of money from 0 to "
        r"1e12 \(got 1e306\)$",
    ),
    (
        "economics-beyond-every-bound",
        "xgboost_x_learner",
        "evaluation.economics",
        {
            "value_per_conversion": 1e308,
            "cost_per_contact": 1e-308,
            "population": 10**30,
            "budget": 1e308,
        },
        r"evaluation\.economics\.value_per_conversion: expected an amount of money from 0 to "
        r"1e12 \(got 1e308\) \(\+3 more\)$",
    ),
    (
        "economics-population",
        "xgboost_x_learner",
        "evaluation.economics.population",
        10**30,
        r"evaluation\.economics\.population: expected a number of customers from 1 to 1e12 "
        r"\(got 1e30\)$",
    ),
]


@pytest.fixture(scope="module")
def train_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One MLflow store for the module's `ml train` cases: none of them may create a run."""
    base = tmp_path_factory.mktemp("train-store")
    return {
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(base / "artifacts"),
    }


def _runs(tracking_uri: str) -> list[str]:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiments = client.search_experiments(view_type=ViewType.ALL)
    runs = client.search_runs(
        [e.experiment_id for e in experiments], run_view_type=ViewType.ALL, max_results=1000
    )
    models = client.search_registered_models()
    return [r.info.run_id for r in runs] + [m.name for m in models]


@pytest.mark.parametrize(
    ("case", "base", "path", "value", "expected"), BEFORE_RUN, ids=[c[0] for c in BEFORE_RUN]
)
def test_refused_by_validate_and_by_train_before_its_run(
    run,
    root: Path,
    train_store: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    base: str,
    path: str,
    value,
    expected: str,
) -> None:
    recipe_path = _write(run.tmp, _mutate(_recipe(root, base), path, value))
    expected = re.escape(recipe_path) + ": " + expected
    _assert_one_line_error(run("validate", "--recipe", recipe_path), expected)
    _assert_nothing_written(run.tmp)

    for name, setting in train_store.items():
        monkeypatch.setenv(name, setting)
    result = run("train", "--recipe", recipe_path)
    assert result.exit_code == 2, result.output
    assert re.match(r"^Error: " + expected, one_line_error(result)), result.output
    assert _runs(train_store["MLFLOW_TRACKING_URI"]) == [], "no MLflow run, nothing registered"
    assert not (run.tmp / "wh").exists(), "train must not have read the warehouse"


@pytest.mark.parametrize(
    ("base", "changes"),
    [
        ("conversion_xgb", {"evaluation": {"metrics": ["roc_auc", "log_loss"]}}),
        (
            "xgboost_x_learner",
            {
                "evaluation": {
                    "policy_shares": [0.125],
                    "metrics": ["qini_coefficient_ci_low", "policy_gain_at_12_5", "blp_slope"],
                }
            },
        ),
        # a column no feature, key or context reads is loaded for the split
        ("conversion_xgb", {"split": {"method": "column", "column": "as_of_date",
                                      "test_values": [datetime.date(2026, 9, 1)]}}),
        ("conversion_xgb", {"split": {"method": "column", "column": "monetary_30d",
                                      "test_values": [0, 12.5]}}),
    ],
)  # fmt: skip
def test_valid_metrics_and_column_splits_pass(run, root: Path, base: str, changes: dict) -> None:
    recipe_path = _write(run.tmp, _recipe(root, base) | changes)
    result = run("validate", "--recipe", recipe_path)
    assert result.exit_code == 0, result.output


def test_a_column_split_reads_its_column(run, root: Path) -> None:
    """ml train reads the plan's columns: a split column outside them was 'not loaded'."""
    from ml.config import load_settings
    from ml.dbt import DbtProject
    from ml.plan import plan
    from ml.recipe import load_recipe

    split = {"method": "column", "column": "as_of_date", "test_values": [datetime.date(2026, 9, 1)]}
    recipe_path = _write(run.tmp, _recipe(root, "conversion_xgb") | {"split": split})
    p = plan(load_recipe(recipe_path), recipe_path, DbtProject(load_settings(root=root)))
    assert "as_of_date" in p.train_columns and "as_of_date" not in p.features


def test_recipe_file_missing(run) -> None:
    result = run("validate", "--recipe", "recipes/nope.yaml")
    _assert_one_line_error(result, r"recipes/nope.yaml: file not found")


def test_recipe_yaml_syntax_error_has_line_number(run) -> None:
    path = run.tmp / "broken.yaml"
    path.write_text(
        "name: broken\ndata:\n  train_model: train_uplift\n  entity_keys: [customer_id\nmodel: {}\n"
    )
    result = run("validate", "--recipe", str(path))
    _assert_one_line_error(
        result, re.escape(str(path)) + r": YAML syntax error at line 5, column \d+"
    )


def test_unknown_app_env(run) -> None:
    result = run("--env", "staging", "validate", "--recipe", "recipes/xgboost_x_learner.yaml")
    _assert_one_line_error(result, r"APP_ENV 'staging' is unknown: expected one of dev, prod")


def test_required_env_var_unset(run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = run("--env", "prod", "validate", "--recipe", "recipes/xgboost_x_learner.yaml")
    _assert_one_line_error(
        result,
        r"config/prod.yaml: warehouse.bigquery.project: environment variable BQ_PROJECT is not set",
    )


def test_malformed_context_params_json(run) -> None:
    result = run(
        "validate",
        "--recipe",
        "recipes/xgboost_x_learner.yaml",
        "--context-params",
        "{campaign_id: x}",
    )
    _assert_one_line_error(result, r"--context-params: invalid JSON at line 1 column 2")


def test_context_param_of_wrong_type(run) -> None:
    result = run(
        "validate",
        "--recipe",
        "recipes/xgboost_x_learner.yaml",
        "--context-params",
        '{"campaign_id": 7}',
    )
    _assert_one_line_error(result, r"--context-params: campaign_id: expected a string, got int 7")


def _validate_in_a_copy(root: Path, tmp_path: Path, dev_yaml: str) -> subprocess.CompletedProcess:
    """`ml validate` in a subprocess, in a copy of the project whose config/dev.yaml is
    `dev_yaml`."""
    project = tmp_path / "project"
    for part in ("config", "recipes", "models", "macros", "tests/dbt"):
        shutil.copytree(root / part, project / part)
    for name in ("dbt_project.yml", "profiles.yml", "selectors.yml"):
        shutil.copy(root / name, project / name)
    (project / "config" / "dev.yaml").write_text(dev_yaml)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ML_", "MLFLOW_", "BQ_"))},
        "ML_PROJECT_DIR": str(project),
        "ML_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    ml = str(Path(sys.executable).parent / "ml")
    return subprocess.run(
        [ml, "validate", "--recipe", "recipes/conversion_xgb.yaml"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_dbt_failure_is_one_line_on_stderr(root: Path, tmp_path: Path) -> None:
    """dbt's own block describing the failure does not come before ml's line."""
    done = _validate_in_a_copy(root, tmp_path, "dbt:\n  target: nope\n")
    assert (done.returncode, done.stdout) == (4, "")
    assert done.stderr.splitlines() == [
        "Error: dbt parse failed for target nope: Runtime Error The profile 'mmp' does not have "
        "a target named 'nope'. The valid target names for this profile are: - dev - prod"
    ]


def test_a_dbt_target_of_another_warehouse_is_refused(root: Path, tmp_path: Path) -> None:
    """dbt's prod target (BigQuery) with warehouse.type duckdb would read and write two
    different warehouses."""
    done = _validate_in_a_copy(root, tmp_path, "dbt:\n  target: prod\nwarehouse:\n  type: duckdb\n")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        "Error: dbt.target 'prod' is a bigquery target but warehouse.type is 'duckdb': set both "
        "for the same warehouse (APP_ENV picks config/<env>.yaml)"
    ]


def test_debug_shows_traceback(run) -> None:
    result = run("--debug", "validate", "--recipe", "recipes/nope.yaml")
    assert result.exit_code == 2
    assert "Traceback" in result.output


def _assert_one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert re.match(r"^Error: " + pattern, lines[0]), lines[0]


def _assert_nothing_written(tmp: Path) -> None:
    assert not (tmp / "wh").exists(), "validate must not touch the warehouse"
    assert not (tmp / "mlruns").exists(), "validate must not touch the MLflow store"
