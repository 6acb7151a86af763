"""Benchmark `ml train` against a bare script that fits the same X-learner on the same rows.

Copies the project (config, recipes, the dbt project) into a temp folder, so dbt's target folder
and partial parsing are its own, builds the demo warehouse there (`ml.demo.load_demo_data` +
`dbt build --select +train_uplift`) with an empty MLflow store, then, interleaved, `--repeat`
times:
  - `ml train --recipe recipes/xgboost_x_learner.yaml --json` as a subprocess (the real CLI:
    MLflow check, recipe/dbt check, read, contract checks, fit, evaluation and plots, dbt
    compile, artifacts, pyfunc model, registration);
  - this file with `--bare` as a subprocess: read the same rows with duckdb, one-hot the string
    columns with pandas, the same stratified 70/30 split, median imputation, build the same
    XLearner from the recipe's params with `ml.estimators.build`, fit, predict the test rows.
    No tracking, no checks, no plots.
Both are timed wall-clock from process start to exit, so both pay Python and library imports.
Goal: ml train <= 1.3 x bare + 5 s (medians). Also reported: what the bootstrap intervals and the
policy value add to the evaluation (process CPU seconds on as many rows as the test split,
bench/evaluate_bench.py; goal <= 2 s).

Usage: .venv/bin/python bench/train_bench.py [--repeat 3] [--customers 50000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What `ml train` and the dbt build of +train_uplift read: all tracked, so a fresh clone has them.
# The raw tables come from `ml.demo.load_demo_data`, not from dbt seeds.
PROJECT = [
    "config",
    "recipes",
    "models",
    "macros",
    "tests/dbt",
    "dbt_project.yml",
    "profiles.yml",
]
# The `ml` console script of the environment running this file, wherever that lives.
ML = Path(sys.executable).parent / "ml"
RECIPE = "recipes/xgboost_x_learner.yaml"
CAMPAIGN = "cmp_2026_09"  # the recipe's train default
# The recipe's default feature list: score_uplift's number/bool/string columns minus keys and
# context (what `ml validate --json` lists).
STRINGS = ["campaign_channel", "gender", "region", "preferred_channel"]
NUMBERS = [
    "age",
    "channel_match",
    "tenure_days",
    "recency_days",
    "frequency_30d",
    "frequency_90d",
    "frequency_365d",
    "monetary_30d",
    "monetary_90d",
    "monetary_365d",
    "avg_order_value_365d",
    "prior_campaigns_treated",
    "prior_campaigns_converted",
]


def bare() -> None:
    """The baseline: the same rows and the same estimator, nothing else."""
    import duckdb
    import numpy as np
    import pandas as pd
    import yaml
    from sklearn.model_selection import train_test_split

    from ml.estimators import build

    start = time.perf_counter()
    recipe = yaml.safe_load(Path(RECIPE).read_text())
    with duckdb.connect(os.environ["ML_DUCKDB_PATH"], read_only=True) as con:
        frame = con.execute(
            f"select treatment, converted, {', '.join(STRINGS + NUMBERS)} "
            "from analytics_loaders.train_uplift where campaign_id = ?",
            [CAMPAIGN],
        ).df()
    X = pd.get_dummies(frame[STRINGS + NUMBERS], columns=STRINGS, dtype=float)
    X = X.to_numpy(dtype=np.float64)
    y = frame["converted"].to_numpy(dtype=np.float64)
    t = frame["treatment"].to_numpy(dtype=np.int64)
    train, test = train_test_split(
        np.arange(len(y)), test_size=0.3, random_state=recipe["seed"], stratify=t * 2 + y
    )
    # median imputation fitted on the training rows, the recipe's default (EconML refuses NaN)
    medians = np.nanmedian(X[train], axis=0)
    X = np.where(np.isnan(X), medians, X)
    estimator = build(recipe["model"]["class_path"], recipe["model"]["params"], recipe["seed"])
    estimator.fit(y[train], t[train], X=X[train])
    scores = estimator.effect(X[test])
    print(
        json.dumps(
            {
                "rows": len(y),
                "mean_score": float(np.mean(scores)),
                "work_s": time.perf_counter() - start,
            }
        )
    )


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, dict, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return wall, json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def _steps(stderr: str) -> dict[str, float]:
    """`ml train`'s progress lines ('  fitting XLearner on 19,962 rows ... 0.6s') as a dict."""
    return {
        name: float(sec) for name, sec in re.findall(r"^  (.+?) \.\.\. ([\d.]+)s$", stderr, re.M)
    }


