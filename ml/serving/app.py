"""The scoring API for one resolved model.

Each worker loads the training run's unified pyfunc once, at startup, and scores on one thread;
use --workers to use more cores.

Endpoints: POST /predict, GET /health (liveness, never authenticated), GET /ready, GET /metadata,
GET /metrics, /docs. Records carry the features, plus optionally the recipe's entity keys, which
are echoed back next to each score; or the body names a context and entities by key, and their
features come from the online store (see `by_id`). Refusals: 400 (a body that is not UTF-8),
401 (bearer token, when serving.token_env is set), 413 (body over serving.max_body_bytes), 415
(not application/json), 422 (FastAPI's field-level `detail` for invalid records, including ints
beyond 2**53 and floats beyond float32's range, cut to the first few errors with short inputs
plus `error_count`, see `body`; `{"error"}` naming the record for a value the model cannot take
or a non-finite score), 503 (model not loaded yet, or the online store down: /ready says so
too); MLErrors map to their http_status as `{"error": message}`. uvicorn's access log is off (a
log line costs more than a request).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel

from ml import registry
from ml.config import Settings
from ml.errors import ContractError, MLError, OnlineStoreError
from ml.model import ScoringModel, TrainingSchema
from ml.online import OnlineStore, open_store
from ml.registry import ModelRef, ResolvedModel
from ml.serving.body import MAX_ERRORS, checked_body_route, invalid
from ml.serving.by_id import answer, look_up
from ml.serving.guard import Guard, api_token
from ml.serving.metrics import Metrics, RequestMetrics, worker_exited
from ml.serving.reload import Reloader, watches
from ml.serving.schema import Schemas, build_schemas, by_id_schemas, score_records
from ml.serving.served import Served


def create_app(
    settings: Settings,
    target: ResolvedModel,
    *,
    model: ScoringModel | None = None,
    watch: ModelRef | None = None,
) -> FastAPI:
    """The scoring API for one resolved model. The model loads in the lifespan (once per
    worker) unless it is passed in already loaded. With `watch` (NAME@ALIAS), the worker swaps
    in the alias's new version when it moves (see `reload`)."""
    token = api_token(settings)
    schema = model.schema if model is not None else registry.read_schema(target)
    declared = registry.read_recipe(target).context  # the context params' types, for by-id
    schemas = build_schemas(schema, settings.serving.max_records)
    store = open_store(settings)  # connects on first use, in the worker that uses it
    metrics = Metrics()

    def swap(new: Served) -> None:
        before: Served | None = app.state.served
        app.state.metadata = _metadata(new.model.schema, new.target, settings)
        app.state.served = new  # the one assignment requests see
        app.state.model = new.model
        metrics.serving(new.target, before.target if before else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _one_thread()
        if app.state.model is None:
            loaded = registry.load_pyfunc(target)
            if loaded.schema != schema:
                raise ContractError(
                    f"{target.model_uri}: its training schema differs from the run's"
                )
            swap(Served(target, loaded, declared))
        else:
            metrics.serving(target)
        # The loaded libraries and model are permanent: keep the collector from re-walking them
        # (a full collection over them is a p99 spike of tens of ms).
        gc.collect()
        gc.freeze()
        reloader = None
        if watch is not None and watches(watch) and settings.serving.reload_seconds > 0:
            reloader = Reloader(
                watch, settings.serving.reload_seconds, lambda: app.state.served, swap
            )
            reloader.start()
        try:
            yield
        finally:
            if reloader is not None:
                reloader.stop()
            store.close()
            worker_exited()

    app = FastAPI(
        title=f"ml serve: {schema.recipe}",
        version=target.model_version or target.run_id,
        description=f"{schema.task} model {target.model_name}, run {target.run_id}",
        lifespan=lifespan,
    )
    app.state.model = model
    app.state.served = Served(target, model, declared) if model is not None else None
    app.state.metadata = _metadata(schema, target, settings)
    app.state.store = store
    app.add_middleware(
        Guard, token=token, max_body_bytes=settings.serving.max_body_bytes, json_paths={"/predict"}
    )
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: refusals count too
    _add_error_handlers(app)
    _add_status_routes(app, store, metrics)
    _add_predict_route(app, schemas, settings, metrics)
    _document_by_id(app, *by_id_schemas(schema, declared, settings.serving.max_records))
    return app


_REF = "#/components/schemas/"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MLError)
    async def _ml_error(request: Request, exc: MLError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid(exc.errors())

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "internal error (see the server log)"}, status_code=500)


