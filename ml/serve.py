"""`ml serve`: online scoring over HTTP with FastAPI.

Resolves the model reference against the registry, builds the app for that one model, and runs
it under uvicorn. Each worker loads the training run's unified pyfunc once, at startup, and scores
on one thread; use --workers to use more cores. The request schema and scoring live in
`ml.serve_schema`, the auth, body-size and content-type checks in `ml.serve_guard`.

Endpoints: POST /predict, GET /health (liveness, never authenticated), GET /ready, GET /metadata,
/docs. Records carry the features, plus optionally the recipe's entity keys, which are echoed
back next to each score. Refusals: 400 (a body that is not UTF-8), 401 (bearer token, when
serving.token_env is set), 413 (body over serving.max_body_bytes), 415 (not application/json),
422 (FastAPI's field-level body for invalid records, including ints beyond 2**53 and floats
beyond float32's range; `{"error"}` naming the record for a value the model cannot take or a
non-finite score), 503 (model not loaded yet); MLErrors map to their http_status as
`{"error": message}`. uvicorn's access log is off (a log line costs more than a request).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from ml.config import Settings
from ml.errors import ContractError, MLError, RunNotFoundError, TrackingError, one_line
from ml.model import ScoringModel, TrainingSchema
from ml.serve_guard import Guard, api_token
from ml.serve_schema import build_schemas, json_safe, score_records
from ml.tracking import ModelRef

ENV_RUN_ID = "ML_SERVE_RUN_ID"  # what a worker process serves, set by `run` for its workers
ENV_MODEL = "ML_SERVE_MODEL"


@dataclass(frozen=True)
class Target:
    """A reference resolved against the registry: exactly which model every worker loads."""

    uri: str
    run_id: str
    model_name: str
    model_version: str | None
    metrics: dict[str, float] = field(default_factory=dict)

    def pinned(self) -> ModelRef:
        """The same model by an immutable reference (a moving alias must not split workers)."""
        if self.uri.startswith(f"models:/{self.model_name}/"):
            return ModelRef(name=self.model_name, alias_or_version=self.model_version)
        return ModelRef(run_id=self.run_id)


def resolve(settings: Settings, ref: ModelRef) -> Target:
    import mlflow
    from mlflow.tracking import MlflowClient

    from ml import tracking

    tracking.configure(settings)
    if ref.name:
        mv = tracking.resolve_model_version(ref.name, ref.alias_or_version)
        run_id = mv.run_id or (mv.tags or {}).get("run_id")
        if not run_id:
            raise RunNotFoundError(f"model '{ref.name}' version {mv.version} has no source run")
        run = tracking.get_run(run_id)
        name, version, uri = mv.name, str(mv.version), f"models:/{mv.name}/{mv.version}"
    else:
        assert ref.run_id is not None
        run_id = ref.run_id
        run = tracking.get_run(run_id)
        logged = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run_id}' AND name = 'model'",
            output_format="list",
        )
        if not logged:
            raise RunNotFoundError(f"run '{run_id}' has no logged model (was it made by ml train?)")
        versions = MlflowClient().search_model_versions(f"run_id = '{run_id}'")
        latest = max(versions, key=lambda v: int(v.version)) if versions else None
        name = latest.name if latest else run.data.tags.get("ml.recipe", "model")
        version = str(latest.version) if latest else None
        uri = f"models:/{logged[0].model_id}"
    if run.info.status != "FINISHED" or run.data.tags.get("ml.kind", "train") != "train":
        raise RunNotFoundError(
            f"run '{run_id}' is not a finished training run (status {run.info.status})"
        )
    return Target(uri, run_id, name, version, dict(run.data.metrics))


def read_schema(target: Target) -> TrainingSchema:
    """The training schema alone (a few KB): enough to build the routes before the model loads."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=target.run_id, artifact_path="schema/training_schema.json", dst_path=tmp
            )
            with open(path) as f:
                return TrainingSchema.from_dict(json.load(f))
        except Exception as exc:  # noqa: BLE001 - missing or unreadable artifact
            raise TrackingError(
                f"run '{target.run_id}': cannot read schema/training_schema.json ({one_line(exc, 300)})"
            ) from None


def load(target: Target) -> ScoringModel:
    """The unified pyfunc's ScoringModel: preprocessor and estimator as training logged them."""
    import mlflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's dependency and type-hint advice
        from ml.pyfunc import PyfuncScoringModel

        try:
            python_model = mlflow.pyfunc.load_model(target.uri).unwrap_python_model()
        except Exception as exc:  # noqa: BLE001 - any failure to load is the store's problem
            raise TrackingError(f"cannot load {target.uri}: {one_line(exc, 300)}") from None
    if not isinstance(python_model, PyfuncScoringModel):
        raise ContractError(f"{target.uri} is not a model logged by ml train")
    return python_model.model


# -- the app -----------------------------------------------------------------------------------


