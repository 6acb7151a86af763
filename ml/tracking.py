"""MLflow: where runs go, checking the store before work starts, logging and registering.

The embedded default is a SQLite file and a local artifact folder under the project root;
relative paths in config are resolved against the root, not the current directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ml.config import Settings
from ml.errors import TrackingError, one_line

HTTP_TIMEOUT_SECONDS = "10"


SQLITE_MAGIC = b"SQLite format 3\x00"
TRACKING = "mlflow.tracking_uri (MLFLOW_TRACKING_URI)"
ARTIFACTS = "mlflow.artifact_location (ML_ARTIFACT_LOCATION)"


def tracking_uri(settings: Settings, *, create: bool = False) -> str:
    """The configured store as MLflow takes it. A local store must exist unless `create`
    (`ml train` and `ml tune` create it; commands that only read or add to one refuse a
    missing store rather than leave a new, empty one behind)."""
    uri = settings.mlflow.tracking_uri
    if uri.startswith("sqlite:///"):
        raw = uri.removeprefix("sqlite:///")
        path = Path(raw) if uri.startswith("sqlite:////") else settings.path(raw)
        _check_sqlite_store(path, create)
        return f"sqlite:///{path}"
    if "://" not in uri:
        folder = settings.path(uri)
        _require_store(folder, create)
        return folder.as_uri()
    if uri.startswith("file:"):
        _require_store(Path(unquote(urlparse(uri).path)), create)
    return uri


def artifact_root(settings: Settings) -> str | None:
    loc = settings.mlflow.artifact_location
    if not loc:
        return None
    if "://" in loc:
        return loc.rstrip("/")
    return settings.path(loc).as_uri()


def _check_sqlite_store(path: Path, create: bool) -> None:
    """The store's file is an SQLite database (or, with `create`, not there yet) in a folder ml
    can write."""
    if path.parent.is_dir() or not path.parent.exists():  # else the write check says so
        _require_store(path, create)
    _writable_folder(path.parent, TRACKING)
    if not path.exists():
        return
    if not path.is_file():
        raise TrackingError(f"{TRACKING}: {path} is not a regular file")
    with open(path, "rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if head and head != SQLITE_MAGIC:
        raise TrackingError(
            f"{TRACKING}: {path} is not an SQLite database (the MLflow store must be one, "
            "or a tracking server's URL)"
        )


def _require_store(path: Path, create: bool) -> None:
    if not create and not path.exists():
        raise TrackingError(
            f"{TRACKING}: {path} does not exist (`ml train` creates the MLflow store; "
            "point the setting at the store the model was trained in)"
        )


def _check_artifact_folder(settings: Settings) -> None:
    loc = settings.mlflow.artifact_location
    if loc and "://" not in loc:
        _writable_folder(settings.path(loc), ARTIFACTS)


def _writable_folder(folder: Path, setting: str) -> None:
    """Create the folder if needed and prove a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".ml-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise TrackingError(
            f"{setting}: cannot write in {folder} ({exc.strerror or one_line(exc)})"
        ) from None


def configure(settings: Settings, *, create: bool = False) -> Any:
    """Point MLflow at the configured store and fail fast if it cannot be reached; a local
    store that does not exist is created only with `create` (see `tracking_uri`)."""
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

    uri = tracking_uri(settings, create=create)
    _check_artifact_folder(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(settings.mlflow.registry_uri or uri)
    # A new SQLite store creates its tables on first use; two processes doing that at once
    # collide, so the first use is serialized on a lock beside the file.
    with _first_use_lock(uri):
        try:
            client = MlflowClient()
            client.search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - any backend failure means unreachable
            raise TrackingError(
                f"MLflow tracking store {_redact(uri)} is unreachable: {one_line(exc, 300)}"
            ) from None
    return client


@contextlib.contextmanager
def _first_use_lock(uri: str, timeout: float = 120.0) -> Iterator[None]:
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl
    import time

    from ml.locks import wait_for_lock

    path = Path(uri.removeprefix("sqlite:///"))
    with open(path.with_name(path.name + ".lock"), "a+") as handle:
        busy = TrackingError(
            f"{TRACKING}: {path} is being set up by another process for over "
            f"{timeout:g}s; retry when it has finished"
        )
        wait_for_lock(handle, time.monotonic() + timeout, busy)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def experiment_id(settings: Settings, name: str) -> str:
    import mlflow

    full = f"{settings.mlflow.experiment_prefix}{name}"
    exp = mlflow.get_experiment_by_name(full)
    if exp is not None:
        return exp.experiment_id
    from mlflow.exceptions import MlflowException

    root = artifact_root(settings)
    try:
        return str(
            mlflow.create_experiment(full, artifact_location=f"{root}/{full}" if root else None)
        )
    except MlflowException:
        exp = mlflow.get_experiment_by_name(full)  # another process created it meanwhile
        if exp is None:
            raise
        return str(exp.experiment_id)


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
