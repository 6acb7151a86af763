"""`ml serve` for real: uvicorn processes on 127.0.0.1 spoken to over HTTP (health, readiness,
metadata, the generated OpenAPI schema, scores equal to the batch path, every way a request can
be refused, auth, several workers), plus TestClient checks of what HTTP cannot easily provoke."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import httpx
import pytest
import yaml
from click.testing import CliRunner
from serving import process_env, start_server  # tests/integration/serving.py

from ml.cli import main

ROOT = Path(__file__).resolve().parents[2]
RECIPE = "xgboost_x_learner"
TOKEN = "s3cret-token"


# -- servers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(warehouse_env, trained_x_learner, tmp_path_factory):
    """Default config (no auth, 1,000 records, 1 MB), one worker, served by run id."""
    srv = start_server(
        ["--run-id", trained_x_learner.run_id],
        process_env(warehouse_env),
        tmp_path_factory.mktemp("serve"),
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def strict(warehouse_env, trained_x_learner, tmp_path_factory):
    """Auth on, 5 records, 4 KB bodies, two workers, served as NAME@ALIAS."""
    project = tmp_path_factory.mktemp("strict-project")
    shutil.copytree(ROOT / "config", project / "config")
    base = project / "config" / "base.yaml"
    config = yaml.safe_load(base.read_text())
    config["serving"].update(max_records=5, max_body_bytes=4096)
    base.write_text(yaml.safe_dump(config))
    env = process_env(
        warehouse_env,
        ML_PROJECT_DIR=str(project),
        ML_API_TOKEN_ENV="ML_TEST_API_TOKEN",
        ML_TEST_API_TOKEN=TOKEN,
    )
    srv = start_server(["--model", f"{RECIPE}@champion", "--workers", "2"], env, project)
    yield srv
    srv.stop()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


# -- rows to score: the scoring population as batch scoring reads it ---------------------------


@pytest.fixture(scope="module")
def population(warehouse_env, trained_x_learner) -> dict[str, list]:
    """100 rows with a null recency and 100 without, from the warehouse, as columns."""
    sql = """
        (select * from analytics_loaders.score_uplift where recency_days is null
         order by campaign_id, customer_id limit 100)
        union all
        (select * from analytics_loaders.score_uplift where recency_days is not null
         order by campaign_id, customer_id limit 100)
    """
    # Selects only. Not read_only=True: dbt-duckdb keeps a read-write connection to the same
    # file open in this process, and DuckDB refuses a second one with another configuration.
    with duckdb.connect(warehouse_env["ML_DUCKDB_PATH"]) as con:
        table = con.sql(sql).to_arrow_table()
    return {name: table.column(name).to_pylist() for name in table.column_names}


@pytest.fixture(scope="module")
def reassembled(warehouse_env, trained_x_learner):
    """The ScoringModel rebuilt from the run's separate artifacts, as batch scoring does."""
    from unittest import mock

    with mock.patch.dict(os.environ, warehouse_env):
        import mlflow

        from ml import tracking
        from ml.config import load_settings
        from ml.model import ScoringModel, TrainingSchema

        tracking.configure(load_settings(root=ROOT))
        with tempfile.TemporaryDirectory() as tmp:
            for part in ("schema", "preprocessor", "estimator"):
                mlflow.artifacts.download_artifacts(
                    run_id=trained_x_learner.run_id, artifact_path=part, dst_path=tmp
                )
            root = Path(tmp)
            schema = TrainingSchema.from_dict(
                json.loads((root / "schema" / "training_schema.json").read_text())
            )
            pre = pickle.loads((root / "preprocessor" / "preprocessor.pkl").read_bytes())
            est = pickle.loads((root / "estimator" / "estimator.pkl").read_bytes())
    return ScoringModel(schema, pre, est)


def _records(population: dict[str, list], features: list[str], keys=("customer_id",)) -> list:
    n = len(population["customer_id"])
    return [{c: population[c][i] for c in [*keys, *features]} for i in range(n)]


@pytest.fixture(scope="module")
def record(population, reassembled) -> dict:
    return _records(population, list(reassembled.schema.features), keys=())[150]


# -- health, readiness, metadata, docs ---------------------------------------------------------


