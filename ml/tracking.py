"""MLflow: where runs go, checking the store before work starts, logging and registering.

The embedded default is a SQLite file and a local artifact folder under the project root;
relative paths in config are resolved against the root, not the current directory.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ml.config import Settings
from ml.errors import TrackingError, one_line

HTTP_TIMEOUT_SECONDS = "10"


def tracking_uri(settings: Settings) -> str:
    uri = settings.mlflow.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = settings.path(uri.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if "://" not in uri:
        return settings.path(uri).as_uri()
    return uri


def artifact_root(settings: Settings) -> str | None:
    loc = settings.mlflow.artifact_location
    if not loc:
        return None
    if "://" in loc:
        return loc.rstrip("/")
    return settings.path(loc).as_uri()


def configure(settings: Settings) -> Any:
    """Point MLflow at the configured store and fail fast if it cannot be reached."""
    # Bounded retries and timeouts: an unreachable server must fail in seconds, not minutes.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_SECONDS)
    # Requirements are pinned explicitly at log time: no uv export, no copies of uv.lock.
    os.environ.setdefault("MLFLOW_UV_AUTO_DETECT", "false")
    os.environ.setdefault("MLFLOW_LOG_UV_FILES", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(settings.mlflow.registry_uri or uri)
    client = MlflowClient()
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any backend failure means unreachable
        raise TrackingError(
            f"MLflow tracking store {_redact(uri)} is unreachable: {one_line(exc, 300)}"
        ) from None
    return client


def experiment_id(settings: Settings, name: str) -> str:
    import mlflow

    full = f"{settings.mlflow.experiment_prefix}{name}"
    exp = mlflow.get_experiment_by_name(full)
    if exp is not None:
        return exp.experiment_id
    root = artifact_root(settings)
    return mlflow.create_experiment(full, artifact_location=f"{root}/{full}" if root else None)


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested recipe -> {'model.params.max_depth': '4', ...} for MLflow params."""
    out: dict[str, str] = {}
    if isinstance(data, Mapping):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(data, list) and any(isinstance(v, Mapping | list) for v in data):
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}{i}."))
    else:
        text = json.dumps(data, default=str) if isinstance(data, list) else str(data)
        out[prefix.rstrip(".")] = text[:5000]
    return out


def git_commit(root: Path) -> str:
    try:
        command = ["git", "-C", str(root), "rev-parse", "HEAD"]  # noqa: S607 - git on PATH
        out = subprocess.run(  # noqa: S603 - a fixed command, no shell
            command, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _redact(uri: str) -> str:
    from ml.config import redact

    return str(redact(uri))
