"""The bad-input catalogue: one table of wrong recipes, config, data, CLI arguments and API
payloads. Each case names the expected error (a regex over the one `Error:` line, or over the
API's error body) and exit code or HTTP status, and proves nothing was written: the score tables
(rows and max(scored_at) per table in the predictions schema), the MLflow registry (models,
versions, aliases) and the tables dbt can see (the DuckDB information_schema) are as before.

Overlaps the single cases in test_validate_cli, test_score, test_serve and test_train on purpose:
this is the systematic version. CLI cases run in-process through CliRunner; API cases through
TestClient on `create_app`; data cases on a copy of the session warehouse.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import duckdb
import pytest
import yaml
from click.testing import CliRunner
from warehouse_snapshots import contents, fresh_copy  # tests/integration/warehouse_snapshots.py

from ml.cli import main

ROOT = Path(__file__).resolve().parents[2]
RECIPE = "xgboost_x_learner"
TOKEN = "catalogue-token-0123456789"
_DELETE = object()


# -- what "nothing was written" means --------------------------------------------------------


def _state(store: str | None = None) -> dict[str, Any]:
    """Score tables, tables visible to dbt, and the registry (of `store`, or the configured)."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    uri = store or os.environ["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    registry = sorted(
        (m.name, tuple(sorted(m.aliases.items())))
        for m in client.search_registered_models(max_results=1000)
    )
    versions = sorted(
        (v.name, v.version, v.run_id) for v in client.search_model_versions(max_results=10000)
    )
    tuned = [  # `ml tune`'s study and trial runs, and its study file beside an SQLite store
        r.info.run_id
        for r in client.search_runs(
            [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)],
            run_view_type=ViewType.ALL,
            max_results=50_000,
        )
        if r.data.tags.get("ml.kind") in {"tune", "trial"}
    ]
    study_file = Path(uri.removeprefix("sqlite:///")).with_name("optuna.db")
    return {
        **contents(os.environ["ML_DUCKDB_PATH"]),
        "registry": registry,
        "versions": versions,
        "tune_runs": sorted(tuned),
        "study_file": uri.startswith("sqlite:///") and study_file.exists(),
    }


# -- the bench: what a case can set up before it runs ----------------------------------------


@dataclass
class Bench:
    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    pristine: Path  # a closed copy of the session warehouse, scored with the champion
    train_store: dict[str, str]  # an MLflow store of this module's own, for training cases
    values: dict[str, str] = field(default_factory=dict)
    state_store: str | None = None  # the MLflow store to compare, when not the configured one

    def env(self, **variables: str | None) -> None:
        for name, value in variables.items():
            if value is None:
                self.monkeypatch.delenv(name, raising=False)
            else:
                self.monkeypatch.setenv(name, value)

    def recipe_file(self, text: str) -> None:
        path = self.tmp / "bad.yaml"
        path.write_text(text)
        self.values["recipe"] = str(path)

    def project(self) -> Path:
        """A copy of config/ in its own project folder (ML_PROJECT_DIR) to break on purpose."""
        dest = self.tmp / "project"
        shutil.copytree(ROOT / "config", dest / "config")
        self.env(ML_PROJECT_DIR=str(dest))
        return dest

    def warehouse(self, sql: str, *, training: bool = False) -> None:
        """A copy of the warehouse with `sql` applied; training cases get their own store."""
        dest = fresh_copy(self.pristine, self.tmp / "wh")
        with duckdb.connect(str(dest)) as con:
            con.execute(sql)
        self.env(ML_DUCKDB_PATH=str(dest))
        if training:
            self.env(**self.train_store)


Setup = Callable[[Bench], None]


def recipe(base: str, key: str, value: Any) -> Setup:
    """The demo recipe `base` with one field set (or deleted), written to bad.yaml."""

    def setup(bench: Bench) -> None:
        data = yaml.safe_load((ROOT / "recipes" / f"{base}.yaml").read_text())
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
        bench.recipe_file(yaml.safe_dump(data, sort_keys=False))

    return setup


def recipe_text(text: str) -> Setup:
    return lambda bench: bench.recipe_file(text)


def env(**variables: str | None) -> Setup:
    return lambda bench: bench.env(**variables)


def config_file(name: str, text: str | None = None, **changes: Any) -> Setup:
    """config/<name> in a project copy: replaced by `text`, or with dotted keys changed."""

    def setup(bench: Bench) -> None:
        path = bench.project() / "config" / name
        if text is not None:
            path.write_text(text)
            return
        data = yaml.safe_load(path.read_text())
        for key, value in changes.items():
            *parents, last = key.split("__")
            node = data
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    return setup


def unreachable_store(bench: Bench) -> None:
    bench.state_store = os.environ["MLFLOW_TRACKING_URI"]  # where a write would have gone
    bench.env(MLFLOW_TRACKING_URI="http://127.0.0.1:9/")  # the discard port: nothing listens


def store_file(name: str, content: bytes | None) -> Setup:
    """MLFLOW_TRACKING_URI at tmp/<name>: a file with `content`, or a folder when None."""

    def setup(bench: Bench) -> None:
        bench.state_store = os.environ["MLFLOW_TRACKING_URI"]
        path = bench.tmp / name
        if name.startswith("plain-file/"):
            (bench.tmp / "plain-file").write_bytes(b"")
        elif content is None:
            path.mkdir(parents=True)
        else:
            path.write_bytes(content)
        bench.env(MLFLOW_TRACKING_URI=f"sqlite:///{path}")

    return setup


def artifacts_under_a_file(bench: Bench) -> None:
    bench.env(**bench.train_store)
    (bench.tmp / "plain-file").write_bytes(b"")
    bench.env(ML_ARTIFACT_LOCATION=str(bench.tmp / "plain-file" / "artifacts"))


def online_store_in_tmp(bench: Bench) -> None:
    bench.env(ML_ONLINE_STORE_PATH=str(bench.tmp / "online.sqlite"))


def data(sql: str, *, training: bool = False) -> Setup:
    return lambda bench: bench.warehouse(sql, training=training)


# -- the catalogue ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    area: str  # recipe | config | data | cli | api
    code: int  # exit code (CLI) or HTTP status (API)
    expect: str  # regex: the one `Error:` line (CLI), or the API's error summary
    args: tuple[str, ...] = ()  # CLI arguments; {recipe} and {run_id} are filled in
    setup: Setup | None = None
    request: dict[str, Any] | None = None  # API: method, path, app, and httpx keywords


