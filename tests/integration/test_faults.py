"""Injected faults: `kill -9` of `ml score` mid-write and of `ml train` mid-fit, a warehouse file
held by another process, an MLflow store that is not there. Each leaves what was committed as it
was, says so in one line, and within a bounded time."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from cli_errors import one_line_error
from click.testing import CliRunner
from serving import free_port, process_env  # tests/integration/serving.py
from warehouse_snapshots import contents, fresh_copy  # tests/integration/warehouse_snapshots.py

from ml.cli import main

ROOT = Path(__file__).resolve().parents[2]
RECIPE = "xgboost_x_learner"
TABLE = f"predictions.{RECIPE}"
UPCOMING = "cmp_2026_12"


def _population(path: Path, campaign: str) -> int:
    with duckdb.connect(str(path)) as con:
        return con.execute(
            "select count(*) from analytics_loaders.score_uplift where campaign_id = ?", [campaign]
        ).fetchone()[0]


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ml", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: only ours get killed
    )


def _read_until(proc: subprocess.Popen, pattern: str, timeout: float) -> str:
    """stderr of `proc` up to the first match of `pattern` (the process keeps running)."""
    fd, text = proc.stderr.fileno(), ""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, text):
        left = deadline - time.monotonic()
        assert left > 0, f"no {pattern!r} on stderr within {timeout}s:\n{text}"
        if select.select([fd], [], [], min(left, 0.5))[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"exited with {proc.wait()} before {pattern!r}:\n{text}"
            text += chunk.decode(errors="replace")
    return text


def _kill9(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture
def copy(pristine_warehouse, tmp_path) -> Path:
    """A private, scored copy of the session warehouse."""
    return fresh_copy(pristine_warehouse, tmp_path / "wh")


# -- kill -9 -----------------------------------------------------------------------------------


def test_kill_9_while_scoring_leaves_the_previous_scores(
    copy, warehouse_env, ml_env, trained_x_learner, monkeypatch
) -> None:
    from ml.config import load_settings
    from ml.registry import ModelRef
    from ml.score import score

    run_id = trained_x_learner.run_id
    before = contents(copy)
    assert before["scores"][RECIPE][0] > 0
    env = process_env(warehouse_env, ML_DUCKDB_PATH=str(copy), ML_SCORE_BATCH_SIZE="500")
    proc = _spawn(["score", "--run-id", run_id], env)
    try:
        # progress counts rows written inside the open transaction: kill after the first batch
        progress = _read_until(proc, r"[\d,]+/[\d,]+ rows written", timeout=180)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        _kill9(proc)
    done, total = (
        int(n.replace(",", "")) for n in re.findall(r"([\d,]+)/([\d,]+) rows", progress)[0]
    )
    assert 0 < done < total == _population(copy, UPCOMING)

    # the lock died with the process; the file opens; no partial rows, no leftover tables
    with open(copy.with_name("warehouse.duckdb.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert contents(copy) == before
    _, latest = before["scores"][RECIPE]
    with duckdb.connect(str(copy)) as con:
        assert (
            con.execute(f"select count(*) from {TABLE} where scored_at > ?", [latest]).fetchone()[0]
            == 0
        )

    # scoring again succeeds, and again replaces rather than duplicates
    monkeypatch.setenv("ML_DUCKDB_PATH", str(copy))
    settings = load_settings(root=ROOT)
    counts = []
    for _ in range(2):
        result = score(settings, ModelRef(run_id=run_id))
        assert result.rows == total
        with duckdb.connect(str(copy)) as con:
            counts.append(con.execute(f"select count(*) from {TABLE}").fetchone()[0])
    assert counts[0] == counts[1] == before["scores"][RECIPE][0]


def test_kill_9_while_training_registers_nothing(
    copy, warehouse_env, ml_env, tmp_path, monkeypatch
) -> None:
    from mlflow.tracking import MlflowClient

    store = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(tmp_path / "mlruns" / "artifacts"),
    }
    env = process_env(warehouse_env, ML_DUCKDB_PATH=str(copy), **store)
    proc = _spawn(["train", "--recipe", f"recipes/{RECIPE}.yaml", "--alias", "champion"], env)
    try:
        _read_until(proc, r"fitting XLearner on [\d,]+ rows", timeout=180)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        _kill9(proc)

    uri = store["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.search_registered_models() == []
    assert client.search_model_versions() == []
    experiment = client.get_experiment_by_name(RECIPE)
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs] in (["RUNNING"], ["FAILED"])  # never FINISHED

    # and nothing downstream takes it for a model
    for key, value in store.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ML_DUCKDB_PATH", str(copy))
    result = CliRunner().invoke(main, ["score", "--run-id", runs[0].info.run_id])
    assert result.exit_code == 6  # RunStateError, as `ml serve` says it
    assert one_line_error(result).endswith(
        f"run '{runs[0].info.run_id}' is not a finished training run (status {runs[0].info.status})"
    )


# -- a warehouse file held by someone else -----------------------------------------------------

HOLDERS = {
    # another program with a read-write DuckDB connection (DuckDB's own file lock)
    "duckdb-connection": "import duckdb, sys, time\ncon = duckdb.connect(sys.argv[1])\n",
    # another `ml` process (the advisory lock ml takes before opening the file)
    "ml-lock-file": (
        "import fcntl, sys, time\nf = open(sys.argv[1] + '.lock', 'a+')\n"
        "fcntl.flock(f, fcntl.LOCK_EX)\n"
    ),
}
LOCKED = {
    "duckdb-connection": r"warehouse\.duckdb: locked by another process for 2s \(.*lock.*\); retry when it has finished$",
    "ml-lock-file": r"warehouse\.duckdb: in use by another ml process \(waited for warehouse\.duckdb\.lock\); retry when it has finished$",
}  # fmt: skip


@pytest.mark.parametrize("holder", sorted(HOLDERS))
def test_locked_warehouse_fails_in_one_line_after_the_timeout(
    holder, copy, ml_env, trained_x_learner, monkeypatch
) -> None:
    before = contents(copy)
    code = HOLDERS[holder] + "print('holding', flush=True)\ntime.sleep(300)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(copy)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout.readline().strip() == "holding", proc.stderr.read()
        monkeypatch.setenv("ML_DUCKDB_PATH", str(copy))
        monkeypatch.setenv("ML_DUCKDB_LOCK_TIMEOUT", "2")
        start = time.monotonic()
        result = CliRunner().invoke(main, ["score", "--run-id", trained_x_learner.run_id])
        elapsed = time.monotonic() - start
    finally:
        _kill9(proc)
    assert result.exit_code == 4, result.output
    assert re.search(LOCKED[holder], one_line_error(result)), result.output
    assert 2 <= elapsed < 60  # waited for the lock, then gave up (model loading included)
    assert contents(copy) == before  # not corrupted: opens, same tables and scores


# -- an MLflow store that is not there ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["score", "--model", f"{RECIPE}@champion"],
        ["train", "--recipe", f"recipes/{RECIPE}.yaml"],
        ["serve", "--model", f"{RECIPE}@champion"],
    ],
    ids=lambda a: a[0],
)
def test_mlflow_store_unreachable_fails_fast_in_one_line(args, ml_env, monkeypatch) -> None:
    port = free_port()  # bound and released: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    result = CliRunner().invoke(main, args)
    elapsed = time.monotonic() - start
    assert result.exit_code == 5, result.output
    assert re.match(
        rf"Error: MLflow tracking store http://127\.0\.0\.1:{port} is unreachable: ",
        one_line_error(result),
    )
    assert elapsed < 15