def _add_status_routes(app: FastAPI, store: OnlineStore, metrics: Metrics) -> None:
    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process is up (never authenticated)."""
        return {"status": "ok"}

    @app.get(
        "/ready",
        responses={
            503: {"description": "The model is not loaded yet, or the online store is down"}
        },
    )
    async def ready() -> Response:
        """Readiness: 200 once this worker has loaded its model and while the online store
        answers."""
        served: Served | None = app.state.served
        if served is None:
            return JSONResponse({"error": "model not loaded yet"}, status_code=503)
        try:
            await run_in_threadpool(store.ping)  # a stalled store must not hold the event loop
        except OnlineStoreError as exc:
            return JSONResponse({"error": exc.message}, status_code=503)
        return JSONResponse({"status": "ready", "model_version": served.target.model_version})

    @app.get("/metadata")
    async def get_metadata() -> dict[str, Any]:
        """The model behind /predict: recipe, version, run, feature schema, training metrics."""
        metadata: dict[str, Any] = app.state.metadata
        return metadata

    @app.get("/metrics", response_class=PlainTextResponse)
    async def get_metrics() -> Response:
        """Prometheus metrics: requests by route and status, latency, online-store lookups and
        misses, the served model (`ml_model_info`); summed over the workers."""
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)


def _add_predict_route(
    app: FastAPI, schemas: Schemas, settings: Settings, metrics: Metrics
) -> None:
    async def predict(body: Any) -> Response:
        """Score records: one `score` per record, in order (uplift: CATE; classification:
        probability; regression: value). Or, by id: `{"context": {...}, "entities":
        [{key: value}, ...]}` scores each entity with its features from the online store (as
        `ml materialize` wrote them); an entity the store lacks gets `"score": null` and an
        `error`."""
        served: Served | None = app.state.served  # once: a reload never splits a request
        if served is None:
            return JSONResponse({"error": "model not loaded yet"}, status_code=503)
        scores = score_records(served.model, schemas, body.records)
        out = []
        for i, record in enumerate(body.records):
            item = {
                key: getattr(record, attr)
                for key, attr in schemas.keys
                if attr in record.model_fields_set
            }
            item["score"] = scores[i]
            out.append(item)
        payload = f'{served.head}, "predictions": {json.dumps(out)}}}'
        return Response(payload, media_type="application/json")

    async def by_id(body: dict[str, Any]) -> Response:
        served: Served | None = app.state.served
        if served is None:
            return JSONResponse({"error": "model not loaded yet"}, status_code=503)
        # the lookup in a worker thread: it waits on the store (up to its timeout), and
        # /health, /ready and records must not wait behind it; the scoring, like records', here
        request, found = await run_in_threadpool(
            look_up,
            body,
            served,
            app.state.store,
            settings.serving.max_records,
            metrics.observe_lookup,
        )
        return answer(served, request, found)

    predict.__annotations__ = {"body": schemas.request, "return": Response}
    record_fields = frozenset(name for name, _ in [*schemas.features, *schemas.keys])
    app.router.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        response_model=schemas.response,
        responses={
            400: {
                "description": "The body cannot be decoded (not UTF-8), or a Content-Type or "
                "Authorization header was sent twice"
            },
            401: {"description": "Missing or wrong bearer token"},
            413: {"description": f"Body over {settings.serving.max_body_bytes} bytes"},
            404: {"description": "By id: the context was never materialized for the model"},
            409: {"description": "By id: the store's set is of another model version"},
            415: {
                "description": "Content-Type is not application/json, its charset not UTF-8, "
                "or the body is compressed (Content-Encoding)"
            },
            422: {
                "description": f"Invalid records (the first {MAX_ERRORS} errors, and "
                "error_count), or a non-finite score; by id: a malformed context or entity"
            },
            503: {"description": "The model is not loaded yet, or the online store is down"},
        },
        route_class_override=checked_body_route(record_fields, by_id),
    )


def _document_by_id(app: FastAPI, request: type[BaseModel], response: type[BaseModel]) -> None:
    """/predict takes records or, by id, a context and entities; `by_id` parses the second
    itself, so FastAPI's document knows only the first: both go in, as alternatives."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            for model, js in (
                (request, request.model_json_schema(ref_template=_REF + "{model}")),
                (response, response.model_json_schema(ref_template=_REF + "{model}")),
            ):
                components.update(js.pop("$defs", {}))
                components[model.__name__] = js
            post = spec["paths"]["/predict"]["post"]
            for part, model in (
                (post["requestBody"]["content"]["application/json"], request),
                (post["responses"]["200"]["content"]["application/json"], response),
            ):
                part["schema"] = {"anyOf": [part["schema"], {"$ref": _REF + model.__name__}]}
            return spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _metadata(schema: TrainingSchema, target: ResolvedModel, settings: Settings) -> dict[str, Any]:
    features = []
    for name, kind in schema.features.items():
        item: dict[str, Any] = {"name": name, "kind": kind, "nullable": True}
        if name in schema.categories:
            item["categories"] = schema.categories[name]
        features.append(item)
    return {
        "recipe": schema.recipe,
        "task": schema.task,
        "model_name": target.model_name,
        "model_version": target.model_version,
        "run_id": target.run_id,
        "model_uri": target.model_uri,
        "entity_keys": schema.entity_keys,
        "features": features,
        "metrics": {k: v for k, v in target.metrics.items() if math.isfinite(v)},
        "limits": {
            "max_records": settings.serving.max_records,
            "max_body_bytes": settings.serving.max_body_bytes,
        },
    }


def _one_thread() -> None:
    """One scoring thread per worker: XGBoost's OpenMP pool spinning against the other workers
    (and the event loop) costs tens of ms at p99 for a single row."""
    with contextlib.suppress(Exception):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
