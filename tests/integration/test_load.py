"""Bounded load on `ml serve`: 20,000 requests at concurrency 32 over loopback to one uvicorn
worker, every one answered 200 with the right number of scores, and the server's resident memory
(VmRSS in /proc) not growing by more than 10% between the first and the last 5,000 requests."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

import duckdb
import httpx
import pytest
from serving import process_env, start_server  # tests/integration/serving.py

pytestmark = pytest.mark.slow
REQUESTS = 20_000
CONCURRENCY = 32
WINDOW = 5_000  # requests compared at the start and at the end
MAX_GROWTH = 0.10
TIME_LIMIT = 300.0  # seconds for all requests: a hung server fails instead of stalling CI


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.fixture(scope="module")
def loaded_server(warehouse_env, trained_x_learner, tmp_path_factory):
    server = start_server(
        ["--run-id", trained_x_learner.run_id],
        process_env(warehouse_env),
        tmp_path_factory.mktemp("load"),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bodies(warehouse_env, loaded_server) -> list[bytes]:
    """Request bodies of 1 to 4 records of the scoring population (features and key)."""
    features = [f["name"] for f in loaded_server.client.get("/metadata").json()["features"]]
    with duckdb.connect(warehouse_env["ML_DUCKDB_PATH"]) as con:
        rows = con.execute(
            f"select customer_id, {', '.join(features)} from analytics_loaders.score_uplift "
            "order by campaign_id, customer_id limit 400"
        ).fetchall()
    records = [dict(zip(["customer_id", *features], row, strict=True)) for row in rows]
    sizes = itertools.cycle([1, 1, 1, 2, 1, 1, 4, 1])
    out, i = [], 0
    while i < len(records):
        n = next(sizes)
        out.append(json.dumps({"records": records[i : i + n]}).encode())
        i += n
    return out


def test_20k_requests_at_concurrency_32_no_errors_and_flat_memory(loaded_server, bodies) -> None:
    pid = loaded_server.proc.pid  # one worker: uvicorn serves in the `ml serve` process itself
    rss: dict[int, int] = {}
    failures: list[str] = []
    done = 0

    async def run() -> float:
        nonlocal done
        queue = iter(range(REQUESTS))
        # Reuse a connection only while it is surely open: uvicorn closes idle ones after 5 s,
        # and a request sent as it does so dies with a reset however healthy the server.
        limits = httpx.Limits(
            max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY, keepalive_expiry=1.0
        )
        headers = {"Content-Type": "application/json"}
        async with httpx.AsyncClient(
            base_url=loaded_server.url, limits=limits, timeout=30.0
        ) as client:

            async def worker() -> None:
                nonlocal done
                for i in queue:
                    body = bodies[i % len(bodies)]
                    try:
                        r = await client.post("/predict", content=body, headers=headers)
                        n = len(json.loads(body)["records"])
                        if r.status_code != 200 or len(r.json()["predictions"]) != n:
                            failures.append(f"{r.status_code}: {r.text[:200]}")
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                    done += 1
                    if done in (WINDOW, REQUESTS):
                        rss[done] = _rss_kib(pid)

            start = time.perf_counter()
            await asyncio.wait_for(
                asyncio.gather(*(worker() for _ in range(CONCURRENCY))), TIME_LIMIT
            )
            return time.perf_counter() - start

    rss[0] = _rss_kib(pid)
    seconds = asyncio.run(run())
    growth = rss[REQUESTS] / rss[WINDOW] - 1
    print(
        f"\n{REQUESTS:,} requests at concurrency {CONCURRENCY} in {seconds:.1f}s "
        f"({REQUESTS / seconds:,.0f} req/s); VmRSS {rss[0] / 1024:.1f} MiB at start, "
        f"{rss[WINDOW] / 1024:.1f} MiB after {WINDOW:,}, {rss[REQUESTS] / 1024:.1f} MiB after "
        f"{REQUESTS:,} ({growth:+.1%})"
    )
    assert done == REQUESTS
    assert failures == [], f"{len(failures)} failed, e.g. {failures[:3]}"
    assert growth <= MAX_GROWTH, rss
    assert loaded_server.client.get("/health").status_code == 200
