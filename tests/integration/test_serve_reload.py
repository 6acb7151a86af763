"""Hot reload for real: `ml serve --model NAME@ALIAS --workers 2` under a steady stream of
requests while the alias moves. Every request succeeds, the answers switch from the old version
to the new one, /metadata and /metrics follow; then the alias moves to a version whose model
cannot load: that is logged and the servers keep answering with the version they have.

The models are the small logged model of tests/fixtures/legacy_model, in an MLflow store of the
test's own, so nothing here trains and the session registry is left alone."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from serving import process_env, start_server, worker_pids  # tests/integration/serving.py

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "legacy_model"
NAME = "legacy_x_learner"
ALIAS = "live"
RELOAD_SECONDS = 0.3


def _log_run(model_dir: Path) -> str:
    """A finished training run holding the fixture's artifacts and `model_dir` as its pyfunc."""
    import mlflow

    experiment = mlflow.set_experiment(NAME)
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        mlflow.set_tags({"ml.kind": "train", "ml.recipe": NAME})
        mlflow.log_artifacts(str(FIXTURE / "run"))
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
    return str(run.info.run_id)


@pytest.fixture
def registry_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Versions 1 and 2 of one good run (the alias on 1) and version 3 of a run whose model's
    estimator is truncated; a project whose config checks the alias every 0.3 s."""
    import mlflow
    from mlflow.tracking import MlflowClient

    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(tmp_path / "artifacts"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from ml import tracking
    from ml.config import load_settings

    tracking.configure(load_settings(root=ROOT), create=True)  # this test's own new store
    broken = tmp_path / "broken-model"
    shutil.copytree(FIXTURE / "model", broken)
    estimator = broken / "artifacts" / "estimator.pkl"
    estimator.write_bytes(estimator.read_bytes()[:100])
    good, bad = _log_run(FIXTURE / "model"), _log_run(broken)
    client = MlflowClient()
    for run_id in (good, good, bad):
        mlflow.register_model(f"runs:/{run_id}/model", NAME)
    client.set_registered_model_alias(NAME, ALIAS, "1")

    project = tmp_path / "project"
    shutil.copytree(ROOT / "config", project / "config")
    base = project / "config" / "base.yaml"
    config = yaml.safe_load(base.read_text())
    config["serving"]["reload_seconds"] = RELOAD_SECONDS
    config["serving"]["model"] = f"{NAME}@{ALIAS}"
    base.write_text(yaml.safe_dump(config))
    return {
        **env,
        "ML_PROJECT_DIR": str(project),
        "ML_ONLINE_STORE_PATH": str(tmp_path / "online.sqlite"),
    }


class Load:
    """Requests one after another from a thread until stopped: (status, model_version) each."""

    def __init__(self, url: str, record: dict) -> None:
        self.url, self.record = url, record
        self.answers: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/predict", json={"records": [self.record]})
                    version = response.json().get("model_version") if response.is_success else None
                    self.answers.append((response.status_code, version))
                except httpx.HTTPError as exc:
                    self.answers.append((0, type(exc).__name__))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def wait_for(self, version: str, in_a_row: int = 40, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tail = self.answers[-in_a_row:]
            if len(tail) == in_a_row and all(v == version for _, v in tail):
                return
            time.sleep(0.05)
        raise AssertionError(f"still not all version {version}: {self.answers[-in_a_row:]}")


def test_the_alias_moves_under_load_and_no_request_fails(registry_env, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    record = json.loads((FIXTURE / "expected.json").read_text())["records"][0]
    env = process_env(registry_env)
    server = start_server(["--workers", "2"], env, tmp_path)  # serving.model: NAME@live
    try:
        workers = worker_pids(server.proc.pid)
        assert len(workers) == 2
        folder = _metrics_folder(workers[0])
        assert folder.is_dir()
        _wait_in_log(server, "Application startup complete.", 2)  # both workers serve
        with Load(server.url, record) as load:
            load.wait_for("1", in_a_row=10)
            MlflowClient().set_registered_model_alias(NAME, ALIAS, "2")
            load.wait_for("2")
            _wait_in_log(server, f"reload: {NAME}@{ALIAS} moved: now serving version 2", 2)
            MlflowClient().set_registered_model_alias(NAME, ALIAS, "3")  # cannot load
            _wait_in_log(server, f"reload: {NAME}@{ALIAS} moved to version 3 (run ", 2)
            time.sleep(RELOAD_SECONDS * 5)  # a few more checks: each refusal is logged once
            load.wait_for("2", in_a_row=20)
        statuses = {status for status, _ in load.answers}
        assert statuses == {200}, [a for a in load.answers if a[0] != 200][:5]
        versions = [v for _, v in load.answers]
        assert set(versions) == {"1", "2"} and versions[0] == "1" and versions[-1] == "2"
        served = {server.client.get("/metadata").json()["model_version"] for _ in range(20)}
        assert served == {"2"}
        metrics = server.client.get("/metrics").text
        # both workers' counts, summed: every /predict this test sent
        predicted = _sample(metrics, 'ml_requests_total{route="/predict",status="200"}')
        assert predicted == len(load.answers)
        assert _sample(metrics, _info("2", registry_env)) == 1.0
        assert _sample(metrics, _info("1", registry_env)) == 0.0
        log = server.log.read_text()
        assert log.count(f"reload: {NAME}@{ALIAS} moved: now serving version 2") == 2  # per worker
        refused = f"reload: {NAME}@{ALIAS} moved to version 3 (run "
        assert log.count(refused) == 2 and "still serving version 2" in log
        assert f"cannot load models:/{NAME}/3: " in log.split(refused)[1].splitlines()[0]
    finally:
        server.stop()
    assert not folder.exists()  # the metrics folder goes with the server


def _wait_in_log(server, text: str, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while server.log.read_text().count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not {count} times in:\n{server.log.read_text()}")
        time.sleep(0.1)


def _metrics_folder(pid: int) -> Path:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    (value,) = [v for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
    return Path(value.split(b"=", 1)[1].decode())


def _info(version: str, env: dict[str, str]) -> str:
    from mlflow.tracking import MlflowClient

    uri = env["MLFLOW_TRACKING_URI"]
    run_id = (
        MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(NAME, version).run_id
    )
    return f'ml_model_info{{model_name="{NAME}",model_version="{version}",run_id="{run_id}"}}'


def _sample(text: str, name: str) -> float:
    """The value of one sample of a Prometheus exposition (labels in their declared order)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in:\n{text}")