def test_health_ready_and_metadata(server, trained_x_learner) -> None:
    assert server.client.get("/health").json() == {"status": "ok"}
    ready = server.client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"

    meta = server.client.get("/metadata").json()
    assert meta["recipe"] == RECIPE and meta["task"] == "uplift"
    assert meta["model_name"] == RECIPE
    assert meta["model_version"] == trained_x_learner.model_version
    assert meta["run_id"] == trained_x_learner.run_id
    assert meta["entity_keys"] == ["customer_id"]
    features = {f["name"]: f for f in meta["features"]}
    assert features["recency_days"]["kind"] == "int"
    assert features["monetary_30d"]["kind"] == "float"
    assert features["region"]["kind"] == "string"
    assert set(features["region"]["categories"]) >= {"north", "south"}
    assert "campaign_id" not in features and "converted" not in features
    for name, value in trained_x_learner.metrics.items():
        assert meta["metrics"][name] == pytest.approx(value)
    assert meta["limits"] == {"max_records": 1000, "max_body_bytes": 1_000_000}
    assert server.client.get("/docs").status_code == 200


def test_openapi_has_the_training_schema_types(server, reassembled) -> None:
    spec = server.client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    record = schemas["Record"]
    props = record["properties"]

    def types(name: str) -> set[str]:
        return {t.get("type") for t in props[name]["anyOf"]}

    assert types("recency_days") == {"integer", "null"}
    assert types("monetary_30d") == {"number", "null"}
    assert types("region") == {"string", "null"}
    assert set(record["required"]) == set(reassembled.schema.features)
    assert record["additionalProperties"] is False
    assert "customer_id" in props and "customer_id" not in record["required"]
    records = schemas["PredictRequest"]["properties"]["records"]
    assert records["minItems"] == 1 and records["maxItems"] == 1000
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    records_body, by_id_body = body["schema"]["anyOf"]  # records, or entity ids (by_id)
    assert records_body["$ref"].endswith("/PredictRequest")
    assert by_id_body["$ref"].endswith("/PredictByIdRequest")


# -- scores ------------------------------------------------------------------------------------


def test_predict_equals_the_batch_path(server, population, reassembled, trained_x_learner) -> None:
    features = list(reassembled.schema.features)
    records = _records(population, features)
    response = server.client.post("/predict", json={"records": records})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == RECIPE
    assert body["model_version"] == trained_x_learner.model_version
    assert body["run_id"] == trained_x_learner.run_id

    expected = reassembled.predict_columns({f: population[f] for f in features})
    got = body["predictions"]
    assert [p["customer_id"] for p in got] == population["customer_id"]
    assert max(abs(p["score"] - e) for p, e in zip(got, expected, strict=True)) <= 1e-9
    assert any(r["recency_days"] is None for r in records)

    one = server.client.post("/predict", json={"records": records[:1]}).json()["predictions"]
    assert one[0]["score"] == pytest.approx(expected[0], abs=1e-9)


def test_unseen_category_scores(server, record) -> None:
    response = server.client.post("/predict", json={"records": [{**record, "region": "mars"}]})
    assert response.status_code == 200, response.text
    assert math.isfinite(response.json()["predictions"][0]["score"])


# -- refused requests --------------------------------------------------------------------------


def _without(record: dict, name: str) -> dict:
    return {k: v for k, v in record.items() if k != name}


