"""Benchmark `ml serve` against `mlflow models serve` on the same registered model, and
`ml serve` by entity id with the features in the online store (SQLite file, then Redis).

Builds its own throwaway warehouse and MLflow store in a temp dir (demo data, `dbt build`, the
X-learner recipe trained and registered), times `ml materialize` of the upcoming campaign's
population into each store, then serves that one model version, one worker each, on 127.0.0.1:
`ml serve` and `mlflow models serve` with the full feature record, `ml serve` by id with each
store (a redis-server started on a free loopback port). All four run at once and are measured
round robin (--rounds rounds, each server a share of the requests per round, so the machine's
slower spells fall on all alike), driven by the same small raw-socket HTTP/1.1 client
(keep-alive, one connection per client thread):
  - single-request latency p50/p99 and req/s, sequential (one connection);
  - req/s and p50/p99 at concurrency 8 (eight connections, one thread each).
Every response is checked (status 200, and every server gives the same score to the customer).

Usage: .venv/bin/python bench/serve_bench.py [--requests 2000] [--rounds 4] [--customers 50000]
       [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
RECIPE = "xgboost_x_learner"
CONTEXT = {"campaign_id": "cmp_2026_12"}
WARMUP = 200
CONCURRENCY = 8


class Connection:
    """Minimal HTTP/1.1 keep-alive client: the same cost for both servers, and far below
    either server's own (httpx costs more per request than the scoring does)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body)
        while b"\r\n\r\n" not in self.buf:
            self._read()
        header, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = next(
            int(v)
            for k, _, v in (line.partition(b":") for line in lines[1:])
            if k.strip().lower() == b"content-length"
        )
        self.buf = rest
        while len(self.buf) < length:
            self._read()
        payload, self.buf = self.buf[:length], self.buf[length:]
        return status, payload

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(
    proc: subprocess.Popen, port: int, path: str, log: Path, timeout: float = 180
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server not ready after {timeout}s:\n{log.read_text()}")


def _start(
    cmd: list[str], env: dict[str, str], port: int, ready: str, log: Path
) -> subprocess.Popen:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_ready(proc, port, ready, log)
    except BaseException:
        _stop(proc)
        raise
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its workers only
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _sequential(port: int, path: str, body: bytes, n: int) -> tuple[np.ndarray, float]:
    conn = Connection(port)
    try:
        for _ in range(WARMUP // 4):
            conn.post(path, body)
        lat = np.empty(n)
        start = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            status, payload = conn.post(path, body)
            lat[i] = time.perf_counter() - t
            if status != 200:
                raise SystemExit(f"{path}: HTTP {status}: {payload[:300]!r}")
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return lat, elapsed


def _concurrent(
    port: int, path: str, body: bytes, n: int, workers: int
) -> tuple[np.ndarray, float]:
    per = n // workers
    lat = np.empty(per * workers)
    errors: list[str] = []
    conns = [Connection(port) for _ in range(workers)]
    for c in conns:
        for _ in range(WARMUP // workers // 4):
            c.post(path, body)
    barrier = threading.Barrier(workers + 1)

    def client(k: int) -> None:
        barrier.wait()
        for i in range(per):
            t = time.perf_counter()
            status, payload = conns[k].post(path, body)
            lat[k * per + i] = time.perf_counter() - t
            if status != 200:
                errors.append(f"HTTP {status}: {payload[:300]!r}")
                return

    threads = [threading.Thread(target=client, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for c in conns:
        c.close()
    if errors:
        raise SystemExit(f"{path}: {errors[0]}")
    return lat, elapsed


def _summary(parts: list[tuple[np.ndarray, float]]) -> dict[str, float]:
    """Latency percentiles over every round's requests; req/s over the rounds' total time."""
    lat = np.concatenate([p[0] for p in parts])
    rps = len(lat) / sum(p[1] for p in parts)
    ms = lat * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "req_per_s": rps,
    }


def _build(base: Path, customers: int) -> tuple[dict[str, str], object]:
    env = {
        "ML_DUCKDB_PATH": str(base / "warehouse.duckdb"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(base / "artifacts"),
    }
    os.environ.update(env)
    from ml.config import load_settings
    from ml.dbt import DbtProject
    from ml.demo import load_demo_data
    from ml.train import train

    settings = load_settings(root=ROOT)
    load_demo_data(settings, n_customers=customers)
    DbtProject(settings).invoke(["build", "--quiet"], quiet=True)
    result = train(settings, ROOT / "recipes" / f"{RECIPE}.yaml", alias="champion")
    return env, result


def _record(env: dict[str, str], features: list[str]) -> tuple[int, dict]:
    """A customer of the upcoming campaign: its id and its feature record."""
    import duckdb

    # not read_only: dbt-duckdb keeps a read-write connection to the file open in-process
    with duckdb.connect(env["ML_DUCKDB_PATH"]) as con:
        cols = ", ".join(features)
        row = con.execute(
            f"select customer_id, {cols} from analytics_loaders.score_uplift "
            "where recency_days is not null and campaign_id = ? order by customer_id limit 1",
            [CONTEXT["campaign_id"]],
        ).fetchone()
    return row[0], dict(zip(features, row[1:], strict=True))


def _redis(base: Path) -> tuple[subprocess.Popen, str]:
    """Debian's redis-server (`make redis`) on a free loopback port, no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: run `make redis`")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", str(base)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    _stop(proc)
    raise SystemExit("redis-server did not start")


def _materialize(version: str, store: dict[str, str]) -> dict[str, float]:
    """`ml materialize` of the upcoming campaign, in this process (dbt holds the DuckDB file):
    the whole call (the model's recipe and schema loaded, the plan checked) and the part that
    reads the population and writes the store."""
    from ml.config import load_settings
    from ml.materialize import materialize
    from ml.registry import ModelRef

    saved = {k: os.environ.get(k) for k in store}
    os.environ.update(store)
    try:
        start = time.perf_counter()
        result = materialize(load_settings(root=ROOT), ModelRef.parse(None, version), CONTEXT)
        total = time.perf_counter() - start
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"rows": result.rows, "seconds": total, "write_seconds": result.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="Requests per measurement.")
    parser.add_argument("--customers", type=int, default=50_000, help="Demo data size.")
    parser.add_argument("--keep", type=Path, default=None, help="Build here and keep it.")
    parser.add_argument(
        "--rounds", type=int, default=4, help="Rounds the requests are split over (default 4)."
    )
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="serve-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    redis_proc = None
    try:
        print(f"building warehouse and training {RECIPE} in {base} ...", file=sys.stderr)
        env_vars, result = _build(base, args.customers)
        env = {**os.environ, **env_vars, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        features = json.loads(
            (next((base / "artifacts").rglob("schema/training_schema.json"))).read_text()
        )["features"]
        customer, record = _record(env_vars, list(features))
        version = f"{RECIPE}/{result.model_version}"
        redis_proc, redis_url = _redis(base)
        stores = {
            "sqlite": {"ML_ONLINE_STORE_PATH": str(base / "online.sqlite")},
            "redis": {"ML_ONLINE_STORE": "redis", "ML_REDIS_URL": redis_url},
        }
        materialized = {}
        for store, store_env in stores.items():
            print(f"ml materialize into the {store} store ...", file=sys.stderr)
            materialized[store] = _materialize(version, store_env)

        by_id = json.dumps({"context": CONTEXT, "entities": [{"customer_id": customer}]}).encode()
        serve = [str(BIN / "ml"), "serve", "--model", version, "--port", "{port}"]
        servers = {
            "ml serve": (
                serve,
                {},
                "/ready",
                "/predict",
                json.dumps({"records": [record]}).encode(),
                lambda out: out["predictions"][0]["score"],
            ),
            "mlflow models serve": (
                [
                    str(BIN / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    f"models:/{version}",
                    "--env-manager",
                    "local",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    "{port}",
                ],
                {},
                "/ping",
                "/invocations",
                json.dumps({"dataframe_records": [record]}).encode(),
                lambda out: out["predictions"][0],
            ),
            "ml serve by id, sqlite": (
                serve,
                stores["sqlite"],
                "/ready",
                "/predict",
                by_id,
                lambda out: out["predictions"][0]["score"],
            ),
            "ml serve by id, redis": (
                serve,
                stores["redis"],
                "/ready",
                "/predict",
                by_id,
                lambda out: out["predictions"][0]["score"],
            ),
        }
        results: dict[str, dict[str, dict[str, float]]] = {}
        scores: dict[str, float] = {}
        procs: dict[str, tuple[subprocess.Popen, int]] = {}
        try:
            for name, (cmd, extra, ready, path, body, score_of) in servers.items():
                port = _free_port()
                cmd = [c.replace("{port}", str(port)) for c in cmd]
                log = base / f"{name.replace(' ', '-').replace(',', '')}.log"
                print(f"starting {name} on port {port} ...", file=sys.stderr)
                procs[name] = (_start(cmd, {**env, **extra}, port, ready, log), port)
                conn = Connection(port)
                status, payload = conn.post(path, body)
                conn.close()
                if status != 200:
                    raise SystemExit(f"{name}: HTTP {status}: {payload[:300]!r}")
                scores[name] = float(score_of(json.loads(payload)))
            # Round robin: every server answers a share of the requests in each round, so a
            # spell when the machine is slower falls on all of them alike.
            seq: dict[str, list] = {name: [] for name in servers}
            conc: dict[str, list] = {name: [] for name in servers}
            share = max(1, args.requests // args.rounds)
            for _ in range(args.rounds):
                for name, (_, _, _, path, body, _) in servers.items():
                    seq[name].append(_sequential(procs[name][1], path, body, share))
                for name, (_, _, _, path, body, _) in servers.items():
                    conc[name].append(_concurrent(procs[name][1], path, body, share, CONCURRENCY))
            for name in servers:
                results[name] = {
                    "sequential": _summary(seq[name]),
                    f"concurrency {CONCURRENCY}": _summary(conc[name]),
                }
        finally:
            for proc, _ in procs.values():
                _stop(proc)
        if max(scores.values()) - min(scores.values()) > 1e-9:
            raise SystemExit(f"the servers disagree on the score: {scores}")
        _report(version, result.run_id, args.requests, results, materialized)
        print(
            json.dumps({"results": results, "scores": scores, "materialize": materialized}),
            file=sys.stderr,
        )
    finally:
        if redis_proc is not None:
            _stop(redis_proc)
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


def _report(
    version: str,
    run_id: str,
    requests: int,
    results: dict[str, dict[str, dict[str, float]]],
    materialized: dict[str, dict[str, float]],
) -> None:
    print(
        f"\nmodel {version} (run {run_id}), {requests} requests per row, 1 worker each, "
        f"{os.cpu_count()} CPUs\n"
    )
    print("| server | mode | p50 ms | p99 ms | req/s |")
    print("|---|---|---:|---:|---:|")
    for name, modes in results.items():
        for mode, r in modes.items():
            print(
                f"| {name} | {mode} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['req_per_s']:,.0f} |"
            )
    print()
    for name in ("ml serve", "ml serve by id, sqlite", "ml serve by id, redis"):
        for mode in results[name]:
            ratio = (
                results[name][mode]["req_per_s"] / results["mlflow models serve"][mode]["req_per_s"]
            )
            print(f"{name}, {mode}: {ratio:.1f}x the req/s of mlflow models serve (full records)")
    print("\n| ml materialize | rows | whole call s | population -> store s |")
    print("|---|---:|---:|---:|")
    for store, m in materialized.items():
        print(f"| {store} | {m['rows']:,} | {m['seconds']:.2f} | {m['write_seconds']:.2f} |")


if __name__ == "__main__":
    main()
