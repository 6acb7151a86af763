"""Benchmark one `ml tune` trial against bare fits of the same parameters on the same folds.

Builds the demo warehouse in a temp folder (as bench/train_bench.py does: demo data, `dbt build
--select +train_uplift`, an empty MLflow store), or uses `--warehouse` (a built DuckDB file),
then, in one process, prepares what `ml tune` prepares once (the recipe checked, the training
split read and cut into folds, each fold's preprocessing fitted) for the demo X-learner recipe
with a tuning section over three XGBoost parameters, and interleaves `--trials` times:
  - one trial through `ml.tuning` exactly as `ml tune` runs it: Optuna's TPE sampler and
    pruner on RDB storage (SQLite), the nested MLflow run (create, one batch, terminate), the
    parameters written into the model spec, build, fit and predict on every fold, the metric
    per fold reported to the pruner;
  - the bare baseline: the estimator built from the same parameters, fitted and scored on the
    same fold matrices, as many folds as the trial ran. Nothing else.
Each is measured in process CPU seconds (`resource.getrusage`, user + system, all threads),
with the learners on one thread each (`n_jobs: 1`, OMP_WAIT_POLICY=PASSIVE) so the seconds count
work, not OpenMP threads spinning while a loaded machine deschedules their peers; one untimed
trial and bare fit first (imports, first-use setup).
Goal: per-trial overhead (trial / bare - 1, summed over the trials) <= 10%.

Usage: .venv/bin/python bench/tune_bench.py [--trials 4] [--folds 3] [--warehouse FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bench import PROJECT, RECIPE  # noqa: E402 - the same demo project and recipe

SPACE = {
    "model.params.models.params.max_depth": {"int": [2, 6]},
    "model.params.models.params.learning_rate": {"float": [0.02, 0.2], "log": True},
    "model.params.cate_models.params.subsample": {"float": [0.6, 1.0]},
}


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(trials: int, folds: int) -> dict[str, Any]:
    """Prepare as `ml tune` does, then time each trial and its bare refit, interleaved."""
    import mlflow
    import numpy as np
    import yaml

    from ml import tracking
    from ml.config import load_settings
    from ml.dbt import DbtProject
    from ml.estimators import build
    from ml.model import fit_estimator, predict_matrix
    from ml.plan import plan
    from ml.recipe import recipe_from_dict, resolve_context
    from ml.tuning import folds as cv
    from ml.tuning import study as studies
    from ml.tuning.space import check_search, with_params
    from ml.tuning.trial import Objective, TrialRuns

    settings = load_settings()
    data = yaml.safe_load((settings.root / RECIPE).read_text())
    for learner in ("models", "propensity_model", "cate_models"):  # CPU seconds count work,
        data["model"]["params"][learner]["params"]["n_jobs"] = 1  # not threads spinning
    data["tuning"] = {"search_space": SPACE, "metric": "qini_coefficient", "cv_folds": folds}
    recipe = recipe_from_dict(data, RECIPE)
    context = resolve_context(recipe, {}, "train")
    p = plan(recipe, RECIPE, DbtProject(settings))
    search = check_search(recipe, p.task, p.label, p.allowed_modules)
    tracking.configure(settings, create=True)  # a new store, as `ml tune` creates it
    rows = cv.read_training_rows(settings, p, context)
    fold_data = cv.make_folds(p, rows, folds)
    url = studies.storage_url(settings)
    study = studies.open_study(url, p, search, studies.fingerprint(p, search, context), None)
    exp_id = tracking.experiment_id(settings, recipe.experiment_name)

    def bare(params: dict[str, Any], n_folds: int) -> None:
        model = with_params(recipe.model, params)
        for fold in fold_data[:n_folds]:
            estimator = build(model.class_path, model.params, recipe.seed, "model")
            fit_estimator(estimator, p.task, fold.X_fit, fold.y_fit, fold.t_fit)
            predict_matrix(estimator, p.task, fold.X_val)

    results = []
    with mlflow.start_run(experiment_id=exp_id, run_name="tune-bench") as run:
        runs = TrialRuns(exp_id, run.info.run_id, search.metric, recipe.name)
        objective = Objective(p, search, fold_data, runs, threading.Event())
        study.optimize(objective, n_trials=1, gc_after_trial=False)  # warm-up, not timed
        bare(study.trials[-1].params, folds)
        for _ in range(trials):
            start = cpu()
            study.optimize(objective, n_trials=1, gc_after_trial=False)
            trial_s = cpu() - start
            done = study.trials[-1]
            n_folds = len(done.intermediate_values)
            start = cpu()
            bare(done.params, n_folds)
            bare_s = cpu() - start
            results.append(
                {
                    "trial": done.number,
                    "state": done.state.name.lower(),
                    "folds": n_folds,
                    "trial_cpu_s": round(trial_s, 3),
                    "bare_cpu_s": round(bare_s, 3),
                    "overhead": round(trial_s / bare_s - 1, 4),
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr)
    trial_total = sum(r["trial_cpu_s"] for r in results)
    bare_total = sum(r["bare_cpu_s"] for r in results)
    overhead = trial_total / bare_total - 1
    return {
        "training_rows": len(rows.train),
        "folds": folds,
        "trials": results,
        "trial_cpu_s_total": round(trial_total, 2),
        "bare_cpu_s_total": round(bare_total, 2),
        "overhead": round(overhead, 4),
        "median_overhead": round(float(np.median([r["overhead"] for r in results])), 4),
        "goal_10pct_met": overhead <= 0.10,
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=4, help="timed trials (default 4)")
    parser.add_argument("--folds", type=int, default=3, help="cv folds (default 3)")
    parser.add_argument("--customers", type=int, default=50_000, help="demo size (default 50k)")
    parser.add_argument("--warehouse", type=Path, help="a built DuckDB file to use instead")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it")
    parser.add_argument("--measure", action="store_true", help="measure only (internal)")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.trials, args.folds), indent=2))
        return

    base = args.keep or Path(tempfile.mkdtemp(prefix="ml-tune-bench-"))
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
        "ML_DUCKDB_PATH": str(
            args.warehouse.resolve() if args.warehouse else base / "warehouse.duckdb"
        ),
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(base / "artifacts"),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    if args.warehouse is None:
        print(f"building the demo warehouse in {base}", file=sys.stderr)
        setup = [sys.executable, str(ROOT / "bench" / "train_bench.py"), "--setup"]
        subprocess.run([*setup, "--customers", str(args.customers)], cwd=base, env=env, check=True)
    this = [sys.executable, str(Path(__file__).resolve()), "--measure"]
    subprocess.run(
        [*this, "--trials", str(args.trials), "--folds", str(args.folds)],
        cwd=base,
        env=env,
        check=True,
    )
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
