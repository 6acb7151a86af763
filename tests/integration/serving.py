"""`ml serve` as a real uvicorn process on 127.0.0.1, for the end-to-end serving tests
(test_serve, test_load, test_fuzz). pytest puts this folder on sys.path: `import serving`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log
        self.client = httpx.Client(base_url=url, timeout=30.0)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only our processes
                self.proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(warehouse_env: dict[str, str], **extra: str) -> dict[str, str]:
    """For an `ml` subprocess: this environment minus the developer's ML settings, plus the
    test's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ML_", "MLFLOW_", "BQ_")) and k not in {"APP_ENV", "DBT_TARGET"}
    }
    return {**env, **warehouse_env, **extra}


def start_server(args: list[str], env: dict[str, str], log_dir: Path) -> Server:
    """`ml serve ARGS --port <free>` in its own session; returns once /ready answers 200."""
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ml", "serve", *args, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    headers = (
        {"Authorization": f"Bearer {env[env['ML_API_TOKEN_ENV']]}"}
        if "ML_API_TOKEN_ENV" in env
        else {}
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ml serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if server.client.get("/ready", headers=headers, timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise AssertionError(f"ml serve not ready within {START_TIMEOUT}s:\n{log.read_text()}")


def _processes() -> list[tuple[int, list[str], bytes]]:
    """(pid, the /proc stat fields after the command name, command line) of live processes:
    fields[0] is the state, [1] the parent pid, [3] the session."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[0] != "Z":  # a zombie has exited; only its parent's wait is missing
            out.append((int(stat.parent.name), fields, cmdline))
    return out


def worker_pids(parent: int) -> list[int]:
    """The uvicorn worker processes (multiprocessing spawns) of `parent`."""
    return [p for p, f, cmd in _processes() if int(f[1]) == parent and b"spawn_main" in cmd]


def session_pids(session: int) -> list[int]:
    """Every live process in `session`: a server from start_server leads its own."""
    return [p for p, f, _ in _processes() if int(f[3]) == session]