def cli(area: str, id: str, code: int, expect: str, *args: str, setup: Setup | None = None):
    return pytest.param(Case(id, area, code, expect, args, setup), id=f"{area}-{id}")


def api(id: str, code: int, expect: str, *, app: str = "open", **request: Any):
    request = {"method": "POST", "path": "/predict", "app": app, **request}
    return pytest.param(Case(id, "api", code, expect, request=request), id=f"api-{id}")


TRAIN = ("train", "--recipe", "{recipe}")
TRAIN_DEMO = ("train", "--recipe", f"recipes/{RECIPE}.yaml")
VALIDATE = ("validate", "--recipe", "{recipe}")
TUNE_CMD = ("tune", "--recipe", "{recipe}")
SCORE = ("score", "--run-id", "{run_id}")
SCORE_CHAMPION = ("score", "--model", f"{RECIPE}@champion")
MATERIALIZE = ("materialize", "--model", f"{RECIPE}@champion")
UPCOMING = "cmp_2026_12"
TUNE = {
    "search_space": {"model.params.models.params.max_depth": {"int": [2, 4]}},
    "metric": "qini_coefficient",
    "n_trials": 2,
    "cv_folds": 2,
}
TRAIN_ROWS = "update analytics_loaders.train_uplift {} where customer_id % 97 = 0"

