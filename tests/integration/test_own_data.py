"""Bring your own data (README), for real: in a copy of the project with the demo switched off
and no demo table anywhere, a CSV seed -> staging -> a loader with an enforced contract -> a
recipe without context for a money outcome -> `ml validate` -> `dbt build` -> `ml train` ->
`ml score` -> a model of the user's on the current scores, each step the real command."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from serving import process_env  # tests/integration/serving.py

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the environment running the tests: its dbt and ml
ROWS = 2_000
RECIPE = "free_shipping_uplift"
DEMO_RELATIONS = {
    "stg_raw__customers",
    "stg_raw__orders",
    "stg_raw__campaigns",
    "stg_raw__campaign_assignments",
    "campaign_outcomes",
    "customer_features",
    "train_uplift",
    "score_uplift",
    "campaign_targets",
}

# The user's files, as the README's "Bring your own data" writes them.
STAGING_SQL = """\
with source as (

    select * from {{ ref('shop_members') }}

),

renamed as (

    select
        cast(member_id as int64) as member_id,
        cast(plan as string) as plan,
        cast(tenure_months as int64) as tenure_months,
        cast(visits_90d as int64) as visits_90d,
        cast(spend_90d as {{ ml_type_float() }}) as spend_90d,
        -- `order` is an SQL keyword: quoted for the warehouse, and renamed
        cast({{ adapter.quote('order') }} as int64) as orders_365d,
        cast(free_shipping as int64) as free_shipping,
        cast(revenue_30d as {{ ml_type_float() }}) as revenue_30d

    from source

)

select * from renamed
"""

SEED_YML = """\
version: 2

seeds:
  - name: shop_members
    description: The free-shipping experiment, exported from the shop as a CSV.
    columns:
      - name: member_id
        data_tests: [unique, not_null]
      - name: order
        quote: true
        description: Orders in the last 365 days (named with an SQL keyword).
        data_tests: [not_null]
"""

STAGING_YML = """\
version: 2