def test_a_version_number_is_never_reloaded(registry_env) -> None:
    from ml.registry import ModelRef
    from ml.serving.reload import watches

    assert watches(ModelRef(name=NAME, alias_or_version=ALIAS))
    assert not watches(ModelRef(name=NAME, alias_or_version="2"))
    assert not watches(ModelRef(run_id="abc"))


def test_no_model_option_and_no_serving_model_is_one_line(tmp_path, monkeypatch) -> None:
    from cli_errors import one_line_error  # tests/integration/cli_errors.py
    from click.testing import CliRunner

    from ml.cli import main

    project = tmp_path / "project"
    shutil.copytree(ROOT / "config", project / "config")
    (project / "config" / "dev.yaml").write_text("serving:\n  model: null\n")
    monkeypatch.setenv("ML_PROJECT_DIR", str(project))
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2
    assert one_line_error(result) == (
        "Error: give --run-id ID or --model NAME[@ALIAS], or set serving.model in config"
    )


def test_a_registry_that_does_not_answer_keeps_the_loaded_version(monkeypatch, caplog) -> None:
    import mlflow

    from ml.registry import ModelRef
    from ml.serving.reload import Reloader

    def untouched(*args: object) -> None:
        raise AssertionError("nothing may be swapped while the registry cannot be read")

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri("http://127.0.0.1:9")  # the discard port: nothing listens
    mlflow.set_registry_uri("http://127.0.0.1:9")
    try:
        reloader = Reloader(ModelRef(name=NAME, alias_or_version=ALIAS), 1, untouched, untouched)
        with caplog.at_level("WARNING", logger="uvicorn.error"):
            reloader.check()  # logs, raises nothing: the thread lives on to ask again
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
    (record,) = caplog.records
    assert record.getMessage().startswith(
        f"reload: cannot resolve {NAME}@{ALIAS}, still serving the loaded version: "
    )
