"""`ml score` against a real DuckDB warehouse and MLflow store: what lands, atomicity,
idempotency, concurrency, dbt sources downstream, and every bad input leaving scores intact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
import yaml
from cli_errors import one_line_error
from click.testing import CliRunner
from faults import score_crashing_on_third_batch  # tests/integration/faults.py
from warehouse_snapshots import snapshot as _snapshot  # tests/integration/warehouse_snapshots.py

from ml import registry
from ml.cli import main
from ml.errors import ContractError
from ml.registry import ModelRef
from ml.score import score

ROOT = Path(__file__).resolve().parents[2]
TABLE = "predictions.xgboost_x_learner"
UPCOMING, PAST = "cmp_2026_12", "cmp_2026_09"


def _con(env: dict[str, str]) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(env["ML_DUCKDB_PATH"])


def _slice(env: dict[str, str], run_id: str, campaign: str) -> tuple[int, object]:
    with _con(env) as con:
        return con.execute(
            f"select count(*), max(scored_at) from {TABLE} where run_id = ? and campaign_id = ?",
            [run_id, campaign],
        ).fetchone()


def _population(env: dict[str, str], campaign: str) -> int:
    with _con(env) as con:
        return con.execute(
            "select count(*) from analytics_loaders.score_uplift where campaign_id = ?", [campaign]
        ).fetchone()[0]


@pytest.fixture
def scored(trained_x_learner, settings, ml_env):
    """The upcoming campaign scored with the champion (idempotent, so safe to repeat)."""
    return score(settings, ModelRef(name="xgboost_x_learner", alias_or_version="champion"))


@pytest.fixture
def generated_sources():
    """Tests that score other recipes restore the generated dbt declarations afterwards."""
    path = ROOT / "models" / "predictions" / "_prediction_sources.yml"
    before = path.read_text()
    yield path
    path.write_text(before)


def test_scores_land_with_lineage_columns(scored, trained_x_learner, ml_env) -> None:
    assert scored.relation == TABLE
    assert scored.rows == _population(ml_env, UPCOMING) > 40_000
    assert scored.context == {"campaign_id": UPCOMING}
    with _con(ml_env) as con:
        cols = [r[0] for r in con.execute(f"describe {TABLE}").fetchall()]
        assert cols[:2] == ["customer_id", "campaign_id"]
        assert set(cols) == {
            "customer_id",
            "campaign_id",
            "score",
            "model_name",
            "model_version",
            "run_id",
            "scored_at",
        }
        row = con.execute(
            f"select count(distinct customer_id), min(model_name), min(model_version), count(*) filter (where score is null) "
            f"from {TABLE} where run_id = ? and campaign_id = ?",
            [trained_x_learner.run_id, UPCOMING],
        ).fetchone()
    assert row == (scored.rows, "xgboost_x_learner", trained_x_learner.model_version, 0)


def test_batch_scores_equal_the_unified_pyfunc(scored, trained_x_learner, ml_env) -> None:
    import mlflow
    import pandas as pd

    with _con(ml_env) as con:
        frame = con.execute(
            f"select s.*, p.score as batch_score from analytics_loaders.score_uplift s join {TABLE} p "
            "using (customer_id, campaign_id) where p.run_id = ? and campaign_id = ? order by customer_id limit 200",
            [trained_x_learner.run_id, UPCOMING],
        ).df()
    model = mlflow.pyfunc.load_model(f"models:/xgboost_x_learner/{trained_x_learner.model_version}")
    trained = registry.load_trained(registry.resolve(ModelRef(run_id=trained_x_learner.run_id)))
    # the pyfunc signature takes numeric features as doubles and categories as strings
    features = pd.DataFrame(
        {
            f: frame[f] if kind == "string" else frame[f].astype("float64")
            for f, kind in trained.model.schema.features.items()
        }
    )
    np.testing.assert_allclose(
        model.predict(features), frame["batch_score"].to_numpy(), rtol=0, atol=1e-9
    )


def test_rescoring_replaces_the_slice_and_leaves_others(
    scored, trained_x_learner, settings, ml_env
) -> None:
    past = score(settings, ModelRef(run_id=trained_x_learner.run_id), {"campaign_id": PAST})
    upcoming_before = _slice(ml_env, trained_x_learner.run_id, UPCOMING)
    again = score(settings, ModelRef(run_id=trained_x_learner.run_id), {"campaign_id": PAST})
    assert again.rows == past.rows == _population(ml_env, PAST)
    assert (
        _slice(ml_env, trained_x_learner.run_id, PAST)[0] == past.rows
    )  # replaced, not duplicated
    assert (
        _slice(ml_env, trained_x_learner.run_id, UPCOMING) == upcoming_before
    )  # other context untouched


def test_crash_between_batches_leaves_previous_scores(
    scored, trained_x_learner, settings, ml_env, monkeypatch
) -> None:
    before = _slice(ml_env, trained_x_learner.run_id, UPCOMING)
    score_crashing_on_third_batch(settings, trained_x_learner.run_id, 5000, monkeypatch)
    assert _slice(ml_env, trained_x_learner.run_id, UPCOMING) == before
    with _con(ml_env) as con:
        tables = {
            r[0]
            for r in con.execute(
                "select table_name from information_schema.tables where table_schema = 'predictions'"
            ).fetchall()
        }
        # the failed write took its committed batches and its slice with it
        leftovers = con.execute(
            "select count(*) from predictions._xgboost_x_learner__slices where state <> 'live'"
        ).fetchone()[0]
        stored = con.execute(
            "select count(*) from predictions._xgboost_x_learner__scores"
        ).fetchone()[0]
        visible = con.execute(f"select count(*) from {TABLE}").fetchone()[0]
    names = {"xgboost_x_learner", "conversion_xgb", "causal_forest", "no_score_default"}
    derived = {f"_{n}__scores" for n in names} | {f"_{n}__slices" for n in names}
    derived |= {f"_{n}__policy__scores" for n in names} | {f"_{n}__policy__slices" for n in names}
    views = {f"{n}__current" for n in names} | {f"{n}__policy" for n in names}
    assert tables <= names | derived | views
    assert leftovers == 0 and stored == visible


def test_score_cli_json_and_scoring_run(scored, trained_x_learner, ml_env) -> None:
    import mlflow

    result = CliRunner().invoke(main, ["score", "--run-id", trained_x_learner.run_id, "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["rows"] == scored.rows and payload["relation"] == TABLE
    assert payload["run_id"] == trained_x_learner.run_id and payload["seconds"] > 0
    run = mlflow.get_run(payload["score_run_id"])
    assert (
        run.data.tags["ml.kind"] == "score"
        and run.data.tags["ml.source_run_id"] == trained_x_learner.run_id
    )
    assert run.data.metrics["rows"] == scored.rows
    assert run.data.params["input_relation"].endswith("analytics_loaders.score_uplift")
    assert run.data.params["output_relation"] == TABLE
    psi = {k: v for k, v in run.data.metrics.items() if k.startswith("psi.")}
    assert set(psi) == {
        f"psi.{f}"
        for f in registry.load_trained(
            registry.resolve(ModelRef(run_id=trained_x_learner.run_id))
        ).model.schema.features
    }
    report = mlflow.artifacts.load_dict(f"runs:/{payload['score_run_id']}/drift/drift_report.json")
    assert report["threshold"] == 0.2 and set(report["drifted"]) == {
        k for k, v in report["features"].items() if v["drifted"]
    }
    # the upcoming campaign's channel differs from the training campaign's: real drift, flagged
    assert "campaign_channel" in report["drifted"]


def test_dbt_source_declared_and_downstream_builds(
    scored, trained_x_learner, settings, ml_env
) -> None:
    from ml.dbt import DbtProject

    doc = yaml.safe_load((ROOT / "models" / "predictions" / "_prediction_sources.yml").read_text())
    source = next(s for s in doc["sources"] if s["name"] == "predictions")
    assert "xgboost_x_learner" in {t["name"] for t in source["tables"]}
    exposure = next(e for e in doc["exposures"] if e["name"] == "xgboost_x_learner")
    assert (
        exposure["type"] == "ml"
        and "source('predictions', 'xgboost_x_learner')" in exposure["depends_on"]
    )
    DbtProject(settings).invoke(["build", "--select", "source:predictions+", "--quiet"])
    with _con(ml_env) as con:
        n, top = con.execute(
            "select count(*), min(uplift_rank) from analytics_marts.campaign_targets where campaign_id = ?",
            [UPCOMING],
        ).fetchone()
    assert 0 < n <= 10_000 and top == 1


# -- bad input: one line, non-zero exit, previous predictions intact ---------------------------


@pytest.fixture
def before(scored, trained_x_learner, ml_env):
    return _slice(ml_env, trained_x_learner.run_id, UPCOMING)


def _intact(ml_env, trained_x_learner, before) -> None:
    assert _slice(ml_env, trained_x_learner.run_id, UPCOMING) == before


def test_unknown_run_id(before, trained_x_learner, ml_env) -> None:
    line = one_line_error(CliRunner().invoke(main, ["score", "--run-id", "0123456789abcdef"]))
    assert line == "Error: run '0123456789abcdef' not found in the tracking store"
    _intact(ml_env, trained_x_learner, before)


def test_unknown_model_alias(before, trained_x_learner, ml_env) -> None:
    line = one_line_error(
        CliRunner().invoke(main, ["score", "--model", "xgboost_x_learner@nosuchalias"])
    )
    assert line.startswith("Error: model 'xgboost_x_learner@nosuchalias' not found in the registry")
    _intact(ml_env, trained_x_learner, before)


def test_run_id_and_model_are_exclusive(ml_env) -> None:
    line = one_line_error(CliRunner().invoke(main, ["score", "--run-id", "x", "--model", "y"]))
    assert line == "Error: give exactly one of --run-id ID or --model NAME[@ALIAS]"


def test_context_param_of_wrong_type(before, trained_x_learner, ml_env) -> None:
    result = CliRunner().invoke(
        main,
        [
            "score",
            "--run-id",
            trained_x_learner.run_id,
            "--context-params",
            '{"campaign_id": 2026}',
        ],
    )
    assert (
        one_line_error(result)
        == "Error: --context-params: campaign_id: expected a string, got int 2026"
    )
    _intact(ml_env, trained_x_learner, before)


def test_empty_population(before, trained_x_learner, ml_env) -> None:
    result = CliRunner().invoke(
        main,
        [
            "score",
            "--run-id",
            trained_x_learner.run_id,
            "--context-params",
            '{"campaign_id": "cmp_1999_01"}',
        ],
    )
    line = one_line_error(result)
    assert line.endswith(
        "analytics_loaders.score_uplift: the scoring population is empty for campaign_id='cmp_1999_01'; nothing was written"
    )
    _intact(ml_env, trained_x_learner, before)
    assert _slice(ml_env, trained_x_learner.run_id, "cmp_1999_01")[0] == 0


def _copied_warehouse(ml_env, tmp_path, monkeypatch, sql: str) -> dict[str, str]:
    """A copy of the session warehouse (same file name: dbt views embed it) with `sql` applied."""
    dest = tmp_path / "copy" / "warehouse.duckdb"
    dest.parent.mkdir()
    _snapshot(ml_env, dest)
    with duckdb.connect(str(dest)) as con:
        con.execute(sql)
    monkeypatch.setenv("ML_DUCKDB_PATH", str(dest))
    return {**ml_env, "ML_DUCKDB_PATH": str(dest)}


@pytest.mark.parametrize(
    ("case", "sql", "message"),
    [
        (
            "missing-column",
            "alter table analytics_loaders.score_uplift drop column recency_days",
            r"score_uplift: column 'recency_days' is missing",
        ),
        (
            "type-changed",
            "create or replace table analytics_loaders.score_uplift as "
            "select * replace (cast(region as integer) as region) from analytics_loaders.score_uplift "
            "where false union all select * replace (1 as region) from analytics_loaders.score_uplift",
            r"score_uplift: column 'region' is int, expected string",
        ),
        (
            "duplicate-keys",
            "insert into analytics_loaders.score_uplift select * from analytics_loaders.score_uplift "
            "where campaign_id = 'cmp_2026_12' limit 3",
            r"score_uplift: key \(customer_id\) has 3 duplicate row\(s\) in this context; nothing was written",
        ),
        (
            "null-keys",
            "update analytics_loaders.score_uplift set customer_id = null where customer_id in "
            "(select customer_id from analytics_loaders.score_uplift where campaign_id = 'cmp_2026_12' limit 2)",
            r"score_uplift: key column 'customer_id' has 2 null value\(s\); nothing was written",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and " " not in v else "",
)
def test_population_breaks_contract(
    before, trained_x_learner, ml_env, tmp_path, monkeypatch, case, sql, message
) -> None:
    import re

    env = _copied_warehouse(ml_env, tmp_path, monkeypatch, sql)
    with duckdb.connect(env["ML_DUCKDB_PATH"]) as con:
        copy_before = con.execute(
            f"select count(*), max(scored_at) from {TABLE} where run_id = ? and campaign_id = ?",
            [trained_x_learner.run_id, UPCOMING],
        ).fetchone()
    line = one_line_error(CliRunner().invoke(main, ["score", "--run-id", trained_x_learner.run_id]))
    assert re.search(message, line), line
    with duckdb.connect(env["ML_DUCKDB_PATH"]) as con:
        assert (
            con.execute(
                f"select count(*), max(scored_at) from {TABLE} where run_id = ? and campaign_id = ?",
                [trained_x_learner.run_id, UPCOMING],
            ).fetchone()
            == copy_before
        )
    _intact(ml_env, trained_x_learner, before)


@pytest.mark.parametrize(
    ("order", "duplicates", "counted"),
    [("", 0, [False]), ("desc", 0, [False, True]), ("", 3, [False, True])],
    ids=["in-key-order", "descending", "in-order-with-duplicates"],
)
def test_keys_in_order_need_no_distinct_count(
    before, trained_x_learner, ml_env, tmp_path, monkeypatch, order, duplicates, counted
) -> None:
    """Keys streaming strictly increasing are unique without DuckDB counting distinct keys; in
    any other order (or with a repeat) the count runs after the stream, before the swap."""
    from ml.warehouse.duckdb.backend import DuckDBWarehouse

    population = "analytics_loaders.score_uplift"
    repeats = (
        f" union all (select * from {population} where campaign_id = '{UPCOMING}' limit {duplicates})"
        if duplicates
        else ""
    )
    env = _copied_warehouse(
        ml_env,
        tmp_path,
        monkeypatch,
        f"create or replace table {population} as select * from "
        f"(select * from {population}{repeats}) order by customer_id {order}",
    )
    asked: list[bool] = []
    key_stats = DuckDBWarehouse.key_stats

    def recorded(self, *args, distinct=True):
        asked.append(distinct)
        return key_stats(self, *args, distinct=distinct)

    monkeypatch.setattr(DuckDBWarehouse, "key_stats", recorded)
    result = CliRunner().invoke(main, ["score", "--run-id", trained_x_learner.run_id])
    assert asked == counted
    if duplicates:
        line = one_line_error(result)
        assert line.endswith(
            f"score_uplift: key (customer_id) has {duplicates} duplicate row(s) in this context; "
            "nothing was written"
        ), line
        with duckdb.connect(env["ML_DUCKDB_PATH"]) as con:  # only the live slice is left
            states = con.execute(
                "select state, count(*) from predictions._xgboost_x_learner__slices group by 1"
            ).fetchall()
        assert [s for s, _ in states] == ["live"]
    else:
        assert result.exit_code == 0, result.output
        assert _slice(env, trained_x_learner.run_id, UPCOMING)[0] == _population(env, UPCOMING)


def test_prediction_threads_while_streaming(trained_x_learner, settings, monkeypatch) -> None:
    """`predictions.threads` caps the model's threads while rows stream; unset, the cores less
    one (the one DuckDB reads and writes on)."""
    from ml.fastpredict import cpu_count
    from ml.model import ScoringModel

    limits: list[int] = []
    capped = ScoringModel.threads_at_most

    def recorded(self, limit):
        limits.append(limit)
        return capped(self, limit)

    monkeypatch.setattr(ScoringModel, "threads_at_most", recorded)
    three = settings.model_copy(
        update={"predictions": settings.predictions.model_copy(update={"threads": 3})}
    )
    ref = ModelRef(name="xgboost_x_learner", alias_or_version="champion")
    assert score(three, ref).rows == score(settings, ref).rows > 0
    assert limits == [3, max(1, cpu_count() - 1)]


def test_population_contract_error_type() -> None:
    assert ContractError.exit_code != 0


def test_context_param_missing(
    trained_x_learner, settings, ml_env, tmp_path, generated_sources
) -> None:
    from ml.train import train

    recipe = yaml.safe_load((ROOT / "recipes" / "conversion_xgb.yaml").read_text())
    recipe["name"] = "no_score_default"
    recipe["context"]["campaign_id"]["default"] = {"train": PAST}
    recipe["model"]["params"]["n_estimators"] = 20
    path = tmp_path / "no_score_default.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run = train(settings, path)
    line = one_line_error(CliRunner().invoke(main, ["score", "--run-id", run.run_id]))
    assert (
        line
        == "Error: --context-params: context param 'campaign_id' is required for score (recipe no_score_default has no score default)"
    )
    with _con(ml_env) as con:
        assert (
            con.execute(
                "select count(*) from information_schema.tables where table_name = 'no_score_default'"
            ).fetchone()[0]
            == 0
        )


def test_two_contexts_scored_concurrently_both_land(
    scored, trained_x_learner, ml_env, tmp_path
) -> None:
    # A copy this test process never opened, so only the two `ml score` processes contend for it.
    dest = tmp_path / "concurrent" / "warehouse.duckdb"
    dest.parent.mkdir()
    _snapshot(ml_env, dest)
    env = {**os.environ, **ml_env, "ML_DUCKDB_PATH": str(dest)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ml",
                "score",
                "--run-id",
                trained_x_learner.run_id,
                "--context-params",
                json.dumps({"campaign_id": c}),
                "--json",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in ("cmp_2026_03", "cmp_2026_06")
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    copy_env = {**ml_env, "ML_DUCKDB_PATH": str(dest)}
    for campaign in ("cmp_2026_03", "cmp_2026_06"):
        assert _slice(copy_env, trained_x_learner.run_id, campaign)[0] == _population(
            ml_env, campaign
        )
    assert _slice(copy_env, trained_x_learner.run_id, UPCOMING)[0] == scored.rows


def test_composite_key_with_the_context_column_scores_and_dbt_still_parses(
    ml_env, tmp_path, monkeypatch
) -> None:
    # (customer_id, campaign_id) keys the rows; campaign_id is also the context filter. The
    # generated sources once declared campaign_id twice, and dbt refused every later parse.
    # A copy of the project, warehouse and an MLflow store of its own: nothing shared changes.
    from ml.config import load_settings
    from ml.dbt import DbtProject
    from ml.train import train

    project = tmp_path / "project"
    for name in ("dbt_project.yml", "profiles.yml", "selectors.yml"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_bytes((ROOT / name).read_bytes())
    for folder in ("config", "models", "macros", "tests/dbt"):
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns(".*"))
    warehouse = tmp_path / "wh" / "warehouse.duckdb"
    warehouse.parent.mkdir()
    _snapshot(ml_env, warehouse)
    store = tmp_path / "mlruns"
    for name, value in {
        "ML_PROJECT_DIR": str(project),
        "ML_DUCKDB_PATH": str(warehouse),
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(store / "artifacts"),
    }.items():
        monkeypatch.setenv(name, value)
    recipe = yaml.safe_load((ROOT / "recipes" / "conversion_xgb.yaml").read_text())
    recipe["name"] = "per_campaign_keys"
    recipe["description"] = "Scores {{ no_such_macro() }} for the team."  # shown, not rendered
    recipe["data"]["entity_keys"] = ["customer_id", "campaign_id"]
    recipe["model"]["params"].update(n_estimators=5, max_depth=2)
    path = tmp_path / "per_campaign_keys.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    settings = load_settings(root=project)

    run = train(settings, path)
    result = score(settings, ModelRef(run_id=run.run_id))
    assert result.rows == _population(ml_env, UPCOMING) > 40_000

    with duckdb.connect(str(warehouse)) as con:
        keys = con.execute(
            "select count(*), count(distinct (customer_id, campaign_id)), min(campaign_id), "
            "max(campaign_id) from predictions.per_campaign_keys__current"
        ).fetchone()
    assert keys == (result.rows, result.rows, UPCOMING, UPCOMING)
    doc = yaml.safe_load(
        (project / "models" / "predictions" / "_prediction_sources.yml").read_text()
    )
    source = next(s for s in doc["sources"] if s["name"] == "predictions")
    tables = {t["name"]: t for t in source["tables"] if t["name"].startswith("per_campaign_keys")}
    assert set(tables) == {"per_campaign_keys", "per_campaign_keys__current"}
    for table in tables.values():
        names = [c["name"] for c in table["columns"]]
        assert names.count("campaign_id") == 1 and len(names) == len(set(names))
        unique = table["data_tests"][0]["unique_combination"]["arguments"]["columns"]
        assert unique[:2] == ["customer_id", "campaign_id"] and len(unique) == len(set(unique))

    DbtProject(settings).parse()  # dbt accepts the project ml score left
    validated = CliRunner().invoke(main, ["validate", "--recipe", str(path), "--json"])
    assert validated.exit_code == 0, validated.output