models:
  - name: stg_shop__members
    description: Shop members in the free-shipping experiment, one row each, renamed and typed.
    columns:
      - name: member_id
        data_tests: [unique, not_null]
      - name: orders_365d
        description: Orders in the last 365 days (the export's `order` column).
"""

LOADER_SQL = """\
with members as (

    select * from {{ ref('stg_shop__members') }}

),

final as (

    select
        member_id,
        plan,
        tenure_months,
        visits_90d,
        spend_90d,
        orders_365d,
        free_shipping as treatment,
        revenue_30d

    from members

)

select * from final
"""

FLOAT = "\"{{ 'float64' if target.type == 'bigquery' else 'double' }}\""
LOADER_YML = f"""\
version: 2

models:
  - name: free_shipping_members
    description: Members of the free-shipping experiment, their arm and 30-day revenue.
    config:
      contract: {{enforced: true}}
    columns:
      - name: member_id
        data_type: int64
        data_tests: [unique, not_null]
      - {{name: plan, data_type: string}}
      - {{name: tenure_months, data_type: int64}}
      - {{name: visits_90d, data_type: int64}}
      - {{name: spend_90d, data_type: {FLOAT}}}
      - {{name: orders_365d, data_type: int64}}
      - name: treatment
        data_type: int64
        data_tests:
          - accepted_values:
              arguments: {{values: [0, 1], quote: false}}
      - name: revenue_30d
        data_type: {FLOAT}
        data_tests: [not_null]
"""

RECIPE_YAML = f"""\
name: {RECIPE}
description: Revenue uplift of free shipping (T-learner, XGBoost regressors).
data:
  train_model: free_shipping_members
  score_model: free_shipping_members
  entity_keys: [member_id]
  target: revenue_30d
  treatment: treatment
model:
  class_path: econml.metalearners.TLearner
  params:
    models:
      class_path: xgboost.XGBRegressor
      params: {{objective: "reg:squarederror", n_estimators: 100, max_depth: 3, learning_rate: 0.1}}
evaluation:
  plots: false  # the README's recipe keeps them; they only cost time here
"""

TARGETS_SQL = f"""\
with current_scores as (

    select * from {{{{ source('predictions', '{RECIPE}__current') }}}}

),

members as (

    select * from {{{{ ref('stg_shop__members') }}}}

),

ranked as (

    select
        current_scores.member_id,
        members.plan,
        current_scores.score as revenue_uplift,
        row_number() over (
            order by current_scores.score desc, current_scores.member_id
        ) as uplift_rank

    from current_scores
    inner join members
        on current_scores.member_id = members.member_id

)

select * from ranked
where revenue_uplift > 0
"""

TARGETS_YML = """\
version: 2

models:
  - name: free_shipping_targets
    description: Members to offer free shipping, by estimated revenue uplift, positive only.
    columns:
      - name: member_id
        data_tests: [unique, not_null]
      - name: uplift_rank
        data_tests: [unique, not_null]
"""


def _experiment(path: Path, n: int = ROWS, seed: int = 11) -> None:
    """A randomized 50/50 experiment whose effect on revenue depends on the plan and tenure:
    it helps pro and plus members and costs most basic ones."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "plus", "pro"], size=n, p=[0.5, 0.3, 0.2])
    tenure = rng.integers(1, 61, size=n)
    visits = rng.poisson(6, size=n)
    spend = np.round(rng.gamma(2.0, 40.0, size=n), 2)
    orders = rng.poisson(4, size=n)
    treated = rng.integers(0, 2, size=n)
    effect = np.select([plan == "pro", plan == "plus"], [12.0, 6.0], -6.0) + 0.1 * tenure
    revenue = 10 + 0.15 * spend + 1.5 * visits + effect * treated + rng.normal(0, 8, size=n)
    revenue = np.round(np.clip(revenue, 0, None), 2)
    header = ["member_id", "plan", "tenure_months", "visits_90d", "spend_90d", "order"]
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*header, "free_shipping", "revenue_30d"])
        for i in range(n):
            out.writerow(
                [1001 + i, plan[i], tenure[i], visits[i], spend[i], orders[i]]
                + [treated[i], revenue[i]]
            )


def _copy_project(dest: Path) -> None:
    """The tracked files as they are in the working tree: what a clone of the project holds."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs the project's git checkout to copy its tracked files")
    for name in filter(None, listed.decode().split("\0")):
        src = ROOT / name
        if src.is_file():  # not a file deleted in the working tree
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _demo_off(project: Path) -> None:
    """What the README says: the demo's switch in dbt_project.yml, set to false."""
    path = project / "dbt_project.yml"
    text = path.read_text()
    switch = "{{ var('ml_demo', true) }}"
    assert text.count(switch) == 1, "dbt_project.yml: the demo switch moved"
    path.write_text(text.replace(switch, "{{ var('ml_demo', false) }}"))


def _write(project: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)


