"""Budget- and cost-aware targeting on the demo: `campaign_targets` (customers by expected
incremental net value, cut at the campaign's budget) and `campaign_plan` (spend, reach and the
expected incremental conversions, revenue and net value with intervals from the held-out
evaluation curve, next to random targeting of the same spend), built by dbt on a copy of the
scored session warehouse; and a campaign without cost or budget failing the build by name.

The curve is `predictions.xgboost_x_learner__policy`, which `ml score` writes. Where the scored
warehouse has none yet, the test plants a synthetic one for the champion's run (its shape from
the planted effects of the training campaign) and checks the plumbing only; the coverage of the
true effect is then skipped, saying so. Likewise the project is a copy of the real one, with the
policy table declared in its sources file when `ml score` has not declared it yet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import yaml
from warehouse_snapshots import fresh_copy  # tests/integration/warehouse_snapshots.py

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the environment running the tests: its dbt
UPCOMING = "cmp_2026_12"
TRAINED_ON = "cmp_2026_09"
SOURCES = Path("models") / "predictions" / "_prediction_sources.yml"
POLICY = "xgboost_x_learner__policy"
CURVE = (
    "incremental_per_customer",
    "incremental_ci_low",
    "incremental_ci_high",
    "random_per_customer",
    "random_ci_low",
    "random_ci_high",
)
MARTS = "analytics_marts"


# -- the bench: a project copy, a warehouse copy, dbt in-process -------------------------------


def _project_copy(dest: Path) -> Path:
    """The dbt project's files, with the policy table declared if `ml score` has not yet."""
    dest.mkdir(parents=True)
    for name in ("dbt_project.yml", "profiles.yml", "selectors.yml"):
        shutil.copy(ROOT / name, dest / name)
    for folder in ("models", "macros", "tests/dbt"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns(".*.lock"))
    path = dest / SOURCES
    doc = yaml.safe_load(path.read_text())
    source = next(s for s in doc["sources"] if s["name"] == "predictions")
    if POLICY not in {t["name"] for t in source["tables"]}:
        source["tables"].append(
            {
                "name": POLICY,
                "description": "Held-out policy curve of xgboost_x_learner (planted by the test).",
                "columns": [{"name": c} for c in ("run_id", "share", *CURVE, "n_holdout")],
            }
        )
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def _dbt(project: Path, warehouse: Path, args: list[str]) -> tuple[bool, dict[str, str]]:
    """One dbt command on `project` against `warehouse`, in its own process (dbt-duckdb keeps
    the file open in the process that ran it): success, and status per node name."""
    target = project / "target"
    (target / "run_results.json").unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ML_", "DBT_"))}
    env["ML_DUCKDB_PATH"] = str(warehouse)
    done = subprocess.run(
        [
            str(BIN / "dbt"),
            *args,
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
            "--target",
            "dev",
            "--target-path",
            str(target),
            "--log-path",
            str(project / "logs"),
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        results = json.loads((target / "run_results.json").read_text())["results"]
    except FileNotFoundError:
        raise AssertionError(f"dbt {args[0]} ran nothing: {done.stdout[-3000:]}") from None
    # unique ids are <type>.<project>.<name>[.<hash>]
    return done.returncode == 0, {r["unique_id"].split(".")[2]: r["status"] for r in results}


def _has_policy(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    exists = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'predictions' and table_name = ?",
        [POLICY],
    ).fetchone()[0]
    if not exists:
        return False
    return (
        con.execute(
            f"select count(*) from predictions.{POLICY} where run_id = ?", [run_id]
        ).fetchone()[0]
        > 0
    )


def _plant_policy(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """A plausible curve for `run_id` on the 0.01 grid: the planted effects of the training
    campaign, best first, as incremental conversions per customer, with a +-25% band; random
    targeting gets the mean effect times the share, with the same relative band."""
    name, version = con.execute(
        "select any_value(model_name), any_value(model_version) "
        "from predictions.xgboost_x_learner__current where run_id = ?",
        [run_id],
    ).fetchone()
    effects = np.array(
        [
            r[0]
            for r in con.execute(
                "select true_uplift from raw.true_effects where campaign_id = ? "
                "order by true_uplift desc, customer_id",
                [TRAINED_ON],
            ).fetchall()
        ]
    )
    shares = np.round(np.arange(1, 101) / 100, 2)
    top = np.ceil(shares * effects.size).astype(int)
    gain = np.cumsum(effects)[top - 1] / effects.size
    random = shares * effects.mean()
    n = shares.size
    curve = pa.table(
        {
            "run_id": pa.array([run_id] * n, pa.string()),
            "model_name": pa.array([name] * n, pa.string()),
            "model_version": pa.array([version] * n, pa.string()),
            "share": pa.array(shares, pa.float64()),
            "incremental_per_customer": pa.array(gain, pa.float64()),
            "incremental_ci_low": pa.array(gain - 0.25 * np.abs(gain), pa.float64()),
            "incremental_ci_high": pa.array(gain + 0.25 * np.abs(gain), pa.float64()),
            "random_per_customer": pa.array(random, pa.float64()),
            "random_ci_low": pa.array(random - 0.25 * np.abs(random), pa.float64()),
            "random_ci_high": pa.array(random + 0.25 * np.abs(random), pa.float64()),
            "n_holdout": pa.array([int(effects.size * 0.3)] * n, pa.int64()),
        }
    )
    con.register("planted_curve", curve)
    con.execute(f"create or replace table predictions.{POLICY} as select * from planted_curve")
    con.unregister("planted_curve")


def _warehouse(pristine: Path, folder: Path, sql: str | None = None) -> tuple[Path, str, bool]:
    """A fresh copy of the scored warehouse with a curve for the run that scored the upcoming
    campaign (and `sql` applied): its path, that run, and whether the curve is `ml score`'s."""
    path = fresh_copy(pristine, folder)
    with duckdb.connect(str(path)) as con:
        (run_id,) = con.execute(
            "select distinct run_id from predictions.xgboost_x_learner__current "
            "where campaign_id = ?",
            [UPCOMING],
        ).fetchone()
        real = _has_policy(con, run_id)
        if not real:
            _plant_policy(con, run_id)
        if sql:
            con.execute(sql)
    return path, run_id, real


def _rows(path: Path, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    with duckdb.connect(str(path)) as con:
        cursor = con.execute(sql, params or [])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@pytest.fixture(scope="module")
def planned(pristine_warehouse, tmp_path_factory) -> dict[str, Any]:
    """campaign_targets and campaign_plan built, with their tests, on a copy of the scored
    warehouse."""
    base = tmp_path_factory.mktemp("plan")
    warehouse, run_id, real = _warehouse(pristine_warehouse, base / "wh")
    project = _project_copy(base / "project")
    ok, statuses = _dbt(project, warehouse, ["build", "--select", "campaign_targets campaign_plan"])
    assert ok, {k: v for k, v in statuses.items() if v not in {"success", "pass"}}
    assert statuses["campaign_plan"] == "success"
    assert statuses["assert_campaign_targets_within_budget"] == "pass"
    assert statuses["assert_campaign_plan_within_budget"] == "pass"
    return {"warehouse": warehouse, "run_id": run_id, "real_curve": real}


# -- campaign_targets ----------------------------------------------------------------------------


def test_targets_stay_within_budget_and_are_worth_contacting(planned) -> None:
    rows = _rows(
        planned["warehouse"],
        f"""
        select t.campaign_id, count(*) as n, min(t.expected_net_value) as worst,
               sum(t.contact_cost) as spend, max(t.cumulative_spend) as last_cumulative,
               any_value(c.budget) as budget, any_value(c.cost_per_contact) as cost,
               max(abs(t.cumulative_spend - t.uplift_rank * c.cost_per_contact)) as drift,
               max(abs(t.expected_net_value
                       - (t.uplift * c.value_per_conversion - c.cost_per_contact))) as net_error,
               count(distinct t.contact_cost) as costs, max(t.uplift_rank) as last_rank
        from {MARTS}.campaign_targets t
        join analytics_staging.stg_raw__campaigns c using (campaign_id)
        group by t.campaign_id
        """,
    )
    assert [r["campaign_id"] for r in rows] == [UPCOMING]
    (row,) = rows
    assert row["n"] > 0 and row["worst"] > 0
    assert row["spend"] <= row["budget"] + 1e-9 and row["last_cumulative"] <= row["budget"]
    assert row["costs"] == 1 and row["cost"] == 0.05  # an email: the demo's price for the channel
    assert row["last_rank"] == row["n"] and row["drift"] < 1e-9 and row["net_error"] < 1e-12


def test_targets_are_the_best_prefix_by_net_value_cut_at_the_budget(planned) -> None:
    """Every customer ranked above the last one taken is taken, and the first one left out is
    either not worth contacting or would overspend the budget; on the demo the budget binds."""
    ranked = _rows(
        planned["warehouse"],
        f"""
        with scored as (
            select s.customer_id,
                   s.score * c.value_per_conversion - c.cost_per_contact as net_value,
                   c.cost_per_contact as cost, c.budget
            from predictions.xgboost_x_learner__current s
            join analytics_staging.stg_raw__campaigns c using (campaign_id)
            where s.campaign_id = ?
        )
        select scored.*, t.customer_id is not null as taken
        from scored
        left join {MARTS}.campaign_targets t
            on t.campaign_id = ? and t.customer_id = scored.customer_id
        order by net_value desc, customer_id
        """,
        [UPCOMING, UPCOMING],
    )
    taken = np.array([r["taken"] for r in ranked])
    n = int(taken.sum())
    assert 0 < n < len(ranked)
    assert n > 0 and taken[:n].all() and not taken[n:].any(), "targets are not a prefix"
    first_left = ranked[n]
    cost, budget = first_left["cost"], first_left["budget"]
    assert first_left["net_value"] <= 0 or round((n + 1) * cost, 9) > budget
    # the demo's budget (12% of customers) is the binding limit, not the net value
    assert first_left["net_value"] > 0 and round(n * cost, 9) <= budget


# -- campaign_plan -------------------------------------------------------------------------------


def _plan(planned) -> dict[str, Any]:
    rows = _rows(planned["warehouse"], f"select * from {MARTS}.campaign_plan")
    assert [(r["campaign_id"], r["run_id"]) for r in rows] == [(UPCOMING, planned["run_id"])]
    return rows[0]


def test_plan_counts_what_the_targets_cost(planned) -> None:
    plan = _plan(planned)
    (targets,) = _rows(
        planned["warehouse"],
        f"select count(*) as n, sum(contact_cost) as spend from {MARTS}.campaign_targets "
        "where campaign_id = ?",
        [UPCOMING],
    )
    (scored,) = _rows(
        planned["warehouse"],
        "select count(*) as n, any_value(model_name) as model_name, "
        "any_value(model_version) as model_version "
        "from predictions.xgboost_x_learner__current where campaign_id = ?",
        [UPCOMING],
    )
    (campaign,) = _rows(
        planned["warehouse"],
        "select budget, cost_per_contact, value_per_conversion "
        "from analytics_staging.stg_raw__campaigns where campaign_id = ?",
        [UPCOMING],
    )
    assert plan["customers_targeted"] == targets["n"] > 0
    assert plan["spend"] == pytest.approx(targets["spend"], abs=1e-9)
    assert plan["spend"] <= plan["budget"] == campaign["budget"]
    assert plan["population"] == scored["n"]
    assert plan["share_targeted"] == pytest.approx(targets["n"] / scored["n"])
    assert (plan["model_name"], plan["model_version"]) == (
        scored["model_name"],
        scored["model_version"],
    )
    assert plan["cost_per_contact"] == campaign["cost_per_contact"]
    assert plan["value_per_conversion"] == campaign["value_per_conversion"]


def test_plan_figures_are_the_held_out_curve_at_the_share_targeted(planned) -> None:
    """Linear interpolation between the grid points either side of the share targeted (from
    zero at zero), times the population; revenue times the value; net of the spend."""
    plan = _plan(planned)
    curve = _rows(
        planned["warehouse"],
        f"select * from predictions.{POLICY} where run_id = ? order by share",
        [planned["run_id"]],
    )
    shares = [0.0, *(r["share"] for r in curve)]

    def at_share(column: str) -> float:
        values = [0.0, *(r[column] for r in curve)]
        return float(np.interp(plan["share_targeted"], shares, values)) * plan["population"]

    value, spend = plan["value_per_conversion"], plan["spend"]
    for figure, prefix in (("expected", "incremental"), ("random", "random")):
        for suffix, column in (
            ("", f"{prefix}_per_customer"),
            ("_ci_low", f"{prefix}_ci_low"),
            ("_ci_high", f"{prefix}_ci_high"),
        ):
            conversions = at_share(column)
            assert plan[f"{figure}_incremental_conversions{suffix}"] == pytest.approx(conversions)
            revenue = conversions * value
            assert plan[f"{figure}_incremental_revenue{suffix}"] == pytest.approx(revenue)
            assert plan[f"{figure}_net_value{suffix}"] == pytest.approx(revenue - spend)
    assert (
        plan["expected_incremental_conversions_ci_low"]
        <= plan["expected_incremental_conversions"]
        <= plan["expected_incremental_conversions_ci_high"]
    )
    assert plan["n_holdout"] == curve[0]["n_holdout"]


def test_plan_interval_covers_the_true_incremental_conversions(planned) -> None:
    """The quality bar: the interval of the expected incremental conversions covers the sum of
    the planted effects of the customers targeted. Meaningful only with `ml score`'s own curve,
    and only where raw.true_effects has the targeted customers' effects."""
    assert planned["real_curve"], "ml score wrote no held-out policy curve for the champion"
    plan = _plan(planned)
    (truth,) = _rows(
        planned["warehouse"],
        f"""
        select count(e.customer_id) as known, count(*) as targeted,
               sum(e.true_uplift) as true_incremental_conversions
        from {MARTS}.campaign_targets t
        left join raw.true_effects e using (campaign_id, customer_id)
        where t.campaign_id = ?
        """,
        [UPCOMING],
    )
    assert truth["known"] == truth["targeted"], truth  # the demo plants the upcoming effects
    assert (
        plan["expected_incremental_conversions_ci_low"]
        <= truth["true_incremental_conversions"]
        <= plan["expected_incremental_conversions_ci_high"]
    ), (plan, truth)


# -- bad input: a campaign without cost, value or budget --------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "staging_test", "plan_test"),
    [
        (
            "cost_per_contact",
            "null",
            "not_null_stg_raw__campaigns_cost_per_contact",
            "not_null_campaign_plan_cost_per_contact",
        ),
        ("budget", "null", "not_null_stg_raw__campaigns_budget", "not_null_campaign_plan_budget"),
        (
            "value_per_conversion",
            "null",
            "not_null_stg_raw__campaigns_value_per_conversion",
            "not_null_campaign_plan_value_per_conversion",
        ),
        ("cost_per_contact", "-0.05", "at_least_stg_raw__campaigns_cost_per_contact__0", None),
        ("budget", "0", "budget_positive_for_upcoming_campaigns", None),
    ],
)
def test_campaign_without_cost_or_budget_fails_the_build_by_name(
    pristine_warehouse, tmp_path, column, value, staging_test, plan_test
) -> None:
    """Never a silent zero: the staging tests fail naming the column (and what is downstream of
    it is skipped); built on their own, the targets' and plan's tests fail naming it too."""
    warehouse, _, _ = _warehouse(
        pristine_warehouse,
        tmp_path / "wh",
        f"update raw.campaigns set {column} = {value} where campaign_id = '{UPCOMING}'",
    )
    project = _project_copy(tmp_path / "project")

    ok, statuses = _dbt(
        project,
        warehouse,
        ["build", "--select", "stg_raw__campaigns+", "--exclude", "customer_features+"],
    )
    failed = {name for name, status in statuses.items() if status in {"fail", "error"}}
    assert not ok and staging_test in failed, statuses
    assert statuses.get("campaign_plan") == "skipped"

    if plan_test is not None:
        ok, statuses = _dbt(project, warehouse, ["build", "--select", "source:predictions+"])
        failed = {name for name, status in statuses.items() if status in {"fail", "error"}}
        assert not ok and plan_test in failed, statuses