# exit codes: 2 config/recipe/usage, 3 contract, 4 warehouse, 5 tracking, 6 not found
CASES = [
    # -- recipes ------------------------------------------------------------------------------
    cli("recipe", "file-missing", 2, r"^Error: recipes/nope\.yaml: file not found$",
        "train", "--recipe", "recipes/nope.yaml"),
    cli("recipe", "not-a-regular-file", 2, r"^Error: /dev/null: not a regular file \(it is a character device\)$",
        "validate", "--recipe", "/dev/null"),
    cli("recipe", "empty-file", 2, r"bad\.yaml: the file is empty \(expected a recipe mapping\)$",
        *TRAIN, setup=recipe_text("")),
    cli("recipe", "top-level-list", 2, r"bad\.yaml: expected a mapping at the top level, got list$",
        *TRAIN, setup=recipe_text("- name: x\n")),
    cli("recipe", "yaml-syntax", 2, r"bad\.yaml: YAML syntax error at line 4, column \d+",
        *TRAIN, setup=recipe_text("name: x\ndata:\n  entity_keys: [a\nmodel: {}\n")),
    cli("recipe", "python-tag", 2, r"bad\.yaml: YAML syntax error at .*could not determine a constructor",
        *TRAIN, setup=recipe_text("name: x\nmodel: !!python/object/apply:os.system ['true']\n")),
    cli("recipe", "unknown-key", 2, r"bad\.yaml: data\.featurez: unknown key \(not allowed here\)",
        *TRAIN, setup=recipe(RECIPE, "data.featurez", ["a"])),
    cli("recipe", "bad-name", 2, r"bad\.yaml: name: string should match pattern",
        *TRAIN, setup=recipe(RECIPE, "name", "Bad-Name")),
    cli("recipe", "param-wrong-type", 2,
        r"bad\.yaml: model\.params\.max_depth: input should be a valid integer.*\(got 'six'\)",
        *TRAIN, setup=recipe("conversion_xgb", "model.params.max_depth", "six")),
    cli("recipe", "test-size-out-of-range", 2, r"bad\.yaml: split\.test_size: input should be less than 1",
        *TRAIN, setup=recipe(RECIPE, "split.test_size", 1.5)),
    cli("recipe", "unknown-dbt-model", 2,
        r"bad\.yaml: data\.train_model: dbt model 'nope' not found in the project",
        *TRAIN, setup=recipe(RECIPE, "data.train_model", "nope")),
    cli("recipe", "feature-not-in-model", 2,
        r"bad\.yaml: data\.features: column 'shoe_size' is not in the contract of dbt model train_uplift",
        *TRAIN, setup=recipe(RECIPE, "data.features", ["recency_days", "shoe_size"])),
    cli("recipe", "features-empty", 2, r"bad\.yaml: data\.features: the list is empty$",
        *TRAIN, setup=recipe(RECIPE, "data.features", [])),
    cli("recipe", "feature-twice", 2, r"bad\.yaml: data\.features: 'recency_days' is listed twice \(expected each column once\)$",
        *TRAIN, setup=recipe("conversion_xgb", "data.features", ["recency_days", "recency_days"])),
    cli("recipe", "entity-key-twice", 2, r"bad\.yaml: data\.entity_keys: 'customer_id' is listed twice \(expected each column once\)$",
        *TRAIN, setup=recipe("conversion_xgb", "data.entity_keys", ["customer_id", "customer_id"])),
    cli("recipe", "exclude-not-in-model", 2,
        r"bad\.yaml: data\.exclude: column 'nope_col' is not in the contract of dbt model score_uplift$",
        *TRAIN, setup=recipe("conversion_xgb", "data.exclude", ["nope_col"])),
    cli("recipe", "description-ends-its-raw-block", 2,
        r"bad\.yaml: description: must not contain an '\{% endraw %\}' tag",
        *TRAIN, setup=recipe("conversion_xgb", "description", "x {%- endraw %}{{ no_such_macro() }}")),
    cli("recipe", "target-not-numeric", 2,
        r"bad\.yaml: data\.target: column 'region' of train_uplift is string; expected a numeric or boolean column",
        *TRAIN, setup=recipe(RECIPE, "data.target", "region")),
    cli("recipe", "treatment-for-classifier", 2,
        r"data\.treatment: xgboost\.XGBClassifier is a classification estimator, not an uplift one",
        *TRAIN, setup=recipe("conversion_xgb", "data.treatment", "treatment")),
    cli("recipe", "class-not-importable", 2,
        r"model\.class_path: 'xgboost\.NoSuchModel' is not a class in module xgboost",
        *TRAIN, setup=recipe("conversion_xgb", "model.class_path", "xgboost.NoSuchModel")),
    cli("recipe", "class-not-an-estimator", 2,
        r"model\.class_path: 'subprocess\.Popen' is not in the allowed modules \(xgboost, econml, sklearn\)",
        *TRAIN, setup=recipe("conversion_xgb", "model", {"class_path": "subprocess.Popen", "params": {"args": ["true"]}})),
    cli("recipe", "param-not-accepted", 2,
        r"model\.params\.cate_modelz: XLearner does not accept parameter 'cate_modelz'",
        *VALIDATE, setup=recipe(RECIPE, "model.params.cate_modelz", {"class_path": "xgboost.XGBRegressor"})),
    cli("recipe", "seed-out-of-range", 2, r"bad\.yaml: seed: input should be less than or equal to 4294967295",
        *VALIDATE, setup=recipe(RECIPE, "seed", 2**40)),
    cli("recipe", "name-with-reserved-suffix", 2, r"bad\.yaml: name: must not end in '__current'",
        *VALIDATE, setup=recipe(RECIPE, "name", "uplift__current")),
    cli("recipe", "nested-class-not-allowed", 2,
        r"model\.params\.models\.class_path: 'os\.system' is not in the allowed modules",
        *TRAIN, setup=recipe(RECIPE, "model.params.models", {"class_path": "os.system", "params": {}})),
    cli("recipe", "xgboost-param-misspelt", 2, r"max_dept.*did you mean 'max_depth'",
        *VALIDATE, setup=recipe("conversion_xgb", "model.params.max_dept", 4)),
    cli("recipe", "int-beyond-32-bits", 2, r"model\.params\.n_estimators: 1099511627776 is outside the 32-bit integer range",
        *VALIDATE, setup=recipe("conversion_xgb", "model.params.n_estimators", 2**40)),
    cli("recipe", "policy-share-outside-0-1", 2, r"bad\.yaml: evaluation\.policy_shares: Policy shares outside \(0, 1\]",
        *VALIDATE, setup=recipe(RECIPE, "evaluation", {"policy_shares": [0.3, 1.5]})),
    cli("recipe", "holdout-is-the-training-context", 2,
        r"evaluation\.holdout_contexts: 'cmp_2026_09' is the training context itself",
        *TRAIN, setup=lambda b: (recipe(RECIPE, "evaluation", {"holdout_contexts": ["cmp_2026_09"]})(b),
                                 b.env(**b.train_store))),
    cli("recipe", "holdout-without-rows", 2,
        r"evaluation\.holdout_contexts: 'cmp_1999_01' has no rows in .*train_uplift",
        *TRAIN, setup=lambda b: (recipe(RECIPE, "evaluation", {"holdout_contexts": ["cmp_1999_01"]})(b),
                                 b.env(**b.train_store))),
    cli("recipe", "holdout-not-randomized", 2,
        r"evaluation\.holdout_contexts: .*campaign_id='cmp_2026_06'.* has one treatment arm only \(not randomized\)",
        *TRAIN, setup=lambda b: (recipe(RECIPE, "evaluation", {"holdout_contexts": ["cmp_2026_06"]})(b),
                                 data("update analytics_loaders.train_uplift set treatment = 1 "
                                      "where campaign_id = 'cmp_2026_06'", training=True)(b))),
    cli("recipe", "context-default-wrong-type", 2,
        r"context\.campaign_id\.default: expected a string, got int 202609",
        *VALIDATE, setup=recipe(RECIPE, "context.campaign_id.default", 202609)),
    # -- recipes: the tuning section (ml validate and ml train check it before any write) ------
    cli("recipe", "tuning-unknown-path", 2,
        r"bad\.yaml: tuning\.search_space: model\.params\.nope\.params\.max_depth: model\.params\.nope is not a nested",
        *VALIDATE, setup=recipe(RECIPE, "tuning", TUNE | {"search_space": {"model.params.nope.params.max_depth": {"int": [2, 4]}}})),
    cli("recipe", "tuning-param-not-accepted", 2,
        r"tuning\.search_space: model\.params\.max_depth: 2 \(of its int range\): XLearner does not accept parameter 'max_depth'",
        *TRAIN, setup=recipe(RECIPE, "tuning", TUNE | {"search_space": {"model.params.max_depth": {"int": [2, 4]}}})),
    cli("recipe", "tuning-param-ignored", 2,
        r"tuning\.search_space: model\.params\.max_dept: 2 \(of its int range\): XGBoost .* does not use parameter 'max_dept'",
        *TRAIN, setup=recipe("conversion_xgb", "tuning", TUNE | {"metric": "roc_auc", "search_space": {"model.params.max_dept": {"int": [2, 4]}}})),
    cli("recipe", "tuning-empty-range", 2,
        r"bad\.yaml: tuning\.search_space\.model\.params\.models\.params\.max_depth\.int: the range \[3, 3\] is empty",
        *TRAIN, setup=recipe(RECIPE, "tuning", TUNE | {"search_space": {"model.params.models.params.max_depth": {"int": [3, 3]}}})),
    cli("recipe", "tuning-inverted-range", 2,
        r"tuning\.search_space\.model\.params\.models\.params\.learning_rate\.float: the range \[0\.3, 0\.01\] is inverted",
        *VALIDATE, setup=recipe(RECIPE, "tuning", TUNE | {"search_space": {"model.params.models.params.learning_rate": {"float": [0.3, 0.01]}}})),
    cli("recipe", "tuning-log-non-positive", 2,
        r"tuning\.search_space\.model\.params\.models\.params\.learning_rate\.log: a log-scale range needs positive bounds",
        *TRAIN, setup=recipe(RECIPE, "tuning", TUNE | {"search_space": {"model.params.models.params.learning_rate": {"float": [0, 0.3], "log": True}}})),
    cli("recipe", "tuning-metric-not-produced", 2,
        r"tuning\.metric: 'roc_auc' is not a metric a uplift model logs \(tunable: qini_coefficient",
        *TRAIN, setup=recipe(RECIPE, "tuning", TUNE | {"metric": "roc_auc"})),
    cli("recipe", "tuning-no-trials", 2, r"bad\.yaml: tuning\.n_trials: input should be greater than 0 \(got 0\)",
        *VALIDATE, setup=recipe(RECIPE, "tuning", TUNE | {"n_trials": 0})),
    # -- ml tune: the same refusals, and no study run, trial run or study file written --------
    cli("recipe", "tune-unknown-path", 2,
        r"tuning\.search_space: model\.params\.models\.params\.max_dept: 2 \(of its int range\): XGBoost .* does not use parameter 'max_dept'",
        *TUNE_CMD, setup=recipe(RECIPE, "tuning", TUNE | {"search_space": {"model.params.models.params.max_dept": {"int": [2, 4]}}})),
    cli("recipe", "tune-param-not-accepted", 2,
        r"tuning\.search_space: model\.params\.max_depth: 2 \(of its int range\): XLearner does not accept parameter 'max_depth'",
        *TUNE_CMD, setup=recipe(RECIPE, "tuning", TUNE | {"search_space": {"model.params.max_depth": {"int": [2, 4]}}})),
    cli("recipe", "tune-empty-range", 2, r"\.max_depth\.int: the range \[3, 3\] is empty",
        *TUNE_CMD, setup=recipe(RECIPE, "tuning", TUNE | {"search_space": {"model.params.models.params.max_depth": {"int": [3, 3]}}})),
    cli("recipe", "tune-choice-empty", 2, r"\.booster\.choice: the list is empty",
        *TUNE_CMD, setup=recipe(RECIPE, "tuning", TUNE | {"search_space": {"model.params.models.params.booster": {"choice": []}}})),
    cli("recipe", "tune-inverted-range", 2, r"\.subsample\.float: the range \[1\.0, 0\.5\] is inverted",
        *TUNE_CMD, setup=recipe(RECIPE, "tuning", TUNE | {"search_space": {"model.params.models.params.subsample": {"float": [1.0, 0.5]}}})),
    cli("recipe", "tune-log-non-positive", 2, r"\.learning_rate\.log: a log-scale range needs positive bounds \(got \[-0\.1, 0\.3\]\)",
        *TUNE_CMD, setup=recipe(RECIPE, "tuning", TUNE | {"search_space": {"model.params.models.params.learning_rate": {"float": [-0.1, 0.3], "log": True}}})),
    cli("recipe", "tune-metric-not-produced", 2, r"tuning\.metric: 'rmse' is not a metric a uplift model logs",
        *TUNE_CMD, setup=recipe(RECIPE, "tuning", TUNE | {"metric": "rmse"})),
    cli("recipe", "tune-n-trials-negative", 2, r"bad\.yaml: tuning\.n_trials: input should be greater than 0 \(got -1\)",
        *TUNE_CMD, setup=recipe(RECIPE, "tuning", TUNE | {"n_trials": -1})),
    cli("recipe", "tune-without-tuning-section", 2, r"bad\.yaml: tuning: the recipe has no tuning section",
        *TUNE_CMD, setup=recipe(RECIPE, "name", RECIPE)),
    cli("cli", "tune-trials-zero", 2, r"^Error: Invalid value for '--trials': 0 is not in the range x>=1",
        *TUNE_CMD, "--trials", "0", setup=recipe(RECIPE, "tuning", TUNE)),
    cli("config", "tune-storage-not-a-url", 2, r"^Error: tuning\.storage \(ML_TUNING_STORAGE\): 'no url' is not a URL",
        *TUNE_CMD, setup=lambda b: (recipe(RECIPE, "tuning", TUNE)(b), b.env(ML_TUNING_STORAGE="no url"))),
    # -- config -------------------------------------------------------------------------------
    cli("config", "unknown-app-env", 2, r"^Error: APP_ENV 'staging' is unknown: expected one of dev, prod",
        "--env", "staging", *SCORE_CHAMPION),
    cli("config", "required-var-unset", 2,
        r"^Error: config/prod\.yaml: warehouse\.bigquery\.project: environment variable BQ_PROJECT is not set",
        "--env", "prod", *SCORE_CHAMPION),
    cli("config", "batch-size-zero", 2, r"predictions\.batch_size: input should be greater than 0 \(got '0'\)",
        *SCORE_CHAMPION, setup=env(ML_SCORE_BATCH_SIZE="0")),
    cli("config", "batch-size-not-a-number", 2, r"predictions\.batch_size: input should be a valid integer",
        *SCORE_CHAMPION, setup=env(ML_SCORE_BATCH_SIZE="lots")),
    cli("config", "lock-timeout-negative", 2,
        r"warehouse\.duckdb\.lock_timeout_seconds: input should be greater than or equal to 0",
        *SCORE_CHAMPION, setup=env(ML_DUCKDB_LOCK_TIMEOUT="-1")),
    cli("config", "project-dir-without-config", 2, r"ML_PROJECT_DIR=/nonexistent: no config/base\.yaml there",
        *SCORE_CHAMPION, setup=env(ML_PROJECT_DIR="/nonexistent")),
    cli("config", "memory-limit-syntax", 2,
        r"warehouse\.duckdb\.memory_limit.*ML_DUCKDB_MEMORY_LIMIT",
        *SCORE_CHAMPION, setup=env(ML_DUCKDB_MEMORY_LIMIT="lots")),
    cli("config", "env-is-base", 2, r"^Error: APP_ENV 'base' is not an overlay \(config/base\.yaml is always loaded first\)",
        "--env", "base", *SCORE_CHAMPION),
    cli("config", "unterminated-variable", 2, r"config/dev\.yaml: .*\$\{ML_NOT_CLOSED",
        *SCORE_CHAMPION, setup=config_file("dev.yaml", "warehouse:\n  duckdb:\n    path: ${ML_NOT_CLOSED\n")),
    cli("config", "tracking-store-not-sqlite", 5,
        r"^Error: mlflow\.tracking_uri \(MLFLOW_TRACKING_URI\): .*store\.db is not an SQLite database",
        *SCORE_CHAMPION, setup=store_file("store.db", b"not a database at all\n" * 10)),
    cli("config", "tracking-store-is-a-folder", 5,
        r"^Error: mlflow\.tracking_uri \(MLFLOW_TRACKING_URI\): .*store\.db is not a regular file",
        *SCORE_CHAMPION, setup=store_file("store.db", None)),
    cli("config", "tracking-store-parent-is-a-file", 5,
        r"^Error: mlflow\.tracking_uri \(MLFLOW_TRACKING_URI\): cannot write in .*plain-file",
        *SCORE_CHAMPION, setup=store_file("plain-file/store.db", b"")),
    cli("config", "artifact-location-parent-is-a-file", 5,
        r"^Error: mlflow\.artifact_location \(ML_ARTIFACT_LOCATION\): cannot write in .*plain-file",
        *TRAIN_DEMO, setup=artifacts_under_a_file),
    cli("config", "unknown-key", 2, r"^Error: config/base\.yaml: warehouse\.duckdb\.pathh: unknown key",
        *SCORE_CHAMPION, setup=config_file("base.yaml", warehouse__duckdb__pathh="x.duckdb")),
    cli("config", "wrong-type", 2, r"^Error: config/dev\.yaml: serving\.port: input should be a valid integer",
        *SCORE_CHAMPION, setup=config_file("dev.yaml", serving__port="eighty")),
    cli("config", "yaml-syntax", 2, r"config/dev\.yaml: YAML syntax error at line 3, column 1",
        *SCORE_CHAMPION, setup=config_file("dev.yaml", "dbt:\n  target: [dev\n")),
    cli("config", "python-tag", 2, r"config/dev\.yaml: YAML syntax error at .*could not determine a constructor",
        *SCORE_CHAMPION, setup=config_file("dev.yaml", "dbt: !!python/object/apply:os.system ['true']\n")),
    cli("config", "api-token-unset", 2,
        r"serving\.token_env is ML_CATALOGUE_TOKEN but \$ML_CATALOGUE_TOKEN is empty or unset",
        "serve", "--model", f"{RECIPE}@champion",
        setup=env(ML_API_TOKEN_ENV="ML_CATALOGUE_TOKEN", ML_CATALOGUE_TOKEN=None)),
    cli("config", "tracking-store-unreachable", 5,
        r"^Error: MLflow tracking store http://127\.0\.0\.1:9/ is unreachable",
        *SCORE_CHAMPION, setup=unreachable_store),
    # -- data ---------------------------------------------------------------------------------
    cli("data", "score-column-missing", 3, r"score_uplift: column 'recency_days' is missing",
        *SCORE, setup=data("alter table analytics_loaders.score_uplift drop column recency_days")),
    cli("data", "score-type-changed", 3, r"score_uplift: column 'age' is string, expected int",
        *SCORE, setup=data("alter table analytics_loaders.score_uplift alter age type varchar")),
    cli("data", "score-duplicate-keys", 3,
        r"score_uplift: key \(customer_id\) has 3 duplicate row\(s\) in this context; nothing was written",
        *SCORE, setup=data("insert into analytics_loaders.score_uplift select * from analytics_loaders.score_uplift "
                           f"where campaign_id = '{UPCOMING}' limit 3")),
    cli("data", "score-null-keys", 3,
        r"score_uplift: key column 'customer_id' has 2 null value\(s\); nothing was written",
        *SCORE, setup=data("update analytics_loaders.score_uplift set customer_id = null where customer_id in "
                           "(select customer_id from analytics_loaders.score_uplift "
                           f"where campaign_id = '{UPCOMING}' limit 2)")),
    cli("data", "score-population-empty", 3,
        rf"score_uplift: the scoring population is empty for campaign_id='{UPCOMING}'; nothing was written",
        *SCORE, setup=data(f"delete from analytics_loaders.score_uplift where campaign_id = '{UPCOMING}'")),
    cli("data", "score-relation-missing", 4,
        r"score_uplift \(dbt model score_uplift\) is not built for target dev: run `dbt build --select \+score_uplift",
        *SCORE, setup=data("drop table analytics_loaders.score_uplift")),
    cli("data", "score-table-columns-differ", 4,
        r"predictions\._xgboost_x_learner__scores: existing columns \(.*\) differ from the scores",
        *SCORE, setup=data("alter table predictions._xgboost_x_learner__scores add column note varchar")),
    cli("data", "train-target-nulls", 3, r"train_uplift: target column 'converted' has \d+ null value\(s\)$",
        *TRAIN_DEMO, setup=data(TRAIN_ROWS.format("set converted = null"), training=True)),
    cli("data", "train-treatment-three-values", 3,
        r"train_uplift: treatment column 'treatment' has values \[0, 1, 2\]; expected binary 0/1$",
        *TRAIN_DEMO, setup=data(TRAIN_ROWS.format("set treatment = 2"), training=True)),
    cli("data", "train-population-empty", 3,
        r"train_uplift: the population is empty for campaign_id='cmp_2026_09'$",
        *TRAIN_DEMO, setup=data("delete from analytics_loaders.train_uplift", training=True)),
    cli("data", "train-relation-missing", 4,
        r"train_uplift \(dbt model train_uplift\) is not built for target dev",
        *TRAIN_DEMO, setup=data("drop table analytics_loaders.train_uplift", training=True)),
    cli("data", "train-feature-nan", 3,
        r"train_uplift: feature column 'monetary_30d' has \d+ NaN value\(s\)",
        *TRAIN_DEMO, setup=data(TRAIN_ROWS.format("set monetary_30d = 'nan'::double"), training=True)),
    cli("data", "train-feature-beyond-float32", 3,
        r"train_uplift: feature column 'monetary_90d' has \d+ beyond float32's range",
        *TRAIN_DEMO, setup=data(TRAIN_ROWS.format("set monetary_90d = 1e300"), training=True)),
    cli("data", "score-feature-infinite", 3,
        r"score_uplift: feature column 'monetary_30d' has \d+ infinite value\(s\)",
        *SCORE, setup=data("update analytics_loaders.score_uplift set monetary_30d = 'inf'::double "
                           f"where campaign_id = '{UPCOMING}' and customer_id % 97 = 0")),
    # -- CLI arguments ------------------------------------------------------------------------
    cli("cli", "run-id-and-model", 2, r"^Error: give exactly one of --run-id ID or --model NAME\[@ALIAS\]$",
        "score", "--run-id", "x", "--model", RECIPE),
    cli("cli", "no-model-reference", 2, r"^Error: give exactly one of --run-id ID or --model NAME\[@ALIAS\]$",
        "score"),
    cli("cli", "model-alias-empty", 2, r"^Error: --model 'xgboost_x_learner@': expected NAME, NAME@ALIAS or NAME/VERSION$",
        "score", "--model", f"{RECIPE}@"),
    cli("cli", "model-unknown", 6, r"^Error: model 'no_such_model' has no registered versions$",
        "score", "--model", "no_such_model"),
    cli("cli", "alias-unknown", 6, r"^Error: model 'xgboost_x_learner@nosuchalias' not found in the registry",
        "score", "--model", f"{RECIPE}@nosuchalias"),
    cli("cli", "version-unknown", 6, r"^Error: model 'xgboost_x_learner@999' not found in the registry",
        "score", "--model", f"{RECIPE}/999"),
    cli("cli", "model-uri-not-a-name", 2, r"^Error: --model 'file:///tmp/model': expected NAME, NAME@ALIAS or NAME/VERSION \(a version is a number\)$",
        "score", "--model", "file:///tmp/model"),
    cli("cli", "run-unknown", 6, r"^Error: run '0123456789abcdef' not found in the tracking store$",
        "score", "--run-id", "0123456789abcdef"),
    cli("cli", "context-not-json", 2, r"^Error: --context-params: invalid JSON at line 1 column 2",
        *SCORE, "--context-params", "{campaign_id: x}"),
    cli("cli", "context-not-an-object", 2, r"^Error: --context-params: expected a JSON object .*got list$",
        *SCORE, "--context-params", '["cmp_2026_12"]'),
    cli("cli", "context-unknown-param", 2,
        r"^Error: --context-params: unknown context param 'region' \(recipe xgboost_x_learner declares: campaign_id\)$",
        *SCORE, "--context-params", '{"region": "north"}'),
    cli("cli", "context-wrong-type", 2, r"^Error: --context-params: campaign_id: expected a string, got int 2026$",
        *SCORE, "--context-params", '{"campaign_id": 2026}'),
    cli("cli", "context-null", 2, r"^Error: --context-params: context param 'campaign_id' is required for score",
        *SCORE, "--context-params", '{"campaign_id": null}'),
    cli("cli", "context-no-rows", 3, r"the scoring population is empty for campaign_id='cmp_1999_01'; nothing was written$",
        *SCORE, "--context-params", '{"campaign_id": "cmp_1999_01"}'),
    cli("cli", "alias-not-a-name", 2, r"^Error: --alias 'new champion!': expected 1 to 64 letters, digits, '-' or '_'$",
        "train", "--recipe", f"recipes/{RECIPE}.yaml", "--alias", "new champion!"),
    cli("cli", "alias-reserved-latest", 2, r"^Error: --alias 'latest': reserved by MLflow",
        "train", "--recipe", f"recipes/{RECIPE}.yaml", "--alias", "latest"),
    cli("cli", "alias-reserved-version", 2, r"^Error: --alias 'V3': reserved by MLflow",
        "train", "--recipe", f"recipes/{RECIPE}.yaml", "--alias", "V3"),
    cli("cli", "alias-too-long", 2, r"^Error: --alias 'aaaa.*expected 1 to 64",
        "train", "--recipe", f"recipes/{RECIPE}.yaml", "--alias", "a" * 65),
    cli("cli", "context-template-as-dbt-var", 2,
        r"--context-params: campaign_id: template syntax .* not allowed in a value passed to dbt",
        *TRAIN, "--build", "--context-params",
        '{"campaign_id": "{{ run_query(\'create table main.pwned as select 1 as x\') }}"}',
        setup=recipe(RECIPE, "context.campaign_id.apply", ["filter", "var"])),
    cli("cli", "context-no-rows-before-build", 3,
        r"dbt model train_uplift: no rows for campaign_id='cmp_typo'; nothing was built",
        *TRAIN, "--build", "--context-params", '{"campaign_id": "cmp_typo"}',
        setup=lambda b: (recipe(RECIPE, "context.campaign_id.apply", ["filter", "var"])(b),
                         data("select 1", training=True)(b))),
    cli("cli", "scoring-run-as-run-id", 6, r"is not a finished training run",
        "score", "--run-id", "{score_run_id}"),
    cli("cli", "demo-customers-too-many", 2, r"^Error: Invalid value for '--customers'",
        "demo-data", "--customers", "100000000"),
    cli("cli", "demo-seed-negative", 2, r"^Error: Invalid value for '--seed'", "demo-data", "--seed", "-1"),
    cli("cli", "recipe-is-a-directory", 2, r"^Error: Invalid value for '--recipe': File 'recipes' is a directory\. \(see `ml validate -h`\)$",
        "validate", "--recipe", "recipes"),
    cli("cli", "option-without-value", 2, r"^Error: Option '--recipe' requires an argument\. \(see `ml train -h`\)$",
        "train", "--recipe"),
    cli("cli", "unknown-option", 2, r"^Error: No such option '--recipes'\. Did you mean '--recipe'\? \(see `ml train -h`\)$",
        "train", "--recipes", f"recipes/{RECIPE}.yaml"),
    cli("cli", "port-out-of-range", 2, r"^Error: Invalid value for '--port': 70000 is not in the range",
        "serve", "--model", RECIPE, "--port", "70000"),
    cli("cli", "workers-zero", 2, r"^Error: Invalid value for '--workers': 0 is not in the range x>=1",
        "serve", "--model", RECIPE, "--workers", "0"),
    # -- API payloads (POST /predict unless said otherwise) --------------------------------------
    api("missing-feature", 422, r"missing at body\.records\.0\.recency_days", json={"records": [{"-": "recency_days"}]}),
    api("string-for-int", 422, r"int_type at body\.records\.0\.recency_days", json={"records": [{"recency_days": "5"}]}),
    api("bool-for-int", 422, r"int_type at body\.records\.0\.recency_days", json={"records": [{"recency_days": True}]}),
    api("fraction-for-int", 422, r"int_type at body\.records\.0\.recency_days", json={"records": [{"recency_days": 5.5}]}),
    api("number-for-string", 422, r"string_type at body\.records\.0\.region", json={"records": [{"region": 3}]}),
    api("string-for-number", 422, r"float_type at body\.records\.0\.monetary_30d", json={"records": [{"monetary_30d": "1.5"}]}),
    api("nan", 422, r"finite_number at body\.records\.0\.monetary_30d", raw='{"records": [{RECORD-monetary_30d, "monetary_30d": NaN}]}'),
    api("overflow-to-infinity", 422, r"finite_number at body\.records\.0\.monetary_30d",
        raw='{"records": [{RECORD-monetary_30d, "monetary_30d": 1e999}]}'),
    api("duplicate-key", 422, r"json_invalid at body\.0$", raw='{"records": [{RECORD, "monetary_30d": 1.0}]}'),
    api("int-beyond-2**53", 422, r"less_than_equal at body\.records\.0\.age", json={"records": [{"age": 2**53}]}),
    api("int-below-minus-2**53", 422, r"greater_than_equal at body\.records\.0\.age", json={"records": [{"age": -(2**53)}]}),
    api("unknown-field", 422, r"extra_forbidden at body\.records\.0\.shoe_size", json={"records": [{"shoe_size": 42}]}),
    api("null-record", 422, r"model_attributes_type at body\.records\.0$", json={"records": [None]}),
    api("null-records", 422, r"list_type at body\.records$", json={"records": None}),
    api("no-records", 422, r"too_short at body\.records$", json={"records": []}),
    api("too-many-records", 422, r"too_long at body\.records$", app="strict", json={"records": [{}] * 6}),
    api("unknown-top-level-key", 422, r"extra_forbidden at body\.rows$", json={"records": [{}], "rows": []}),
    api("body-not-an-object", 422, r"model_attributes_type at body$", json=[{}]),
    api("invalid-json", 422, r"json_invalid at body", raw='{"records": ['),
    api("float-beyond-float32", 422, r"less_than_equal at body\.records\.1\.monetary_30d$",
        json={"records": [{}, {"monetary_30d": 1e300}]}),
    api("body-not-utf8", 400, r"^There was an error parsing the body$", raw=b'{"records": ["\xff"]}'),
    api("text-plain", 415, r"^expected Content-Type: application/json$", raw="{}", headers={"Content-Type": "text/plain"}),
    api("no-content-type", 415, r"^expected Content-Type: application/json$", raw="{}", headers={"Content-Type": ""}),
    api("body-over-limit", 413, r"^request body over 4096 bytes$", app="strict",
        raw='{"records": [], "pad": "' + "x" * 5000 + '"}'),
    api("no-token", 401, r"^missing or wrong bearer token$", app="strict", json={"records": [{}]}, auth=None),
    api("short-wrong-token", 401, r"^missing or wrong bearer token$", app="strict", json={"records": [{}]}, auth="x"),
    api("long-wrong-token", 401, r"^missing or wrong bearer token$", app="strict", json={"records": [{}]},
        auth=TOKEN + "x" * 1000),
    api("token-not-bearer", 401, r"^missing or wrong bearer token$", app="strict", json={"records": [{}]},
        headers={"Authorization": f"Basic {TOKEN}"}),
    api("wrong-method", 405, r"^Method Not Allowed$", method="GET"),
    api("unknown-path", 404, r"^Not Found$", path="/predictions", json={"records": [{}]}),
    # -- the online store and POST /predict by id ------------------------------------------------
    cli("cli", "materialize-context-wrong-type", 2,
        r"^Error: --context-params: campaign_id: expected a string, got int 2026$",
        *MATERIALIZE, "--context-params", '{"campaign_id": 2026}', setup=online_store_in_tmp),
    cli("cli", "materialize-context-no-rows", 3,
        r"the scoring population is empty for campaign_id='cmp_1999_01'; nothing was written$",
        *MATERIALIZE, "--context-params", '{"campaign_id": "cmp_1999_01"}', setup=online_store_in_tmp),
    cli("config", "redis-unreachable", 4,
        r"^Error: online store redis://127\.0\.0\.1:9/0: unreachable within 1s \(",
        *MATERIALIZE, setup=env(ML_ONLINE_STORE="redis", ML_REDIS_URL="redis://127.0.0.1:9/0",
                                ML_ONLINE_STORE_TIMEOUT="1")),
    cli("config", "redis-without-url", 2,
        r"^Error: config/base\.yaml: serving\.online_store\.url: required for type redis",
        *MATERIALIZE, setup=env(ML_ONLINE_STORE="redis")),
    api("by-id-missing-key-field", 422, r"^entities\[0\]: key field customer_id is missing$",
        json={"context": {"campaign_id": UPCOMING}, "entities": [{}]}),
    api("by-id-key-a-fraction", 422, r"^entities\[0\]\.customer_id: expected an integer or a string, got float 1\.5$",
        json={"context": {"campaign_id": UPCOMING}, "entities": [{"customer_id": 1.5}]}),
    api("by-id-too-many-entities", 422, r"^entities: 6 entities, over serving\.max_records \(5\)$", app="strict",
        json={"context": {"campaign_id": UPCOMING}, "entities": [{"customer_id": i} for i in range(6)]}),
    api("by-id-context-param-missing", 422, r"^context: campaign_id is missing",
        json={"context": {}, "entities": [{"customer_id": 1}]}),
]  # fmt: skip


