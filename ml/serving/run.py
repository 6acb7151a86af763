"""Running the API: resolve the model once, check everything that can fail, bind the port, and
only then announce and serve: uvicorn with the app in this process, or worker processes that
each load the same pinned model version and exit when this process dies."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import multiprocessing
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

from fastapi import FastAPI

from ml import registry, tracking
from ml.config import Settings
from ml.errors import ConfigError
from ml.registry import ModelRef, ResolvedModel
from ml.serving.app import create_app
from ml.serving.guard import api_token
from ml.serving.metrics import MULTIPROC_ENV
from ml.serving.reload import watches
from ml.textio import elide

ENV_RUN_ID = "ML_SERVE_RUN_ID"  # what a worker process serves, set by `run` for its workers
ENV_MODEL = "ML_SERVE_MODEL"
ENV_WATCH = "ML_SERVE_WATCH"  # NAME@ALIAS each worker keeps checking (hot reload)
WORKER_APP = "ml.serving.run:app_from_env"
ORPHAN_GRACE_SECONDS = 5.0  # a worker whose parent died: graceful shutdown, then exit anyway
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def ref_to_serve(settings: Settings, run_id: str | None, model: str | None) -> ModelRef:
    """--run-id or --model, else serving.model from config."""
    if not run_id and not model:
        model = settings.serving.model
        if not model:
            raise ConfigError(
                "give --run-id ID or --model NAME[@ALIAS], or set serving.model in config"
            )
    return ModelRef.parse(run_id, model)


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
    """Serve until interrupted. Everything that can fail (host, token, registry, artifacts, the
    port) fails here, before the announcement, so a mistake is one error line, not a worker
    traceback."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before XGBoost loads, inherited by workers
    host = host or settings.serving.host
    port = settings.serving.port if port is None else port
    workers = workers or settings.serving.workers
    check_host(host, port)
    api_token(settings)
    target = resolve(settings, model_ref)
    model = registry.load_pyfunc(target)
    watch = model_ref if watches(model_ref) else None
    app = create_app(settings, target, model=model, watch=watch) if workers == 1 else None
    del model  # several workers: each loads its own copy, this one was the check
    with bind(host, port) as sock:
        port = sock.getsockname()[1]  # the port the system chose, for port 0
        if app is None:
            _pin_for_workers(settings, target, watch)
        if announce:
            version = f" version {target.model_version}" if target.model_version else ""
            plural = "s" if workers > 1 else ""
            announce(
                f"serving {target.model_name}{version} (run {target.run_id}) on "
                f"http://{_address(host, port)} with {workers} worker{plural}"
            )
        with _metrics_folder(workers):
            _serve(app, host, sock, workers)


@contextlib.contextmanager
def _metrics_folder(workers: int) -> Iterator[None]:
    """Several workers write their metrics to one temporary folder, which /metrics sums (and
    which is removed when serving ends); one worker keeps them in memory."""
    if workers == 1 or os.environ.get(MULTIPROC_ENV):
        yield
        return
    folder = tempfile.mkdtemp(prefix="ml-serve-metrics-")
    os.environ[MULTIPROC_ENV] = folder
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def check_host(host: str, port: int) -> None:
    """An IP address or a well-formed host name, refused before anything slow happens (and
    before `256.1.1.1` is looked up as a name)."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", host):
        problem = "not a valid IPv4 address"
    elif ":" in host:
        problem = "not a valid IPv6 address"
    elif len(host) > 253 or not _HOST_NAME.fullmatch(host):
        problem = "neither an IP address nor a host name"
    else:
        return
    raise ConfigError(
        f"cannot serve on {_address(host, port)}: {elide(repr(host), 60)} is {problem}"
    )


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port as uvicorn binds one (SO_REUSEADDR, inheritable by worker
    processes), or a ConfigError naming host:port and what is wrong."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        raise ConfigError(f"cannot serve on {_address(host, port)}: {_bind_problem(exc)}") from None
    sock.set_inheritable(True)
    return sock


def _bind_problem(exc: OSError | OverflowError) -> str:
    if isinstance(exc, OverflowError):
        return "the port must be 0-65535"
    if isinstance(exc, socket.gaierror):
        return f"the host name does not resolve ({exc.strerror})"
    known = {
        errno.EADDRINUSE: "the port is already in use",
        errno.EADDRNOTAVAIL: "the address is not one of this machine's",
        errno.EACCES: "permission denied (ports below 1024 need privileges)",
    }
    return known.get(exc.errno or 0, exc.strerror or str(exc))


def _address(host: str, port: int) -> str:
    shown = elide(host, 60)
    return f"[{shown}]:{port}" if ":" in host else f"{shown}:{port}"


def _serve(app: FastAPI | None, host: str, sock: socket.socket, workers: int) -> None:
    """uvicorn on the bound socket: `app` in this process, or WORKER_APP in `workers`
    processes (uvicorn's own supervisor, as `uvicorn.run` uses)."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    port = sock.getsockname()[1]
    if app is None:
        config = uvicorn.Config(
            WORKER_APP, factory=True, host=host, port=port, workers=workers, access_log=False
        )
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[sock]).run()
        return
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, access_log=False))
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)  # as uvicorn.run: what failed is in uvicorn's log


def _pin_for_workers(settings: Settings, target: ResolvedModel, watch: ModelRef | None) -> None:
    """Worker processes read what to serve from the environment: the same version for all, and
    the alias each keeps checking."""
    pinned = target.pinned()
    for name in (ENV_RUN_ID, ENV_MODEL, ENV_WATCH):
        os.environ.pop(name, None)
    if watch is not None:
        os.environ[ENV_WATCH] = f"{watch.name}@{watch.alias_or_version}"
    if pinned.run_id:
        os.environ[ENV_RUN_ID] = pinned.run_id
    else:
        os.environ[ENV_MODEL] = f"{pinned.name}/{pinned.alias_or_version}"
    os.environ["APP_ENV"] = settings.env
    os.environ["ML_PROJECT_DIR"] = str(settings.root)


def app_from_env() -> FastAPI:
    """The app for one worker process, from what `run` put in the environment."""
    from ml.config import load_settings

    exit_with_parent()
    settings = load_settings()
    ref = ModelRef.parse(os.environ.get(ENV_RUN_ID), os.environ.get(ENV_MODEL))
    watched = os.environ.get(ENV_WATCH)
    watch = ModelRef.parse(None, watched) if watched else None
    return create_app(settings, resolve(settings, ref), watch=watch)


def exit_with_parent() -> None:
    """In a worker process: shut down when the supervisor dies, even by SIGKILL (which it cannot
    pass on), instead of living on as an orphan that holds the port. multiprocessing's parent
    sentinel turns readable when the parent exits, so nothing polls."""
    parent = multiprocessing.parent_process()
    if parent is None:  # not a multiprocessing child: nothing to watch
        return

    def watch() -> None:
        parent.join()
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown
        time.sleep(ORPHAN_GRACE_SECONDS)
        os._exit(1)  # still here: a request or the startup did not finish in time

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