def _run(cmd: list[str], project: Path, env: dict[str, str]) -> str:
    out = subprocess.run(
        cmd, cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, (
        f"{' '.join(cmd)} exited {out.returncode}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    )
    return out.stdout


def _built(project: Path) -> dict[str, str]:
    """unique_id -> status of the models and seeds the last dbt command ran."""
    results = json.loads((project / "target" / "run_results.json").read_text())["results"]
    return {
        r["unique_id"]: r["status"]
        for r in results
        if r["unique_id"].split(".")[0] in {"model", "seed"}
    }


@pytest.mark.slow
def test_own_data_from_a_seed_to_a_model_on_the_current_scores(tmp_path: Path) -> None:
    project = tmp_path / "project"
    _copy_project(project)
    _demo_off(project)
    (project / "seeds").mkdir(exist_ok=True)  # the README: create seeds/
    _experiment(project / "seeds" / "shop_members.csv")
    _write(
        project,
        {
            "seeds/_shop__seeds.yml": SEED_YML,
            "models/staging/stg_shop__members.sql": STAGING_SQL,
            "models/staging/_stg_shop__models.yml": STAGING_YML,
            "models/loaders/free_shipping_members.sql": LOADER_SQL,
            "models/loaders/_free_shipping__models.yml": LOADER_YML,
            f"recipes/{RECIPE}.yaml": RECIPE_YAML,
        },
    )
    warehouse = tmp_path / "warehouse.duckdb"
    env = process_env(
        {
            "ML_PROJECT_DIR": str(project),
            "ML_DUCKDB_PATH": str(warehouse),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "ML_ARTIFACT_LOCATION": str(tmp_path / "artifacts"),
        }
    )
    env = {k: v for k, v in env.items() if not k.startswith("DBT_")}  # dbt's own overrides
    dbt, ml = str(BIN / "dbt"), str(BIN / "ml")

    _run([dbt, "seed"], project, env)
    _run([ml, "validate", "--recipe", f"recipes/{RECIPE}.yaml"], project, env)

    # the plain default build: the user's models, not the demo, not what reads the scores
    _run([dbt, "build"], project, env)
    built = _built(project)
    assert set(built) == {
        "seed.mmp.shop_members",
        "model.mmp.stg_shop__members",
        "model.mmp.free_shipping_members",
    }, built
    assert set(built.values()) == {"success"}

    trained = json.loads(
        _run([ml, "train", "--recipe", f"recipes/{RECIPE}.yaml", "--json"], project, env)
        .strip()
        .splitlines()[-1]
    )
    assert trained["rows"]["population"] == ROWS
    point = {name for name in trained["metrics"] if not name.endswith(("_ci_low", "_ci_high"))}
    assert {
        "qini_coefficient",
        "auuc_normalized",
        "uplift_at_10",
        "uplift_at_20",
        "uplift_at_30",
        "ate_estimated",
        "ate_observed",
        "policy_gain_at_30",
        "treat_all_gain",
    } <= point
    for name in point:  # every uplift metric carries its interval
        assert {f"{name}_ci_low", f"{name}_ci_high"} <= set(trained["metrics"]), name
    # the planted effect averages about +5 per member; both estimates are in currency units
    assert trained["metrics"]["ate_observed"] > 0
    assert trained["metrics"]["ate_estimated"] > 0

    scored = json.loads(
        _run([ml, "score", "--model", RECIPE, "--json"], project, env).strip().splitlines()[-1]
    )
    assert scored["rows"] == ROWS

    declared = yaml.safe_load(
        (project / "models" / "predictions" / "_prediction_sources.yml").read_text()
    )
    tables = {
        t["name"] for s in declared["sources"] if s["name"] == "predictions" for t in s["tables"]
    }
    assert {RECIPE, f"{RECIPE}__current"} <= tables
    assert RECIPE in {e["name"] for e in declared["exposures"]}

    # a model on the scores can be written once `ml score` has declared them
    _write(
        project,
        {
            "models/predictions/free_shipping_targets.sql": TARGETS_SQL,
            "models/predictions/_free_shipping__models.yml": TARGETS_YML,
        },
    )

    _run(
        [
            dbt,
            "build",
            "--select",
            f"source:predictions.{RECIPE}+",
            f"source:predictions.{RECIPE}__current+",
        ],
        project,
        env,
    )
    assert _built(project) == {"model.mmp.free_shipping_targets": "success"}

    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        relations = con.execute("select table_schema, table_name from information_schema.tables")
        schemas, names = map(set, zip(*relations.fetchall(), strict=True))
        assert "raw" not in schemas and not names & DEMO_RELATIONS  # no demo data at all
        for table in (RECIPE, f"{RECIPE}__current"):
            rows, keys = con.execute(
                f"select count(*), count(distinct member_id) from predictions.{table}"
            ).fetchone()
            assert rows == keys == ROWS, table
        positive = con.execute(
            f"select count(*) from predictions.{RECIPE}__current where score > 0"
        ).fetchone()[0]
        targets = con.execute(
            "select count(*), count(distinct member_id) from analytics_marts.free_shipping_targets"
        ).fetchone()
    assert 0 < positive < ROWS  # the effect is negative for most basic members
    assert targets == (positive, positive)