# -- the SQL engine (`ml score --engine sql`, `ml compile`) ------------------------------------
_TRAINED: dict[tuple[str, str], str] = {}  # (variant, store) -> run id: trained once per store
VARIANTS = {  # conversion_xgb with another estimator
    "sklearn": {"class_path": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 200}},
    "big": {"class_path": "xgboost.XGBClassifier",
            "params": {"n_estimators": 800, "max_depth": 6, "learning_rate": 0.05, "n_jobs": 2}},
}  # fmt: skip


def trained_variant(variant: str) -> Setup:
    """A model of the conversion recipe with another estimator, trained in the module's own
    store on a copy of the warehouse; its run id as {other_run_id}."""

    def setup(bench: Bench) -> None:
        from ml.config import load_settings
        from ml.train import train

        bench.warehouse("select 1", training=True)
        key = (variant, bench.train_store["MLFLOW_TRACKING_URI"])
        if key not in _TRAINED:
            data = yaml.safe_load((ROOT / "recipes" / "conversion_xgb.yaml").read_text())
            data["name"] = f"sql_{variant}"
            data["model"] = VARIANTS[variant]
            path = bench.tmp / f"sql_{variant}.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            _TRAINED[key] = train(load_settings(root=ROOT), path).run_id
        bench.values["other_run_id"] = _TRAINED[key]

    return setup


