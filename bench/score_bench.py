"""Benchmark `ml score` (both engines) against raw XGBoost and the MLflow pyfunc path on the
same rows.

Builds its own throwaway project (a dbt view over a generated table of N rows x 20 numeric
features, a recipe with a 100-tree depth-6 XGBoost classifier), trains it with `ml train`, then
for each population size runs, in this one process run:
  - `ml score` (the Python engine) as a subprocess, --repeat times, each run followed at once
    by raw XGBoost `inplace_predict` over the same rows (already in memory as numpy; getrusage
    of this process around the calls): end-to-end wall time, the scoring rows/s (--json
    seconds), the scoring step's CPU seconds (--json cpu_seconds, getrusage of the whole
    process over the same span), peak RSS; the CPU ratio is the median of the pairs' ratios;
    then the same `ml score` with ML_NATIVE=0 (XGBoost's own predictor instead of the AVX-512
    walk, `ml.forestkernel`), against the raw run on as many threads just before it;
  - `ml score --engine sql` (the model compiled to SQL, run by DuckDB) twice, the same way;
  - `mlflow.pyfunc.load_model(...).predict(pandas_df)` over the same rows read from DuckDB.
Then, on the BigQuery emulator (`make bqemulator`) behind a byte-counting loopback proxy, the
first --bigquery-rows rows of the population (dbt build --target prod), scored by the same
model with each engine: the bytes the warehouse sends back (REST and Storage Read API) per
scored row (the drift sample set to 1,000 rows for both).

Usage: .venv/bin/python bench/score_bench.py [--rows 1000000] [--rows 10000000] [--keep DIR]
       [--n-jobs 2] [--bigquery-rows 20000] [--repeat 3] [--python-only]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
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
        "models:\n  bench:\n    +materialized: view\n"
        "    +contract: {enforced: \"{{ var('enforce_contracts', true) }}\"}\n"
    )
    (base / "profiles.yml").write_text(
        "bench:\n  target: \"{{ env_var('DBT_TARGET', 'dev') }}\"\n  outputs:\n    dev:\n"
        "      type: duckdb\n"
        "      path: \"{{ env_var('ML_DUCKDB_PATH') }}\"\n      schema: analytics\n      threads: 2\n"
        "    prod:\n      type: bigquery\n      method: oauth-secrets\n"
        "      project: \"{{ env_var('BQ_PROJECT', 'unset') }}\"\n      dataset: analytics\n"
        "      location: US\n      token: dummy-token\n"
        "      api_endpoint: \"{{ env_var('BQ_API_ENDPOINT', '') }}\"\n      threads: 2\n"
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


def _runs(base: Path, env: dict[str, str], repeat: int, *args: str) -> tuple[dict, float, float]:
    """`repeat` runs of `ml ...`: the output of the run with the median scoring CPU (its
    `cpu_seconds`, and `seconds`), the fastest wall time, the largest peak RSS."""
    runs = [_peak_rss_mb_of(base, env, *args) for _ in range(max(1, repeat))]
    by_cpu = sorted(runs, key=lambda run: run[0]["cpu_seconds"])
    return by_cpu[len(by_cpu) // 2][0], min(r[1] for r in runs), max(r[2] for r in runs)


def _raw_predict(booster: object, X: object, threads: int) -> tuple[float, float]:
    """CPU and wall seconds of `inplace_predict` over X in 100k-row slices, on `threads`."""
    booster.set_param({"nthread": threads})  # type: ignore[attr-defined]
    t, cpu = time.perf_counter(), _cpu_seconds()
    for start in range(0, len(X), 100_000):  # type: ignore[arg-type]
        booster.inplace_predict(X[start : start + 100_000])  # type: ignore[attr-defined,index]
    return _cpu_seconds() - cpu, time.perf_counter() - t


def _round(value: float, digits: int | None = None) -> float | None:
    return None if value != value else round(value, digits)  # NaN (not run): null


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CountingProxy:
    """A loopback TCP proxy in front of one emulator port, counting the bytes each way."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.down = 0  # bytes from the warehouse to the client: what leaves the warehouse
        self.up = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, upstream, "up"), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, "down"), daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
                with self._lock:
                    setattr(self, way, getattr(self, way) + len(data))
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def reset(self) -> None:
        with self._lock:
            self.down = self.up = 0

    def close(self) -> None:
        self._server.close()


