"""Running the API: resolve the model once, check everything that can fail before binding, then
uvicorn with one or more workers, each loading the same pinned model version."""

from __future__ import annotations

import os
from collections.abc import Callable

from fastapi import FastAPI

from ml import registry, tracking
from ml.config import Settings
from ml.registry import ModelRef, ResolvedModel
from ml.serving.app import create_app
from ml.serving.guard import api_token

ENV_RUN_ID = "ML_SERVE_RUN_ID"  # what a worker process serves, set by `run` for its workers
ENV_MODEL = "ML_SERVE_MODEL"


def resolve(settings: Settings, ref: ModelRef) -> ResolvedModel:
    """The finished training run behind `ref`, in the configured tracking store."""
    tracking.configure(settings)
    return registry.resolve(ref)


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
    model = registry.load_pyfunc(target)
    if announce:
        version = f" version {target.model_version}" if target.model_version else ""
        plural = "s" if workers > 1 else ""
        announce(
            f"serving {target.model_name}{version} (run {target.run_id}) on http://{host}:{port} "
            f"with {workers} worker{plural}"
        )
    if workers == 1:
        app = create_app(settings, target, model=model)
        uvicorn.run(app, host=host, port=port, access_log=False)
        return
    del model  # each worker loads its own copy
    _pin_for_workers(settings, target)
    uvicorn.run(
        "ml.serving.run:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
    )


def _pin_for_workers(settings: Settings, target: ResolvedModel) -> None:
    """Worker processes read what to serve from the environment: the same version for all."""
    pinned = target.pinned()
    os.environ.pop(ENV_RUN_ID, None)
    os.environ.pop(ENV_MODEL, None)
    if pinned.run_id:
        os.environ[ENV_RUN_ID] = pinned.run_id
    else:
        os.environ[ENV_MODEL] = f"{pinned.name}/{pinned.alias_or_version}"
    os.environ["APP_ENV"] = settings.env
    os.environ["ML_PROJECT_DIR"] = str(settings.root)


def app_from_env() -> FastAPI:
    """The app for one worker process, from what `run` put in the environment."""
    from ml.config import load_settings

    settings = load_settings()
    ref = ModelRef.parse(os.environ.get(ENV_RUN_ID), os.environ.get(ENV_MODEL))
    return create_app(settings, resolve(settings, ref))