def create_app(
    settings: Settings,
    model_ref: ModelRef,
    *,
    model: ScoringModel | None = None,
    target: Target | None = None,
) -> FastAPI:
    """The scoring API for one model. The model loads in the lifespan (once per worker) unless
    it is passed in already loaded, with its `target`."""
    token = api_token(settings)
    target = target or resolve(settings, model_ref)
    schema = model.schema if model is not None else read_schema(target)
    schemas = build_schemas(schema, settings.serving.max_records)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _one_thread()
        if app.state.model is None:
            loaded = load(target)
            if loaded.schema != schema:
                raise ContractError(f"{target.uri}: its training schema differs from the run's")
            app.state.model = loaded
        # The loaded libraries and model are permanent: keep the collector from re-walking them
        # (a full collection over them is a p99 spike of tens of ms).
        gc.collect()
        gc.freeze()
        yield

    app = FastAPI(
        title=f"ml serve: {schema.recipe}",
        version=target.model_version or target.run_id,
        description=f"{schema.task} model {target.model_name}, run {target.run_id}",
        lifespan=lifespan,
    )
    app.state.model = model
    app.add_middleware(
        Guard, token=token, max_body_bytes=settings.serving.max_body_bytes, json_paths={"/predict"}
    )

    @app.exception_handler(MLError)
    async def _ml_error(request: Request, exc: MLError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own body, minus what JSON cannot carry (a NaN echoed back as the input)
        return JSONResponse({"detail": json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "internal error (see the server log)"}, status_code=500)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process is up (never authenticated)."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"description": "The model is not loaded yet"}})
    async def ready() -> Response:
        """Readiness: 200 once this worker has loaded its model."""
        if app.state.model is None:
            return JSONResponse({"error": "model not loaded yet"}, status_code=503)
        return JSONResponse({"status": "ready", "model_version": target.model_version})

    metadata = _metadata(schema, target, settings)

    @app.get("/metadata")
    async def get_metadata() -> dict[str, Any]:
        """The model behind /predict: recipe, version, run, feature schema, training metrics."""
        return metadata

    head = json.dumps(
        {
            "model_name": target.model_name,
            "model_version": target.model_version,
            "run_id": target.run_id,
        }
    )[:-1]

    async def predict(body: Any) -> Response:
        """Score records: one `score` per record, in order (uplift: CATE; classification:
        probability; regression: value)."""
        scoring: ScoringModel | None = app.state.model
        if scoring is None:
            return JSONResponse({"error": "model not loaded yet"}, status_code=503)
        scores = score_records(scoring, schemas, body.records)
        out = []
        for i, record in enumerate(body.records):
            item = {
                key: getattr(record, attr)
                for key, attr in schemas.keys
                if attr in record.model_fields_set
            }
            item["score"] = scores[i]
            out.append(item)
        payload = f'{head}, "predictions": {json.dumps(out)}}}'
        return Response(payload, media_type="application/json")

    predict.__annotations__ = {"body": schemas.request, "return": Response}
    app.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        response_model=schemas.response,
        responses={
            400: {"description": "The body cannot be decoded (not UTF-8)"},
            401: {"description": "Missing or wrong bearer token"},
            413: {"description": f"Body over {settings.serving.max_body_bytes} bytes"},
            415: {"description": "Content-Type is not application/json"},
            422: {"description": "Invalid records, or a non-finite score"},
        },
    )
    return app


def _metadata(schema: TrainingSchema, target: Target, settings: Settings) -> dict[str, Any]:
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
        "model_uri": target.uri,
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


# -- running it --------------------------------------------------------------------------------


def run(
    settings: Settings,
    model_ref: ModelRef,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted. Everything that can fail (token, registry, artifacts) fails here,
    before binding, so a bad reference is one error line, not a worker traceback."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before XGBoost loads, inherited by workers
    import uvicorn

    host = host or settings.serving.host
    port = settings.serving.port if port is None else port
    workers = workers or settings.serving.workers
    api_token(settings)
    target = resolve(settings, model_ref)
    model = load(target)
    if announce:
        version = f" version {target.model_version}" if target.model_version else ""
        announce(
            f"serving {target.model_name}{version} (run {target.run_id}) on http://{host}:{port} "
            f"with {workers} worker{'s' if workers > 1 else ''}"
        )
    if workers == 1:
        app = create_app(settings, model_ref, model=model, target=target)
        uvicorn.run(app, host=host, port=port, access_log=False)
        return
    del model  # each worker loads its own copy
    pinned = target.pinned()
    os.environ.pop(ENV_RUN_ID, None)
    os.environ.pop(ENV_MODEL, None)
    if pinned.run_id:
        os.environ[ENV_RUN_ID] = pinned.run_id
    else:
        os.environ[ENV_MODEL] = f"{pinned.name}/{pinned.alias_or_version}"
    os.environ["APP_ENV"] = settings.env
    os.environ["ML_PROJECT_DIR"] = str(settings.root)
    uvicorn.run(
        "ml.serve:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
    )


def app_from_env() -> FastAPI:
    """The app for one worker process, from what `run` put in the environment."""
    from ml.config import load_settings

    ref = ModelRef.parse(os.environ.get(ENV_RUN_ID), os.environ.get(ENV_MODEL))
    return create_app(load_settings(), ref)