def _bigquery_bytes(base: Path, env: dict[str, str], run_id: str, rows: int) -> dict:
    """Bytes leaving the (emulated) warehouse per scored row, for each engine."""
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    import bq_emulator
    import duckdb
    import pyarrow.parquet as pq
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from ml.warehouse.bigquery.write import _bigquery_schema

    emulator = bq_emulator.start(base / "bq")
    proxies = [CountingProxy(emulator.rest_port), CountingProxy(emulator.grpc_port)]
    prod = {
        **env,
        "APP_ENV": "prod",
        "DBT_TARGET": "prod",
        "BQ_PROJECT": bq_emulator.PROJECT,
        "BQ_DATASET": "analytics",
        "BQ_AUTH_METHOD": "oauth-secrets",
        "BQ_TOKEN": "dummy-token",
        "BQ_API_ENDPOINT": f"http://127.0.0.1:{proxies[0].port}",
        "BQ_STORAGE_API_ENDPOINT": f"http://127.0.0.1:{proxies[1].port}",
        # the drift sample is the only population data the SQL engine reads out: 1,000 rows
        # here, so what grows with the population shows (at 100M rows, 100,000 is 0.1%)
        "ML_DRIFT_SAMPLE_ROWS": "1000",
    }
    try:
        client = bigquery.Client(
            project=bq_emulator.PROJECT,
            credentials=AnonymousCredentials(),
            location="US",
            client_options=ClientOptions(api_endpoint=emulator.rest_endpoint),
        )
        for dataset in (bq_emulator.SESSION_DATASET, "raw"):
            client.create_dataset(dataset, exists_ok=True)
        with duckdb.connect(str(base / "data" / "warehouse.duckdb"), read_only=True) as con:
            tables = {
                "population": con.execute(
                    f"select * from raw.population limit {rows}"
                ).to_arrow_table(),
                "train": con.execute("select * from raw.train limit 1000").to_arrow_table(),
            }
        for name, table in tables.items():
            path = base / f"{name}.parquet"
            pq.write_table(table, path)
            schema = _bigquery_schema(table.schema)
            table_id = f"{bq_emulator.PROJECT}.raw.{name}"
            client.create_table(bigquery.Table(table_id, schema=schema), exists_ok=True)
            config = bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.PARQUET, schema=schema
            )
            with open(path, "rb") as handle:
                client.load_table_from_file(handle, table_id, job_config=config).result()
        subprocess.run(
            [str(ROOT / ".venv" / "bin" / "dbt"), "run", "--quiet", "--vars",
             "{enforce_contracts: false}"],
            cwd=base, env=prod, check=True,
        )  # fmt: skip
        out = {"bigquery_rows": rows}
        for engine in ("python", "sql"):
            for proxy in proxies:
                proxy.reset()
            scored, wall = _ml(base, prod, "score", "--run-id", run_id, "--engine", engine)
            down, up = sum(p.down for p in proxies), sum(p.up for p in proxies)
            out[f"bigquery_{engine}_bytes_out_per_row"] = round(down / scored["rows"], 1)
            out[f"bigquery_{engine}_bytes_in_per_row"] = round(up / scored["rows"], 1)
            out[f"bigquery_{engine}_wall_s"] = round(wall, 1)
        return out
    finally:
        for proxy in proxies:
            proxy.close()
        emulator.stop()


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
    parser.add_argument(
        "--bigquery-rows",
        type=int,
        default=20_000,
        help="rows scored on the BigQuery emulator to count bytes per row (0: skip)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of ml score (Python engine) and of raw predict: the medians' CPU (default 3)",
    )
    parser.add_argument(
        "--python-only", action="store_true", help="skip the SQL engine and the BigQuery bytes"
    )
    args = parser.parse_args()
    if args.python_only:
        args.bigquery_rows = 0
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

    # built (once per machine) before any run is measured; what `ml score` then uses
    from ml import forestkernel

    forest_kernel = forestkernel.available()
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

        # Pairs: each `ml score` run, then raw predict right after it, so both see the machine
        # in the same state (its speed drifts by tens of percent over minutes); the ratio is
        # the median of the pairs' ratios. Raw predict runs on the model's own threads
        # (n_jobs) and on as many as `ml score` predicts on while it streams (the cores less
        # one, at most n_jobs: ml.score), the second right after the first.
        from ml.fastpredict import streaming_threads

        engine_threads = min(args.n_jobs, streaming_threads())
        pairs, same_threads, xgboost_path = [], [], []
        for _ in range(max(1, args.repeat)):
            run = _peak_rss_mb_of(base, env, "score", "--run-id", trained["run_id"])
            pairs.append((run, _raw_predict(booster, X, args.n_jobs)))
            same_threads.append(_raw_predict(booster, X, engine_threads))
            # the same command with XGBoost's own predictor instead of the AVX-512 walk
            off = {**env, "ML_NATIVE": "0"}
            xgboost_path.append(_peak_rss_mb_of(base, off, "score", "--run-id", trained["run_id"]))
        ratios = sorted(run[0]["cpu_seconds"] / raw[0] for run, raw in pairs)
        ratios_same = sorted(
            run[0]["cpu_seconds"] / raw[0]
            for (run, _), raw in zip(pairs, same_threads, strict=True)
        )
        ratios_xgboost = sorted(
            run[0]["cpu_seconds"] / raw[0]
            for run, raw in zip(xgboost_path, same_threads, strict=True)
        )
        by_cpu = sorted(pairs, key=lambda pair: pair[0][0]["cpu_seconds"])
        scored = by_cpu[len(by_cpu) // 2][0][0]
        wall = min(run[1] for run, _ in pairs)
        rss = max(run[2] for run, _ in pairs)
        raw_cpu = sorted(raw[0] for _, raw in pairs)[len(pairs) // 2]
        raw_s = min(raw[1] for _, raw in pairs)
        in_sql, sql_wall, sql_rss = (
            _runs(base, env, 2, "score", "--run-id", trained["run_id"], "--engine", "sql")
            if not args.python_only
            else ({"seconds": float("nan"), "cpu_seconds": float("nan")}, float("nan"), 0.0)
        )

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
            "sql_engine_rows_per_s": _round(rows / in_sql["seconds"]),
            "sql_engine_e2e_rows_per_s": _round(rows / sql_wall),
            "sql_engine_peak_rss_mb": round(sql_rss),
            "ml_score_cpu_s_per_1m": round(scored["cpu_seconds"] * 1e6 / rows, 3),
            "raw_inplace_predict_cpu_s_per_1m": round(raw_cpu * 1e6 / rows, 3),
            "ml_score_cpu_over_raw": round(ratios[len(ratios) // 2], 2),
            "ml_score_cpu_over_raw_pairs": [round(r, 2) for r in ratios],
            "raw_threads": args.n_jobs,
            "ml_score_predict_threads": engine_threads,
            f"ml_score_cpu_over_raw_on_{engine_threads}_threads": round(
                ratios_same[len(ratios_same) // 2], 2
            ),
            f"ml_score_cpu_over_raw_on_{engine_threads}_threads_pairs": [
                round(r, 2) for r in ratios_same
            ],
            f"raw_inplace_predict_on_{engine_threads}_threads_cpu_s_runs": [
                round(raw[0], 3) for raw in same_threads
            ],
            "forest_kernel": forest_kernel,
            f"ml_score_xgboost_predictor_cpu_over_raw_on_{engine_threads}_threads": round(
                ratios_xgboost[len(ratios_xgboost) // 2], 2
            ),
            f"ml_score_xgboost_predictor_cpu_over_raw_on_{engine_threads}_threads_pairs": [
                round(r, 2) for r in ratios_xgboost
            ],
            "ml_score_xgboost_predictor_cpu_s_runs": [
                run[0]["cpu_seconds"] for run in xgboost_path
            ],
            "ml_score_cpu_s_runs": [run[0]["cpu_seconds"] for run, _ in pairs],
            "raw_inplace_predict_cpu_s_runs": [round(raw[0], 3) for _, raw in pairs],
            "sql_engine_cpu_s_per_1m": _round(in_sql["cpu_seconds"] * 1e6 / rows, 3),
        }
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.bigquery_rows and trained is not None:
        bytes_per_row = _bigquery_bytes(base, env, trained["run_id"], args.bigquery_rows)
        print(json.dumps(bytes_per_row), flush=True)
        results.append(bytes_per_row)
    print(json.dumps({"results": results}, indent=2))
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
