"""`ml serve`: online scoring over HTTP with FastAPI.

Each worker loads the training run's unified pyfunc once, at startup, and scores straight from
the JSON records: one small numpy column per feature into the same `ScoringModel` batch scoring
uses, no DataFrame per request. The request schema is generated from the training schema, so
/docs shows every feature's real type and bad records get field-level 422s before the model
sees them. Each worker scores on one thread; use --workers to use more cores.

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
import hmac
import json
import math
import os
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    create_model,
)

from ml.config import Settings
from ml.errors import ConfigError, ContractError, MLError, RunNotFoundError, TrackingError, one_line
from ml.model import ScoringModel, TrainingSchema, predict_matrix
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


# -- request and response schemas, generated from the training schema ----------------------------


def _whole(value: Any) -> Any:
    """5.0 is an integer in JSON Schema: accept it as 5 (5.5 stays a float and is refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# Bounds live in the schema, so /docs and clients see them. Numbers reach the model as float64
# and then float32: ints beyond 2**53 would be silently rounded, floats beyond float32's range
# would be infinite.
_INT_MAX = 2**53 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT = Annotated[float, Field(allow_inf_nan=False, ge=-_FLOAT32_MAX, le=_FLOAT32_MAX)] | None
_FEATURE_TYPES: dict[str, Any] = {
    "int": Annotated[int, Field(ge=-_INT_MAX, le=_INT_MAX), BeforeValidator(_whole)] | None,
    "float": _FLOAT,
    "decimal": _FLOAT,
    "bool": bool | None,
    "string": str | None,
}


_EXAMPLE = {"int": 0, "float": 0.0, "decimal": 0.0, "bool": False, "string": ""}


@dataclass(frozen=True)
class Schemas:
    request: type[BaseModel]
    response: type[BaseModel]
    features: list[tuple[str, str]]  # (feature, attribute on the record model)
    keys: list[tuple[str, str]]  # (entity key, attribute) for keys that are not features


def build_schemas(schema: TrainingSchema, max_records: int) -> Schemas:
    """Pydantic models for /predict: every feature required (null allowed, imputation handles
    it), strict types, unknown fields refused. Attribute names are positional so any column name
    works; the JSON names are the aliases."""
    fields: dict[str, Any] = {}
    features, keys = [], []
    for i, (name, kind) in enumerate(schema.features.items()):
        if kind not in _FEATURE_TYPES:
            raise ContractError(f"training schema: feature {name}: unknown kind '{kind}'")
        known = schema.categories.get(name)
        about = f"{kind} feature" + (f"; known values: {', '.join(known)}" if known else "")
        fields[f"f{i}"] = (_FEATURE_TYPES[kind], Field(alias=name, description=about))
        features.append((name, f"f{i}"))
    for i, name in enumerate(k for k in schema.entity_keys if k not in schema.features):
        about = "entity key (optional), echoed back with the score"
        fields[f"k{i}"] = (StrictInt | StrictStr | None, Field(None, alias=name, description=about))
        keys.append((name, f"k{i}"))
    example = {
        name: (schema.categories.get(name) or [_EXAMPLE[kind]])[0]
        for name, kind in schema.features.items()
    }
    record = create_model(
        "Record",
        __config__=ConfigDict(
            extra="forbid", strict=True, json_schema_extra={"examples": [example]}
        ),
        **fields,
    )
    request = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        records=(list[record], Field(min_length=1, max_length=max_records)),  # type: ignore[valid-type]
    )
    prediction = create_model(
        "Prediction",
        score=(float, ...),
        **{attr: (int | str | None, Field(None, alias=key)) for key, attr in keys},
    )
    response = create_model(
        "PredictResponse",
        model_name=(str, ...),
        model_version=(str | None, ...),
        run_id=(str, ...),
        predictions=(list[prediction], ...),  # type: ignore[valid-type]
    )
    return Schemas(request, response, features, keys)


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
        _Guard, token=token, max_body_bytes=settings.serving.max_body_bytes, json_paths={"/predict"}
    )

    @app.exception_handler(MLError)
    async def _ml_error(request: Request, exc: MLError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own body, minus what JSON cannot carry (a NaN echoed back as the input)
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

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


def score_records(scoring: ScoringModel, schemas: Schemas, records: list[Any]) -> list[float]:
    """Validated records -> scores, refusing anything non-finite on the way in or out."""
    columns = {name: [getattr(r, attr) for r in records] for name, attr in schemas.features}
    with np.errstate(over="ignore"):  # overflow to inf is caught right below, per record
        X = scoring.preprocessor.transform(columns)
    inf = np.isinf(X)
    if inf.any():
        row, col = (int(v[0]) for v in np.nonzero(inf))
        raise ContractError(
            f"records[{row}]: {scoring.preprocessor.feature_names[col]} is too large to score"
        )
    scores = predict_matrix(scoring.estimator, scoring.schema.task, X).tolist()
    for i, s in enumerate(scores):
        if not math.isfinite(s):
            raise ContractError(f"records[{i}]: the model produced a non-finite score ({s})")
    return scores


def api_token(settings: Settings) -> str | None:
    """The bearer token every endpoint but /health requires, or None when auth is off."""
    name = settings.serving.token_env
    if not name:
        return None
    token = os.environ.get(name, "").strip()
    if not token:
        raise ConfigError(
            f"serving.token_env is {name} but ${name} is empty or unset: export the API token "
            "there, or unset serving.token_env to serve without auth"
        )
    return token


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


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _one_thread() -> None:
    """One scoring thread per worker: XGBoost's OpenMP pool spinning against the other workers
    (and the event loop) costs tens of ms at p99 for a single row."""
    with contextlib.suppress(Exception):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)


class _Guard:
    """Auth, then body size and content type, before FastAPI parses anything. The body is read
    here (counting the bytes actually streamed, not only Content-Length) and replayed."""

    def __init__(self, app: Any, token: str | None, max_body_bytes: int, json_paths: set[str]):
        self.app = app
        self.token = token.encode() if token else None
        self.limit = max_body_bytes
        self.json_paths = json_paths

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.token is not None and scope["path"] != "/health":
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
                return await _error(
                    send,
                    401,
                    "missing or wrong bearer token",
                    [(b"www-authenticate", b'Bearer realm="ml"')],
                )
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await _error(send, 413, f"request body over {self.limit} bytes")
        if scope["path"] in self.json_paths:
            media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if media != b"application/json" and not media.endswith(b"+json"):
                return await _error(send, 415, "expected Content-Type: application/json")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await _error(send, 413, f"request body over {self.limit} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


async def _error(
    send: Callable, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


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
