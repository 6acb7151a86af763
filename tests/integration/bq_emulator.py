"""A local BigQuery API for the prod-cycle tests: `bqemulator` (REST + gRPC on loopback, DuckDB
inside) in its own virtualenv, so its pinned duckdb never meets the project's.

Everything the emulator needs that real BigQuery does not lives here, not in `ml/`: its
virtualenv (`make bqemulator`), DuckDB's spatial and avro extensions installed from their PyPI
wheels into a HOME of its own (it would try to download them otherwise), and the anonymous
dataset its query results land in.

Run with the emulator venv's python, `--install-extensions` does that install step (stdlib
imports only at the top, so it runs without the project's packages).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_ENV = "ML_BQEMULATOR_VENV"
PROJECT = "test-project"
SESSION_DATASET = "_bqemu_anonymous"  # where the emulator puts query results (ibis needs it)


def venv_path() -> Path:
    return Path(os.environ.get(VENV_ENV) or ROOT / ".venv-bqemulator")


def ensure_venv() -> Path:
    """The emulator's virtualenv, created with `make bqemulator` when it is missing."""
    venv = venv_path()
    if not (venv / ".installed").is_file():
        subprocess.run(
            ["make", "--no-print-directory", "bqemulator", f"BQEMULATOR_VENV={venv}"],
            cwd=ROOT,
            check=True,
            timeout=900,
        )
    return venv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Emulator:
    process: subprocess.Popen
    rest_port: int
    grpc_port: int
    log: Path

    @property
    def rest_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def start(workdir: Path, ready_timeout: float = 60.0) -> Emulator:
    """Start the emulator on free loopback ports and wait for /healthz."""
    venv = ensure_venv()
    rest, grpc = _free_port(), _free_port()
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    log = workdir / "bqemulator.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(venv / "home"),  # DuckDB finds the preinstalled extensions there
        "TMPDIR": str(tmp),  # its uploads land here, removed with the test's folder
        "LANG": "C.UTF-8",
    }
    cmd = [
        str(venv / "bin" / "bqemulator"),
        "start",
        "--rest-host",
        "127.0.0.1",
        "--rest-port",
        str(rest),
        "--grpc-host",
        "127.0.0.1",
        "--grpc-port",
        str(grpc),
        "--project",
        PROJECT,
        "--log-level",
        "warning",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    emulator = Emulator(process, rest, grpc, log)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{emulator.rest_endpoint}/healthz", timeout=2) as r:
                if r.status == 200:
                    return emulator
        except OSError:
            time.sleep(0.2)
    emulator.stop()
    tail = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"bqemulator did not become ready on 127.0.0.1:{rest}:\n{tail}")


def install_extensions() -> None:
    """Install DuckDB's spatial and avro extensions from their wheels into $HOME/.duckdb."""
    import duckdb
    import duckdb_extension_avro
    import duckdb_extension_spatial

    Path.home().mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    for module in (duckdb_extension_spatial, duckdb_extension_avro):
        path = next(Path(module.__file__).parent.rglob("*.duckdb_extension"))
        con.execute(f"INSTALL '{path}'")
    con.execute("LOAD spatial")
    print(f"installed DuckDB extensions into {Path.home() / '.duckdb'}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--install-extensions"]:
        install_extensions()
    else:
        sys.exit(f"usage: {sys.argv[0]} --install-extensions")