@pytest.mark.parametrize(
    ("case", "loc", "kind"),
    [
        ("missing feature", ["records", 0, "recency_days"], "missing"),
        ("string for an int", ["records", 0, "recency_days"], "int_type"),
        ("fraction for an int", ["records", 0, "recency_days"], "int_type"),
        ("number for a string", ["records", 0, "region"], "string_type"),
        ("string for a number", ["records", 0, "monetary_30d"], "float_type"),
        ("NaN for a number", ["records", 0, "monetary_30d"], "finite_number"),
        ("huge int", ["records", 0, "age"], "less_than_equal"),
        ("unknown field", ["records", 0, "shoe_size"], "extra_forbidden"),
        ("null record", ["records", 0], "model_attributes_type"),
        ("null records", ["records"], "list_type"),
        ("empty records", ["records"], "too_short"),
        ("too many records", ["records"], "too_long"),
        ("unknown top-level key", ["rows"], "extra_forbidden"),
        ("not an object", [], "model_attributes_type"),
    ],
)
def test_invalid_records_are_422_with_the_field(server, record, case, loc, kind) -> None:
    bodies = {
        "missing feature": {"records": [_without(record, "recency_days")]},
        "string for an int": {"records": [{**record, "recency_days": "5"}]},
        "fraction for an int": {"records": [{**record, "recency_days": 5.5}]},
        "number for a string": {"records": [{**record, "region": 3}]},
        "string for a number": {"records": [{**record, "monetary_30d": "12.5"}]},
        "NaN for a number": None,  # not valid JSON for httpx: sent raw below
        "huge int": {"records": [{**record, "age": 10**30}]},
        "unknown field": {"records": [{**record, "shoe_size": 42}]},
        "null record": {"records": [None]},
        "null records": {"records": None},
        "empty records": {"records": []},
        "too many records": {"records": [record] * 1001},
        "unknown top-level key": {"records": [record], "rows": []},
        "not an object": [record],
    }
    if case == "NaN for a number":
        content = json.dumps({"records": [{**record, "monetary_30d": float("nan")}]})
    else:
        content = json.dumps(bodies[case])
    response = server.client.post(
        "/predict", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(e["loc"] == ["body", *loc] and e["type"] == kind for e in errors), errors


def test_invalid_json_is_422(server) -> None:
    response = server.client.post(
        "/predict", content=b'{"records": [', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_not_json_is_415(server, record, content_type) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = server.client.post(
        "/predict", content=json.dumps({"records": [record]}), headers=headers
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (
            {"Content-Type": "application/json; charset=iso-8859-1"},
            "expected UTF-8 JSON, not charset=iso-8859-1",
        ),
        (
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            "Content-Encoding gzip is not accepted: send the JSON uncompressed",
        ),
    ],
)
def test_json_in_another_charset_or_compressed_is_415(server, record, headers, message) -> None:
    body = json.dumps({"records": [record]}).encode()
    response = server.client.post("/predict", content=body, headers=headers)
    assert (response.status_code, response.json()) == (415, {"error": message})
    utf8 = {"Content-Type": 'application/json; charset="UTF-8"', "Content-Encoding": "identity"}
    assert server.client.post("/predict", content=body, headers=utf8).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Type", "text/plain"), ("Content-Type", "application/json")],
        [("Content-Type", "application/json"), ("Content-Type", "application/json")],
    ],
)
def test_a_content_type_sent_twice_is_400(server, record, headers) -> None:
    """The guard and FastAPI would read different copies: neither is taken."""
    response = server.client.post(
        "/predict", content=json.dumps({"records": [record]}), headers=headers
    )
    assert response.status_code == 400
    assert response.json() == {"error": "header content-type given more than once"}


def test_value_too_large_for_the_model_is_422_naming_the_record(server, record) -> None:
    records = [record, {**record, "monetary_30d": 1e300}]  # finite JSON, inf as float32
    response = server.client.post("/predict", json={"records": records})
    assert response.status_code == 422
    (error,) = response.json()["detail"]  # the schema's bound: float32's largest value
    assert error["loc"] == ["body", "records", 1, "monetary_30d"]
    assert error["type"] == "less_than_equal"


def test_a_whole_number_is_an_integer(server, record) -> None:
    # JSON Schema's "integer" includes 12.0; a fraction stays refused (see above)
    whole = {**record, "recency_days": 12.0}
    response = server.client.post(
        "/predict", json={"records": [{**record, "recency_days": 12}, whole]}
    )
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert first["score"] == second["score"]


# -- limits, auth and several workers (the strict server) --------------------------------------


def test_auth_required_everywhere_but_health(strict, record) -> None:
    c = strict.client
    assert c.get("/health").status_code == 200
    for method, path in [
        ("GET", "/ready"),
        ("GET", "/metadata"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("POST", "/predict"),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            kwargs = {"json": {"records": [record]}} if method == "POST" else {}
            response = c.request(method, path, headers=headers, **kwargs)
            assert response.status_code == 401, (path, headers)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json() == {"error": "missing or wrong bearer token"}
    ok = c.post("/predict", json={"records": [record]}, headers=AUTH)
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1
    # a wrong token then the right one: not "the last one wins"
    twice = [("Authorization", "Bearer wrong"), *AUTH.items()]
    response = c.post("/predict", json={"records": [record]}, headers=twice)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "header authorization given more than once"},
    )
    assert c.get("/metadata", headers=AUTH).json()["limits"] == {
        "max_records": 5,
        "max_body_bytes": 4096,
    }


