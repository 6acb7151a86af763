"""Benchmark `ml serve` against `mlflow models serve` on the same registered model.

Builds its own throwaway warehouse and MLflow store in a temp dir (demo data, `dbt build`, the
X-learner recipe trained and registered), then serves that one model version both ways, one
worker each, on 127.0.0.1, and drives both with the same small raw-socket HTTP/1.1 client
(keep-alive, one connection per client thread):
  - single-record latency p50/p99 and req/s, sequential (one connection);
  - req/s and p50/p99 at concurrency 8 (eight connections, one thread each).
Every response is checked (status 200, and both servers agree on the score).

Usage: .venv/bin/python bench/serve_bench.py [--requests 2000] [--customers 50000] [--keep DIR]
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


def _sequential(port: int, path: str, body: bytes, n: int) -> dict[str, float]:
    conn = Connection(port)
    try:
        for _ in range(WARMUP):
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
    return _summary(lat, n / elapsed)


def _concurrent(port: int, path: str, body: bytes, n: int, workers: int) -> dict[str, float]:
    per = n // workers
    lat = np.empty(per * workers)
    errors: list[str] = []
    conns = [Connection(port) for _ in range(workers)]
    for c in conns:
        for _ in range(WARMUP // workers):
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
    return _summary(lat, len(lat) / elapsed)


def _summary(lat: np.ndarray, rps: float) -> dict[str, float]:
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


def _record(env: dict[str, str], features: list[str]) -> dict:
    import duckdb

    # not read_only: dbt-duckdb keeps a read-write connection to the file open in-process
    with duckdb.connect(env["ML_DUCKDB_PATH"]) as con:
        cols = ", ".join(features)
        row = con.execute(
            f"select {cols} from analytics_loaders.score_uplift "
            "where recency_days is not null order by customer_id limit 1"
        ).fetchone()
    return dict(zip(features, row, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="Requests per measurement.")
    parser.add_argument("--customers", type=int, default=50_000, help="Demo data size.")
    parser.add_argument("--keep", type=Path, default=None, help="Build here and keep it.")
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="serve-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        print(f"building warehouse and training {RECIPE} in {base} ...", file=sys.stderr)
        env_vars, result = _build(base, args.customers)
        env = {**os.environ, **env_vars, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        features = json.loads(
            (next((base / "artifacts").rglob("schema/training_schema.json"))).read_text()
        )["features"]
        record = _record(env_vars, list(features))
        version = f"{RECIPE}/{result.model_version}"

        servers = {
            "ml serve": (
                [str(BIN / "ml"), "serve", "--model", version, "--port", "{port}"],
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
                "/ping",
                "/invocations",
                json.dumps({"dataframe_records": [record]}).encode(),
                lambda out: out["predictions"][0],
            ),
        }
        results: dict[str, dict[str, dict[str, float]]] = {}
        scores: dict[str, float] = {}
        for name, (cmd, ready, path, body, score_of) in servers.items():
            port = _free_port()
            cmd = [c.replace("{port}", str(port)) for c in cmd]
            log = base / f"{name.split()[0]}.log"
            print(f"starting {name} on port {port} ...", file=sys.stderr)
            proc = _start(cmd, env, port, ready, log)
            try:
                conn = Connection(port)
                status, payload = conn.post(path, body)
                conn.close()
                if status != 200:
                    raise SystemExit(f"{name}: HTTP {status}: {payload[:300]!r}")
                scores[name] = float(score_of(json.loads(payload)))
                results[name] = {
                    "sequential": _sequential(port, path, body, args.requests),
                    f"concurrency {CONCURRENCY}": _concurrent(
                        port, path, body, args.requests, CONCURRENCY
                    ),
                }
            finally:
                _stop(proc)
        if abs(scores["ml serve"] - scores["mlflow models serve"]) > 1e-9:
            raise SystemExit(f"the servers disagree on the score: {scores}")

        print(
            f"\nmodel {version} (run {result.run_id}), {args.requests} requests per row, "
            f"1 worker each, {os.cpu_count()} CPUs\n"
        )
        print("| server | mode | p50 ms | p99 ms | req/s |")
        print("|---|---|---:|---:|---:|")
        for name, modes in results.items():
            for mode, r in modes.items():
                print(
                    f"| {name} | {mode} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['req_per_s']:,.0f} |"
                )
        for mode in results["ml serve"]:
            ratio = (
                results["ml serve"][mode]["req_per_s"]
                / results["mlflow models serve"][mode]["req_per_s"]
            )
            print(f"\n{mode}: ml serve does {ratio:.1f}x the req/s of mlflow models serve", end="")
        print()
        print(json.dumps({"results": results, "scores": scores}), file=sys.stderr)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