def _evaluation_cpu(test_rows: int) -> dict[str, float | bool]:
    """What the bootstrap intervals and the policy value add to the evaluation, in process CPU
    seconds on as many held-out rows (bench/evaluate_bench.py; goal: at most 2 s)."""
    import evaluate_bench  # bench/, beside this file

    parts = evaluate_bench.measure(test_rows, 200, 3)
    added = parts["evaluate(), no plots"] - parts["point metrics"]
    return {
        "intervals_and_policy": round(added, 3),
        "with_all_plots": parts["evaluate(), all plots incl. net value"],
        "goal_2s_met": added <= 2.0,
    }


def setup(customers: int) -> None:
    """Demo data + dbt build of +train_uplift, and an empty MLflow store, per the environment.

    Runs in its own process: dbt-duckdb keeps the file open until its process exits, and the
    timed runs must not queue behind it.
    """
    from ml import tracking
    from ml.config import load_settings
    from ml.dbt import DbtProject
    from ml.demo import load_demo_data

    settings = load_settings()  # the copy, through ML_PROJECT_DIR
    load_demo_data(settings, n_customers=customers)
    DbtProject(settings).build("+train_uplift")
    # create the store now: every timed run finds it ready
    tracking.configure(settings, create=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bare", action="store_true", help="run the baseline only (internal)")
    parser.add_argument("--setup", action="store_true", help="build the warehouse (internal)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument("--customers", type=int, default=50_000, help="demo size (default 50k)")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it")
    args = parser.parse_args()
    if args.bare:
        bare()
        return
    if args.setup:
        setup(args.customers)
        return

    base = args.keep or Path(tempfile.mkdtemp(prefix="ml-train-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    for name in PROJECT:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, base / name, dirs_exist_ok=True)
        else:
            shutil.copy(ROOT / name, base / name)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ML_", "MLFLOW_", "BQ_")) and k not in {"APP_ENV", "DBT_TARGET"}
    }
    env |= {
        "ML_PROJECT_DIR": str(base),
        "ML_DUCKDB_PATH": str(base / "warehouse.duckdb"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(base / "artifacts"),
    }
    print(f"building the demo warehouse ({args.customers:,} customers) in {base}", file=sys.stderr)
    this = [sys.executable, str(Path(__file__).resolve())]
    subprocess.run(
        [*this, "--setup", "--customers", str(args.customers)], cwd=base, env=env, check=True
    )

    ml_cmd = [str(ML), "train", "--recipe", RECIPE, "--json"]
    bare_cmd = [*this, "--bare"]
    ml_walls, bare_walls, steps, rows = [], [], [], None
    for i in range(args.repeat):
        wall, result, stderr = _timed(ml_cmd, base, env)
        ml_walls.append(wall)
        rows = result["rows"]
        steps.append(_steps(stderr))
        print(f"run {i + 1}: ml train {wall:.1f}s  {json.dumps(steps[-1])}", file=sys.stderr)
        wall, result, _ = _timed(bare_cmd, base, env)
        bare_walls.append(wall)
        assert result["rows"] == rows["population"], (result, rows)
        print(f"run {i + 1}: bare     {wall:.1f}s (work {result['work_s']:.1f}s)", file=sys.stderr)

    ml_s, bare_s = statistics.median(ml_walls), statistics.median(bare_walls)
    summary = {
        "rows": rows,
        "ml_train_s": [round(w, 2) for w in ml_walls],
        "bare_s": [round(w, 2) for w in bare_walls],
        "ml_train_median_s": round(ml_s, 2),
        "bare_median_s": round(bare_s, 2),
        "ratio": round(ml_s / bare_s, 2),
        "overhead_s": round(ml_s - bare_s, 2),
        "budget_s": round(1.3 * bare_s + 5, 2),
        "goal_met": ml_s <= 1.3 * bare_s + 5,
        # the fastest run of each: the least disturbed by other load on the machine
        "ml_train_min_s": round(min(ml_walls), 2),
        "bare_min_s": round(min(bare_walls), 2),
        "goal_met_on_min": min(ml_walls) <= 1.3 * min(bare_walls) + 5,
        "ml_train_step_median_s": {
            name: round(statistics.median(s.get(name, 0.0) for s in steps), 2) for name in steps[0]
        },
        "load_average": os.getloadavg()[0],
        "evaluation_cpu_s": _evaluation_cpu(rows["test"]),
    }
    print(json.dumps(summary, indent=2))
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