SQL = ("--engine", "sql")
CASES += [
    cli("data", "sql-score-type-changed", 3, r"score_uplift: column 'age' is string, expected int",
        *SCORE, *SQL, setup=data("alter table analytics_loaders.score_uplift alter age type varchar")),
    cli("data", "sql-feature-infinite", 3,
        r"score_uplift: feature column 'monetary_30d' has \d+ infinite value\(s\)",
        *SCORE, *SQL, setup=data("update analytics_loaders.score_uplift set monetary_30d = 'inf'::double "
                                 f"where campaign_id = '{UPCOMING}' and customer_id % 97 = 0")),
    cli("data", "sql-feature-type-not-compiled", 3,
        r"score_uplift: feature column 'monetary_30d' is decimal, trained as float: the SQL engine reads",
        *SCORE, *SQL, setup=data("alter table analytics_loaders.score_uplift alter monetary_30d type decimal(18, 2)")),
    cli("recipe", "sql-unsupported-estimator", 2,
        r"^Error: estimator sklearn\.LogisticRegression cannot be compiled to SQL \(supported: .*\); "
        r"score it with --engine python$",
        "score", "--run-id", "{other_run_id}", *SQL, setup=trained_variant("sklearn")),
    cli("recipe", "sql-model-too-large-for-bigquery", 2,
        r"^Error: the compiled bigquery query is [\d,]+ characters, over bigquery's limit of 1,048,576",
        "compile", "--run-id", "{other_run_id}", "--dialect", "bigquery", setup=trained_variant("big")),
    cli("cli", "sql-engine-unknown", 2, r"^Error: Invalid value for '--engine': 'spark' is not one of",
        *SCORE, "--engine", "spark"),
]  # fmt: skip


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_store(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("train-store")
    return {
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(base / "artifacts"),
    }


@pytest.fixture(scope="module")
def record(warehouse_env, served_champion) -> dict[str, Any]:
    """One valid record (features only) from the scoring population."""
    features = served_champion[3].schema.features
    with duckdb.connect(warehouse_env["ML_DUCKDB_PATH"]) as con:
        row = con.execute(
            "select * from analytics_loaders.score_uplift where recency_days is not null "
            "order by customer_id limit 1"
        ).fetchone()
        names = [d[0] for d in con.description]
    return {f: v for f, v in zip(names, row, strict=True) if f in features}


@pytest.fixture(scope="module")
def apps(served_champion):
    """TestClients: `open` (default config) and `strict` (token, 5 records, 4 KB bodies)."""
    from fastapi.testclient import TestClient
    from threadpoolctl import threadpool_limits

    from ml.serving.app import create_app

    settings, ref, target, model = served_champion
    limits = {"token_env": "ML_CATALOGUE_TOKEN", "max_records": 5, "max_body_bytes": 4096}
    strict = settings.model_copy(update={"serving": settings.serving.model_copy(update=limits)})
    with mock.patch.dict(os.environ, {"ML_CATALOGUE_TOKEN": TOKEN}):
        built = {
            "open": create_app(settings, target, model=model),
            "strict": create_app(strict, target, model=model),
        }
    # the lifespan limits this process to one BLAS/OpenMP thread: undo that on the way out
    with (
        threadpool_limits(limits=None),
        TestClient(built["open"]) as open_client,
        TestClient(built["strict"]) as strict_client,
    ):
        yield {"open": open_client, "strict": strict_client}


@pytest.fixture
def bench(
    ml_env,
    pristine_warehouse,
    train_store,
    tmp_path,
    monkeypatch,
    trained_x_learner,
    scored_champion,
) -> Bench:
    values = {"run_id": trained_x_learner.run_id, "score_run_id": scored_champion.score_run_id}
    return Bench(tmp_path, monkeypatch, pristine_warehouse, train_store, values)


# -- the suite -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: Case, bench: Bench, request: pytest.FixtureRequest) -> None:
    if case.setup:
        case.setup(bench)
    before = _state(bench.state_store)
    if case.request is None:
        code, message = _run_cli(case, bench)
    else:
        code, message = _call_api(
            case, request.getfixturevalue("apps"), request.getfixturevalue("record")
        )
    assert code == case.code, message
    assert re.search(case.expect, message), message
    assert _state(bench.state_store) == before, (
        "a refused input must leave warehouse and registry as they were"
    )


def _run_cli(case: Case, bench: Bench) -> tuple[int, str]:
    args = list(case.args)
    for name, value in bench.values.items():
        args = [a.replace(f"{{{name}}}", value) for a in args]
    result = CliRunner().invoke(main, args, prog_name="ml")
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    # one `Error:` line, the last one (steps or click's usage hint may come before it)
    assert len(errors) == 1 and errors[0] == lines[-1], result.output
    return result.exit_code, errors[0]


def _call_api(case: Case, apps: dict[str, Any], record: dict[str, Any]) -> tuple[int, str]:
    spec = dict(case.request or {})
    client = apps[spec.pop("app")]
    auth = spec.pop("auth", TOKEN)
    headers = dict(spec.pop("headers", {}))
    if auth is not None and "Authorization" not in headers:
        headers["Authorization"] = f"Bearer {auth}"
    if "json" in spec:
        body = spec.pop("json")
        if isinstance(body, dict) and isinstance(body.get("records"), list):
            body = {**body, "records": [_complete(r, record) for r in body["records"]]}
        spec["content"] = json.dumps(body)
        headers.setdefault("Content-Type", "application/json")
    elif "raw" in spec:
        raw = spec.pop(
            "raw"
        )  # {RECORD, ...} starts from the valid record, {RECORD-x, ...} without x
        if isinstance(raw, str):
            raw = re.sub(
                r"\{RECORD(?:-(\w+))?, ",
                lambda m: (
                    "{"
                    + json.dumps({k: v for k, v in record.items() if k != m.group(1)})[1:-1]
                    + ", "
                ),
                raw,
            )
        spec["content"] = raw
        headers.setdefault("Content-Type", "application/json")
    response = client.request(spec.pop("method"), spec.pop("path"), headers=headers, **spec)
    return response.status_code, _summary(response)


def _complete(partial: Any, record: dict[str, Any]) -> Any:
    """A valid record with the case's fields over it; {"-": name} removes a field."""
    if not isinstance(partial, dict):
        return partial
    out = {**record, **{k: v for k, v in partial.items() if k != "-"}}
    out.pop(partial.get("-"), None)
    return out


def _summary(response: Any) -> str:
    """`{"error": msg}` -> msg; FastAPI's 422 detail -> `type at loc; ...`."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        return "; ".join(f"{e['type']} at {'.'.join(map(str, e['loc']))}" for e in detail)
    return str(detail if detail is not None else body)
