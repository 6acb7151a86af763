"""The prod cycle on BigQuery, against a local BigQuery API (bqemulator on loopback): demo data
by load jobs, `dbt build --target prod`, `ml train` and `ml score` with APP_ENV=prod, then
`dbt build --select source:predictions+`, with the same code as on DuckDB.

The emulator differs from BigQuery where these tests do not look: it cannot parse the column
list of an enforced contract (the build runs with `enforce_contracts: false`; `dbt compile
--target prod` covers the contract SQL), and CAST rounding and REQUIRED enforcement differ.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import bq_emulator  # tests/integration/bq_emulator.py (pytest puts this folder on sys.path)
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROJECT = bq_emulator.PROJECT
UPCOMING = "cmp_2026_12"
SCORES = f"{PROJECT}.predictions.xgboost_x_learner"
TARGETS = f"{PROJECT}.analytics_marts.campaign_targets"
POPULATION = f"{PROJECT}.analytics_loaders.score_uplift"
N_CUSTOMERS = 5000


def _prod_env(emulator: bq_emulator.Emulator, base: Path) -> dict[str, str]:
    return {
        "APP_ENV": "prod",
        "BQ_PROJECT": PROJECT,
        "BQ_DATASET": "analytics",
        "BQ_LOCATION": "US",
        # dbt-bigquery: a dummy token, never refreshed; ml: anonymous on a loopback endpoint
        "BQ_AUTH_METHOD": "oauth-secrets",
        "BQ_TOKEN": "dummy-token",
        "BQ_API_ENDPOINT": emulator.rest_endpoint,
        "BQ_STORAGE_API_ENDPOINT": emulator.grpc_endpoint,
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "ML_ARTIFACT_LOCATION": str(base / "artifacts"),
    }


def _client(env: dict[str, str]):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        location="US",
        client_options=ClientOptions(api_endpoint=env["BQ_API_ENDPOINT"]),
    )


def _rows(env: dict[str, str], sql: str, **params) -> list[dict]:
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter(k, "STRING", v) for k, v in params.items()]
    )
    with _client(env) as client:
        result = client.query(sql, job_config=config, timeout=60).result(timeout=120)
        return [dict(row.items()) for row in result]


@pytest.fixture(scope="module")
def prod_cycle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The whole prod cycle once per module; yields the environment and what each step returned."""
    base = tmp_path_factory.mktemp("bigquery")
    emulator = bq_emulator.start(base)
    sources = ROOT / "models" / "predictions" / "_prediction_sources.yml"
    declared = sources.read_text()
    env = _prod_env(emulator, base)
    try:
        with mock.patch.dict(os.environ):  # restored whole afterwards
            for key in [
                k for k in os.environ if k.startswith(("ML_", "BQ_", "MLFLOW_", "GOOGLE_"))
            ]:
                del os.environ[key]  # the developer's own settings never leak in
            os.environ.update(env)
            yield _run_cycle(env)
    finally:
        emulator.stop()
        sources.write_text(declared)


def _run_cycle(env: dict[str, str]) -> dict:
    from ml.config import load_settings
    from ml.dbt import DbtProject
    from ml.demo import load_demo_data
    from ml.registry import ModelRef
    from ml.score import score
    from ml.train import train

    with _client(env) as client:  # the emulator's home for query results
        client.create_dataset(bq_emulator.SESSION_DATASET, exists_ok=True, timeout=30)

    settings = load_settings(root=ROOT)
    assert settings.dbt.target == "prod" and settings.warehouse.type == "bigquery"
    loaded = load_demo_data(settings, n_customers=N_CUSTOMERS)

    project = DbtProject(settings)
    project.invoke(["build", "--quiet"], vars={"enforce_contracts": False})
    project.parse()  # the manifest ml reads records the contracts as declared (enforced)

    trained = train(settings, ROOT / "recipes" / "xgboost_x_learner.yaml", alias="champion")
    champion = ModelRef(name="xgboost_x_learner", alias_or_version="champion")
    scored = score(settings, champion)
    project.invoke(["build", "--select", "source:predictions+", "--quiet"])
    return {
        "env": env,
        "settings": settings,
        "project": project,
        "loaded": loaded,
        "trained": trained,
        "scored": scored,
    }