def test_record_limit_from_config(strict, record) -> None:
    response = strict.client.post("/predict", json={"records": [record] * 6}, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "too_long"


def test_body_over_the_limit_is_413(strict, record) -> None:
    big = json.dumps({"records": [record] * 5, "pad": "x" * 4096}).encode()
    headers = {**AUTH, "Content-Type": "application/json"}
    response = strict.client.post("/predict", content=big, headers=headers)
    assert response.status_code == 413
    assert "4096 bytes" in response.json()["error"]

    def chunks():  # no Content-Length: the streamed size is what counts
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    response = strict.client.post("/predict", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert strict.client.get("/health").status_code == 200


def test_two_workers_serve_the_same_scores(strict, record) -> None:
    children = _children(strict.proc.pid)
    assert len(children) >= 2, children

    def call(i: int) -> float:
        with httpx.Client(base_url=strict.url, timeout=30.0) as c:  # a connection per call
            r = c.post("/predict", json={"records": [record]}, headers=AUTH)
            assert r.status_code == 200, r.text
            return r.json()["predictions"][0]["score"]

    with ThreadPoolExecutor(8) as pool:
        scores = list(pool.map(call, range(40)))
    assert len(set(scores)) == 1


def _children(pid: int) -> list[int]:
    """Worker processes of the uvicorn supervisor (spawned Python processes)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            out.append(int(stat.parent.name))
    return out


def test_serving_imports_no_training_code(warehouse_env, trained_x_learner) -> None:
    code = (
        "import sys\n"
        "from ml.config import load_settings\n"
        "from ml.registry import ModelRef, load_pyfunc\n"
        "from ml.serving.app import create_app\n"
        "from ml.serving.run import resolve\n"
        "settings, ref = load_settings(), ModelRef(run_id=sys.argv[1])\n"
        "target = resolve(settings, ref)\n"
        "create_app(settings, target, model=load_pyfunc(target))\n"
        "print(sorted(m for m in sys.modules if m in {"
        "'ml.train', 'ml.evaluate', 'ml.plots', 'ml.dataset', 'ml.metrics', 'ml.score'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, trained_x_learner.run_id],
        cwd=ROOT,
        env=process_env(warehouse_env),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- the CLI refuses to start, in one line -----------------------------------------------------


def _one_line_error(result) -> str:
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_token_env_set_but_empty_refuses_to_start(ml_env, trained_x_learner, monkeypatch) -> None:
    monkeypatch.setenv("ML_API_TOKEN_ENV", "ML_TEST_API_TOKEN")
    monkeypatch.delenv("ML_TEST_API_TOKEN", raising=False)
    result = CliRunner().invoke(main, ["serve", "--model", f"{RECIPE}@champion"])
    assert result.exit_code == 2
    assert "ML_TEST_API_TOKEN is empty or unset" in _one_line_error(result)


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["--model", f"{RECIPE}@no_such_alias"], 6, "not found in the registry"),
        (["--run-id", "0123456789abcdef0123456789abcdef"], 6, "not found"),
        (["--model", RECIPE, "--run-id", "abc"], 2, "exactly one of"),
    ],
)
def test_bad_model_reference(ml_env, trained_x_learner, args, code, text) -> None:
    result = CliRunner().invoke(main, ["serve", *args])
    assert result.exit_code == code, result.output
    assert text in _one_line_error(result)


# -- TestClient: states and failures HTTP cannot easily provoke --------------------------------


@pytest.fixture
def app_parts(settings, trained_x_learner, reassembled):
    from ml.registry import ModelRef
    from ml.serving.run import resolve

    ref = ModelRef(run_id=trained_x_learner.run_id)
    return ref, resolve(settings, ref)


def test_not_ready_until_the_model_loads(settings, app_parts, record) -> None:
    from fastapi.testclient import TestClient

    from ml.serving.app import create_app

    ref, target = app_parts
    app = create_app(settings, target)
    client = TestClient(app)  # no `with`: the lifespan (which loads the model) has not run
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503
    assert client.post("/predict", json={"records": [record]}).status_code == 503
    with TestClient(app) as started:
        assert started.get("/ready").status_code == 200
        assert started.post("/predict", json={"records": [record]}).status_code == 200


def test_non_finite_score_is_422_naming_the_record(settings, app_parts, reassembled, record):
    import numpy as np
    from fastapi.testclient import TestClient

    from ml.model import ScoringModel
    from ml.serving.app import create_app

    class Broken:
        def effect(self, X):
            out = np.zeros(len(X))
            out[-1] = np.nan
            return out

    broken = ScoringModel(reassembled.schema, reassembled.preprocessor, Broken())
    ref, target = app_parts
    with TestClient(create_app(settings, target, model=broken)) as client:
        response = client.post("/predict", json={"records": [record, record]})
    assert response.status_code == 422
    assert response.json() == {"error": "records[1]: the model produced a non-finite score (nan)"}
