"""Benchmark `ml score` against raw XGBoost and the MLflow pyfunc path on the same rows.

Builds its own throwaway project (a dbt view over a generated table of N rows x 20 numeric
features, a recipe with a 100-tree depth-6 XGBoost classifier), trains it with `ml train`, then
for each population size runs, in this one process run:
  - `ml score` as a subprocess: end-to-end wall time, its scoring rows/s (--json seconds), peak RSS;
  - raw XGBoost `inplace_predict` over the same rows (already in memory as numpy): rows/s;
  - `mlflow.pyfunc.load_model(...).predict(pandas_df)` over the same rows read from DuckDB.

Usage: .venv/bin/python bench/score_bench.py [--rows 1000000] [--rows 10000000] [--keep DIR]
       [--n-jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_FEATURES = 20
TRAIN_ROWS = 200_000


def _project(base: Path, n_jobs: int) -> None:
    shutil.copytree(ROOT / "config", base / "config")
    (base / "models").mkdir()
    (base / "dbt_project.yml").write_text(
        "name: bench\nversion: '1.0'\nconfig-version: 2\nprofile: bench\nmodel-paths: [models]\n"
        "models:\n  bench:\n    +materialized: view\n    +contract: {enforced: true}\n"
    )
    (base / "profiles.yml").write_text(
        "bench:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        "      path: \"{{ env_var('ML_DUCKDB_PATH') }}\"\n      schema: analytics\n      threads: 2\n"
    )
    feats = [f"f{i:02d}" for i in range(N_FEATURES)]
    cols = "\n".join(f"      - {{name: {f}, data_type: double}}" for f in feats)
    (base / "models" / "bench_train.sql").write_text("select * from raw.train")
    (base / "models" / "bench_population.sql").write_text("select * from raw.population")
    (base / "models" / "schema.yml").write_text(
        "version: 2\nmodels:\n"
        f"  - name: bench_train\n    columns:\n      - {{name: id, data_type: bigint}}\n"
        f"      - {{name: label, data_type: bigint}}\n{cols}\n"
        f"  - name: bench_population\n    columns:\n      - {{name: id, data_type: bigint}}\n{cols}\n"
    )
    (base / "recipes").mkdir()
    (base / "recipes" / "bench_xgb.yaml").write_text(
        "name: bench_xgb\n"
        "data: {train_model: bench_train, score_model: bench_population, entity_keys: [id], target: label}\n"
        "preprocessing: {impute_numeric: none}\n"
        "model:\n  class_path: xgboost.XGBClassifier\n"
        f"  params: {{n_estimators: 100, max_depth: 6, learning_rate: 0.1, n_jobs: {n_jobs}, tree_method: hist}}\n"
        "split: {test_size: 0.2}\nevaluation: {plots: false}\n"
    )


def _generate(db: Path, rows: int) -> None:
    import duckdb

    feats = ", ".join(f"random() as f{i:02d}" for i in range(N_FEATURES))
    with duckdb.connect(str(db)) as con:
        con.execute("select setseed(0.42)")
        con.execute("create schema if not exists raw")
        con.execute(
            f"create or replace table raw.train as select i as id, {feats}, 0::bigint as label from range({TRAIN_ROWS}) t(i)"
        )
        con.execute(
            "update raw.train set label = case when f00 + f01 * f02 + 0.3 * random() > 0.9 then 1 else 0 end"
        )
        con.execute(
            f"create or replace table raw.population as select i as id, {feats} from range({rows}) t(i)"
        )


def _ml(base: Path, env: dict[str, str], *args: str) -> tuple[dict, float]:
    start = time.perf_counter()
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ml"), *args, "--json"],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"ml {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout), wall


def _peak_rss_mb_of(base: Path, env: dict[str, str], *args: str) -> tuple[dict, float, float]:
    """Run `ml` in a child of a fresh python so RUSAGE_CHILDREN is that child's alone."""
    code = (
        "import json,resource,subprocess,sys,time;"
        "t=time.perf_counter();p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
        "w=time.perf_counter()-t;r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024;"
        "print(json.dumps({'rc':p.returncode,'out':p.stdout,'err':p.stderr[-3000:],'wall':w,'rss':r}))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / ".venv" / "bin" / "ml"), *args, "--json"],
        cwd=base,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(res.stdout)
    if info["rc"] != 0:
        raise SystemExit(f"ml {' '.join(args)} failed:\n{info['err']}")
    return json.loads(info["out"]), info["wall"], info["rss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, action="append", help="population size (repeatable)")
    parser.add_argument("--keep", type=Path, help="keep the project in this folder")
    parser.add_argument(
        "--n-jobs",
        type=int,
        default=2,
        help="XGBoost threads of the model, for ml score and raw predict alike (default 2)",
    )
    args = parser.parse_args()
    sizes = args.rows or [1_000_000, 10_000_000]
    base = args.keep or Path(tempfile.mkdtemp(prefix="ml-score-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    _project(base, args.n_jobs)
    env = {
        **os.environ,
        "ML_PROJECT_DIR": str(base),
        "ML_DUCKDB_PATH": str(base / "data" / "warehouse.duckdb"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(base / "artifacts"),
    }
    (base / "data").mkdir(exist_ok=True)
    os.environ.update(env)

    import duckdb
    import mlflow
    import numpy as np

    results = []
    trained = None
    for rows in sizes:
        _generate(base / "data" / "warehouse.duckdb", rows)
        if trained is None:
            subprocess.run(
                [str(ROOT / ".venv" / "bin" / "dbt"), "build", "--quiet"],
                cwd=base,
                env=env,
                check=True,
            )
            trained, _ = _ml(base, env, "train", "--recipe", "recipes/bench_xgb.yaml")
        scored, wall, rss = _peak_rss_mb_of(base, env, "score", "--run-id", trained["run_id"])
        scored2, wall2, rss2 = _peak_rss_mb_of(base, env, "score", "--run-id", trained["run_id"])
        if wall2 < wall:
            scored, wall, rss = scored2, wall2, max(rss, rss2)

        feats = [f"f{i:02d}" for i in range(N_FEATURES)]
        with duckdb.connect(str(base / "data" / "warehouse.duckdb"), read_only=True) as con:
            t = time.perf_counter()
            X = con.execute(f"select {', '.join(feats)} from raw.population").fetchnumpy()
            X = np.column_stack([X[f] for f in feats]).astype(np.float32)
            read_s = time.perf_counter() - t
            frame = (
                con.execute(f"select {', '.join(feats)} from raw.population").df()
                if rows <= 2_000_000
                else None
            )
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        import pickle

        est_path = mlflow.artifacts.download_artifacts(
            run_id=trained["run_id"], artifact_path="estimator/estimator.pkl"
        )
        booster = pickle.loads(Path(est_path).read_bytes()).get_booster()
        t = time.perf_counter()
        for start in range(0, rows, 100_000):
            booster.inplace_predict(X[start : start + 100_000])
        raw_s = time.perf_counter() - t

        pyfunc_rps = None
        if frame is not None:
            model = mlflow.pyfunc.load_model(f"models:/bench_xgb/{trained['model_version']}")
            t = time.perf_counter()
            model.predict(frame)
            pyfunc_rps = rows / (time.perf_counter() - t + read_s)
        del X, frame
        result = {
            "rows": rows,
            "ml_score_wall_s": round(wall, 2),
            "ml_score_rows_per_s": round(rows / scored["seconds"]),
            "ml_score_e2e_rows_per_s": round(rows / wall),
            "raw_inplace_predict_rows_per_s": round(rows / raw_s),
            "pyfunc_read_and_predict_rows_per_s": round(pyfunc_rps) if pyfunc_rps else None,
            "ml_score_peak_rss_mb": round(rss),
        }
        results.append(result)
        print(json.dumps(result), flush=True)
    print(json.dumps({"results": results}, indent=2))
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
