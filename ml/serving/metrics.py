"""`GET /metrics` in Prometheus' text format (prometheus-client): requests by route and status,
request latency, online-store lookup latency and misses, and the served model as an info metric
(`ml_model_info{model_name, model_version, run_id} 1`; a version served before and swapped out
by a reload reads 0).

With several workers, `ml serve` points PROMETHEUS_MULTIPROC_DIR at a temporary folder before
they start: each worker writes its samples there and /metrics, whichever worker answers, sums
them (the info metric: the highest value per label set among live workers, so a version any
worker still serves reads 1).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml.registry import ResolvedModel

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ROUTES = frozenset(
    {"/predict", "/health", "/ready", "/metadata", "/metrics", "/docs", "/openapi.json"}
)
# a by-id request is a lookup plus a few rows through the trees: most land under 2 ms
LATENCY_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    """The app's metrics, in a registry of its own (several apps may live in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ml_requests",
            "HTTP requests answered, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ml_request_duration_seconds",
            "Time to answer a request, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.lookup = Histogram(
            "ml_online_store_lookup_duration_seconds",
            "Time of one online-store lookup (all entities of a request)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.entities = Counter(
            "ml_online_store_entities",
            "Entities looked up in the online store",
            registry=self.registry,
        )
        self.misses = Counter(
            "ml_online_store_misses",
            "Entities the online store did not hold for the requested context",
            registry=self.registry,
        )
        self.model = Gauge(
            "ml_model_info",
            "The model this server answers with (1), or answered with before a reload (0)",
            ["model_name", "model_version", "run_id"],
            multiprocess_mode="livemax",
            registry=self.registry,
        )

    def observe_lookup(self, seconds: float, entities: int, misses: int) -> None:
        self.lookup.observe(seconds)
        self.entities.inc(entities)
        if misses:
            self.misses.inc(misses)

    def serving(self, now: ResolvedModel, before: ResolvedModel | None = None) -> None:
        """The info metric: this model now, and the one it replaced (if any) no longer."""
        if before is not None:
            self.model.labels(before.model_name, str(before.model_version), before.run_id).set(0)
        self.model.labels(now.model_name, str(now.model_version), now.run_id).set(1)

    def exposition(self) -> tuple[bytes, str]:
        """The text to answer /metrics with, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry = self.registry
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST


def worker_exited() -> None:
    """A worker's live gauges leave the sums when it stops (multiprocess mode only)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


class RequestMetrics:
    """ASGI middleware, outermost: counts and times every request, refusals included. Paths
    that are not routes count as `other`, so a scan cannot grow the label set."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = [500]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