@pytest.fixture
def bq_env(prod_cycle: dict, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The prod environment again for one test (the autouse fixture clears BQ_* and ML_*)."""
    for key, value in prod_cycle["env"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ROOT)
    return prod_cycle["env"]


def test_demo_data_loaded_by_load_jobs(prod_cycle: dict) -> None:
    loaded = prod_cycle["loaded"]
    assert loaded["raw.customers"] == N_CUSTOMERS
    rows = _rows(prod_cycle["env"], f"select count(*) as n from `{PROJECT}.raw.orders`")
    assert rows[0]["n"] == loaded["raw.orders"] > 0


def test_relations_come_from_the_prod_manifest(prod_cycle: dict) -> None:
    from ml.dbt import Relation

    model = prod_cycle["project"].find_model("score_uplift")
    assert model.relation == Relation(PROJECT, "analytics_loaders", "score_uplift")
    assert model.contract_enforced
    assert prod_cycle["scored"].input_relation == POPULATION


def test_scores_land_in_the_bigquery_score_table(prod_cycle: dict) -> None:
    env, scored, trained = prod_cycle["env"], prod_cycle["scored"], prod_cycle["trained"]
    population = _rows(
        env, f"select count(*) as n from `{POPULATION}` where campaign_id = @c", c=UPCOMING
    )[0]["n"]
    assert scored.rows == population > 0
    row = _rows(
        env,
        f"select count(*) as n, count(distinct customer_id) as customers, "
        f"countif(score is null) as null_scores, min(model_name) as model_name, "
        f"min(model_version) as model_version from `{SCORES}` where run_id = @r and campaign_id = @c",
        r=trained.run_id,
        c=UPCOMING,
    )[0]
    assert row == {
        "n": population,
        "customers": population,
        "null_scores": 0,
        "model_name": "xgboost_x_learner",
        "model_version": trained.model_version,
    }
    with _client(env) as client:
        columns = [f.name for f in client.get_table(SCORES, timeout=30).schema]
    assert columns[:2] == ["customer_id", "campaign_id"]
    assert set(columns) == {
        "customer_id",
        "campaign_id",
        "score",
        "model_name",
        "model_version",
        "run_id",
        "scored_at",
    }


def test_campaign_targets_built_on_the_scores(prod_cycle: dict) -> None:
    env = prod_cycle["env"]
    row = _rows(
        env,
        f"select count(*) as n, min(uplift) as min_uplift, min(uplift_rank) as first_rank, "
        f"max(uplift_rank) as last_rank, count(distinct customer_id) as customers "
        f"from `{TARGETS}` where campaign_id = @c",
        c=UPCOMING,
    )[0]
    assert 0 < row["n"] <= 10_000
    assert row["min_uplift"] > 0
    assert row["first_rank"] == 1 and row["last_rank"] == row["n"] == row["customers"]


def test_rescoring_is_idempotent_and_leaves_no_staging_tables(
    prod_cycle: dict, bq_env: dict[str, str]
) -> None:
    from ml.registry import ModelRef
    from ml.score import score

    trained = prod_cycle["trained"]
    count = f"select count(*) as n, max(scored_at) as at from `{SCORES}` where run_id = @r"
    before = _rows(bq_env, count, r=trained.run_id)[0]
    again = score(prod_cycle["settings"], ModelRef(run_id=trained.run_id))
    after = _rows(bq_env, count, r=trained.run_id)[0]
    assert again.rows == prod_cycle["scored"].rows
    assert after["n"] == before["n"] == again.rows  # replaced, not duplicated
    assert after["at"] >= before["at"]
    with _client(bq_env) as client:
        tables = [t.table_id for t in client.list_tables(f"{PROJECT}.predictions", timeout=30)]
    assert tables == [  # no staging table left
        "xgboost_x_learner",
        "xgboost_x_learner__current",
        "xgboost_x_learner__policy",
    ]
    current = _rows(
        bq_env,
        f"select count(*) as n, min(run_id) as lo, max(run_id) as hi from `{SCORES}__current`",
    )[0]
    assert current["n"] == again.rows and current["lo"] == current["hi"] == trained.run_id


def test_a_crash_while_scoring_leaves_the_previous_scores(
    prod_cycle: dict, bq_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from faults import score_crashing_on_third_batch  # tests/integration/faults.py

    trained, settings = prod_cycle["trained"], prod_cycle["settings"]
    count = f"select count(*) as n, max(scored_at) as at from `{SCORES}` where run_id = @r"
    before = _rows(bq_env, count, r=trained.run_id)[0]
    score_crashing_on_third_batch(settings, trained.run_id, 500, monkeypatch)
    assert _rows(bq_env, count, r=trained.run_id)[0] == before


def test_reads_fall_back_to_rest_without_the_storage_api(
    prod_cycle: dict, bq_env: dict[str, str]
) -> None:
    from ml.warehouse import connect

    settings = prod_cycle["settings"]
    relation = prod_cycle["project"].find_model("score_uplift").relation
    columns = ["customer_id", "campaign_id", "age"]
    rest = settings.model_copy(
        update={
            "warehouse": settings.warehouse.model_copy(
                update={
                    "bigquery": settings.warehouse.bigquery.model_copy(
                        update={"storage_read_api": False}
                    )
                }
            )
        }
    )
    from google.cloud import bigquery

    def no_rest(*args, **kwargs):
        raise AssertionError("a table read went to REST although the Storage Read API works")

    with connect(settings) as wh, mock.patch.object(bigquery.Client, "list_rows", no_rest):
        via_storage = wh.read_arrow(relation, columns, {})
    with connect(settings) as wh:
        filtered = wh.read_arrow(relation, columns, {"campaign_id": UPCOMING})
        stats = wh.key_stats(relation, ["customer_id"], {"campaign_id": UPCOMING})
        uncounted = wh.key_stats(
            relation, ["customer_id"], {"campaign_id": UPCOMING}, distinct=False
        )
        assert not wh.in_process  # BigQuery counts distinct keys before the stream
    with connect(rest) as wh:
        via_rest = wh.read_arrow(relation, columns, {})
    assert via_storage.column_names == via_rest.column_names == columns
    assert via_storage.num_rows == via_rest.num_rows > filtered.num_rows > 0
    assert sorted(via_storage.column("customer_id").to_pylist()) == sorted(
        via_rest.column("customer_id").to_pylist()
    )
    assert set(filtered.column("campaign_id").to_pylist()) == {UPCOMING}
    assert (stats.rows, stats.nulls, stats.distinct) == (
        filtered.num_rows,
        {"customer_id": 0},
        filtered.num_rows,
    )
    assert (uncounted.rows, uncounted.nulls, uncounted.distinct) == (
        filtered.num_rows,
        {"customer_id": 0},
        None,
    )


def test_sql_engine_scores_inside_bigquery_as_the_python_engine(
    prod_cycle: dict, bq_env: dict[str, str]
) -> None:
    """`--engine sql`: one MERGE whose source is the compiled model over the population; the
    slice it leaves equals the Python engine's on every row within 1e-6."""
    from ml.registry import ModelRef
    from ml.score import score

    trained, settings = prod_cycle["trained"], prod_cycle["settings"]
    rows = (
        f"select customer_id, score, model_version, campaign_id from `{SCORES}` "
        "where run_id = @r order by customer_id"
    )
    python = _rows(bq_env, rows, r=trained.run_id)  # the Python engine's slice (the cycle's)
    result = score(settings, ModelRef(run_id=trained.run_id), engine="sql")
    sql = _rows(bq_env, rows, r=trained.run_id)
    assert result.engine == "sql" and result.rows == len(python) == len(sql) > 0
    assert [r["customer_id"] for r in sql] == [r["customer_id"] for r in python]
    assert {(r["model_version"], r["campaign_id"]) for r in sql} == {
        (trained.model_version, UPCOMING)
    }
    worst = max(abs(a["score"] - b["score"]) for a, b in zip(sql, python, strict=True))
    assert worst <= 1e-6, worst
    current = _rows(bq_env, f"select count(*) as n, min(run_id) as r from `{SCORES}__current`")
    assert current == [{"n": result.rows, "r": trained.run_id}]
    with _client(bq_env) as client:
        tables = [t.table_id for t in client.list_tables(f"{PROJECT}.predictions", timeout=30)]
    assert "_ml_staging" not in " ".join(tables)


def test_dbt_compile_prod_is_clean_without_credentials(tmp_path: Path) -> None:
    """No warehouse, no real credentials: a dummy service account, no cache population, and an
    endpoint on a closed loopback port, so nothing can hang or leave the machine."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keyfile = tmp_path / "dummy-sa.json"
    keyfile.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "dummy",
                "private_key": key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode(),
                "client_email": f"ci@{PROJECT}.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "http://127.0.0.1:9/token",
            }
        )
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BQ_", "GOOGLE_", "ML_", "MLFLOW_"))
    }
    env.update(
        {
            "BQ_PROJECT": PROJECT,
            "BQ_AUTH_METHOD": "service-account",
            "BQ_KEYFILE": str(keyfile),
            "BQ_API_ENDPOINT": "http://127.0.0.1:9",
        }
    )
    target = tmp_path / "target"
    result = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "dbt"),
            "compile",
            "--target",
            "prod",
            "--no-populate-cache",
            "--target-path",
            str(target),
            "--log-path",
            str(tmp_path / "logs"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = json.loads((target / "manifest.json").read_text())
    contracted = [
        n
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and n["config"]["contract"]["enforced"]
    ]
    assert contracted
    bigquery_types = {"int64", "float64", "string", "bool", "date", "timestamp", "numeric"}
    for node in contracted:
        for column in node["columns"].values():
            assert column["data_type"].lower() in bigquery_types, (node["name"], column)
        compiled = (target / "compiled" / "mmp" / node["original_file_path"]).read_text()
        assert "double" not in compiled.lower(), node["name"]
