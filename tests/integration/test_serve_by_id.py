"""Serving by entity id: `ml materialize` copies the upcoming campaign's scoring population into
the online store (a SQLite file, or a real redis-server on a loopback port), and POST /predict
with a context and entity keys scores each entity with its stored features: every customer of
the campaign gets the score `ml score` wrote for it. Unknown entities, unknown contexts, a set
materialized for another model version, malformed keys and a store that goes down are each
refused or reported in one clear message."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path
from unittest import mock

import duckdb
import pytest
from cli_errors import one_line_error  # tests/integration/cli_errors.py
from click.testing import CliRunner
from redis_server import RedisServer  # tests/integration/redis_server.py
from serving import process_env, start_server  # tests/integration/serving.py
from warehouse_snapshots import fresh_copy  # tests/integration/warehouse_snapshots.py

from ml.cli import main

ROOT = Path(__file__).resolve().parents[2]
RECIPE = "xgboost_x_learner"
UPCOMING = "cmp_2026_12"
CONTEXT = {"campaign_id": UPCOMING}


def _env(warehouse_env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**warehouse_env, "ML_PROJECT_DIR": str(ROOT), **extra}


def _redis_env(warehouse_env: dict[str, str], url: str, timeout: str) -> dict[str, str]:
    """The session warehouse with a Redis online store at `url`, answering within `timeout` s."""
    return _env(
        warehouse_env, ML_ONLINE_STORE="redis", ML_REDIS_URL=url, ML_ONLINE_STORE_TIMEOUT=timeout
    )


def _materialize(env: dict[str, str], *args: str):
    with mock.patch.dict(os.environ, env):
        return CliRunner().invoke(main, ["materialize", *args])


@pytest.fixture(scope="module")
def store_env(warehouse_env, scored_champion, tmp_path_factory) -> dict[str, str]:
    """The session warehouse with an online store file of this module's own, the champion's
    upcoming campaign materialized into it."""
    env = _env(
        warehouse_env,
        ML_ONLINE_STORE_PATH=str(tmp_path_factory.mktemp("online") / "online.sqlite"),
    )
    result = _materialize(env, "--model", f"{RECIPE}@champion", "--json")
    assert result.exit_code == 0, result.output
    return env


@pytest.fixture(scope="module")
def batch_scores(warehouse_env, scored_champion) -> dict[int, float]:
    """customer_id -> the score `ml score` wrote for the upcoming campaign."""
    with duckdb.connect(warehouse_env["ML_DUCKDB_PATH"]) as con:
        rows = con.execute(
            f"select customer_id, score from predictions.{RECIPE}__current where campaign_id = ?",
            [UPCOMING],
        ).fetchall()
    return dict(rows)


def _settings(env: dict[str, str]):
    with mock.patch.dict(os.environ, env):
        from ml.config import load_settings

        return load_settings(root=ROOT)


@pytest.fixture(scope="module")
def client(store_env, served_champion):
    """A TestClient on the champion's app reading this module's store."""
    from fastapi.testclient import TestClient
    from threadpoolctl import threadpool_limits

    from ml.serving.app import create_app

    _, _, target, model = served_champion
    app = create_app(_settings(store_env), target, model=model)
    with threadpool_limits(limits=None), TestClient(app) as started:
        yield started


def _by_id(client, ids, context=CONTEXT):
    return client.post(
        "/predict", json={"context": context, "entities": [{"customer_id": i} for i in ids]}
    )


def test_materialize_json_says_what_it_wrote(store_env, scored_champion, trained_x_learner):
    result = _materialize(store_env, "--model", f"{RECIPE}@champion", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.splitlines()[-1])
    assert payload["rows"] == scored_champion.rows > 40_000
    assert payload["model_name"] == RECIPE
    assert payload["model_version"] == trained_x_learner.model_version
    assert payload["run_id"] == trained_x_learner.run_id
    assert payload["context"] == CONTEXT
    assert payload["store"] == f"online store {store_env['ML_ONLINE_STORE_PATH']}"
    # materialized twice: one generation of rows, the previous one deleted
    with sqlite3.connect(store_env["ML_ONLINE_STORE_PATH"]) as con:
        assert con.execute("select count(*) from online_rows").fetchone()[0] == payload["rows"]


def test_materialize_reads_the_recipe_and_schema_not_the_model(store_env) -> None:
    """Copying features needs what the run says the model reads, not the model: nothing is
    unpickled (an X-learner's estimators are the bulk of its artifacts)."""
    import ml.registry

    def unpickle(*args: object) -> None:
        raise AssertionError(f"ml materialize unpickled {args[-1]}")

    with mock.patch.object(ml.registry, "_unpickle", unpickle):
        result = _materialize(store_env, "--model", f"{RECIPE}@champion", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1])["model_name"] == RECIPE


def test_every_customer_of_the_campaign_scores_as_in_batch(client, batch_scores, trained_x_learner):
    """The first 2,000 customers in requests of 1 to 32 entities, the rest 1,000 at a time (the
    trees walked by `ml.forestkernel` at every size where the CPU has AVX-512; elsewhere up to
    16 in numpy, `ml.treewalk`, and beyond that by XGBoost's own predictor)."""
    ids = sorted(batch_scores)
    online: dict[int, float] = {}
    chunks, start, sizes = [], 0, itertools.cycle([1, 7, 32, 2, 19])
    while start < len(ids):
        size = next(sizes) if start < 2000 else 1000
        chunks.append(ids[start : start + size])
        start += size
    for chunk in chunks:
        response = _by_id(client, chunk)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["run_id"] == trained_x_learner.run_id and body["context"] == CONTEXT
        online.update({p["customer_id"]: p["score"] for p in body["predictions"]})
    assert len(online) == len(batch_scores) > 40_000
    assert online == pytest.approx(batch_scores, abs=1e-9, rel=0)


def test_unknown_entities_are_reported_one_by_one(client, batch_scores) -> None:
    known = sorted(batch_scores)[:2]
    response = _by_id(client, [known[0], 999_999_999, known[1]])
    assert response.status_code == 200, response.text
    first, unknown, last = response.json()["predictions"]
    assert first == {"customer_id": known[0], "score": pytest.approx(batch_scores[known[0]])}
    assert unknown == {
        "customer_id": 999_999_999,
        "score": None,
        "error": "unknown entity: not in the online store for this context",
    }
    assert last["score"] == pytest.approx(batch_scores[known[1]])


def test_a_context_never_materialized_is_a_404_naming_it(client) -> None:
    response = _by_id(client, [1], context={"campaign_id": "cmp_2099_01"})
    assert response.status_code == 404
    assert response.json() == {
        "error": 'context {"campaign_id":"cmp_2099_01"} was never materialized for model '
        f"{RECIPE}: run `ml materialize --model {RECIPE} --context-params "
        '\'{"campaign_id":"cmp_2099_01"}\'`'
    }
    huge = _by_id(client, [1], context={"campaign_id": "x" * 100_000})
    assert huge.status_code == 404 and len(huge.content) < 1_000  # quoted short, not twice whole
    assert "(100,018 chars)" in huge.json()["error"]


def test_the_openapi_document_describes_requests_by_id(client, batch_scores) -> None:
    """/openapi.json offers both bodies of /predict; a real request by id and its answer (one
    entity found, one not) validate against the by-id schemas; malformed ones are refused by both."""
    import jsonschema

    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/predict"]["post"]
    schemas = {"components": spec["components"]}

    def valid(part: dict, instance: object) -> bool:
        schema = {**part["content"]["application/json"]["schema"], **schemas}
        return jsonschema.Draft202012Validator(schema).is_valid(instance)

    known = sorted(batch_scores)[0]
    body = {"context": CONTEXT, "entities": [{"customer_id": known}, {"customer_id": -1}]}
    answer = client.post("/predict", json=body)
    assert answer.status_code == 200
    assert answer.json()["predictions"][1]["score"] is None
    assert valid(post["requestBody"], body) and valid(post["responses"]["200"], answer.json())
    by_id = {"$ref": "#/components/schemas/PredictByIdRequest", **schemas}
    for wrong in (
        {"context": {"campaign_id": 202612}, "entities": [{"customer_id": 1}]},
        {"context": CONTEXT, "entities": []},
        {"context": CONTEXT, "entities": [{"customer_id": 1.5}]},
        {"context": CONTEXT, "entities": [{"customer_id": 1, "age": 3}]},
    ):
        assert not jsonschema.Draft202012Validator(by_id).is_valid(wrong), wrong
        assert client.post("/predict", json=wrong).status_code == 422, wrong
    context = spec["components"]["schemas"]["Context"]["properties"]["campaign_id"]
    assert context["type"] == "string"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"context": CONTEXT, "entities": [{"customer_id": 1}, {"customer_id": "2"}]},
            'entities[1].customer_id: expected an integer, got str "2"',
        ),
        ({"context": CONTEXT, "entities": [{"id": 1}]}, "entities[0]: unknown field 'id'"),
        ({"context": CONTEXT, "entities": [{}]}, "entities[0]: key field customer_id is missing"),
        (
            {"context": CONTEXT, "entities": [{"customer_id": i} for i in range(1001)]},
            "entities: 1001 entities, over serving.max_records (1000)",
        ),
        (
            {"context": {"campaign_id": None}, "entities": [{"customer_id": 1}]},
            "context.campaign_id: expected a string, number or boolean, got null",
        ),
        (
            {"context": {"campaign_id": 202612}, "entities": [{"customer_id": 1}]},
            "context.campaign_id: expected a string, got int 202612",
        ),
        ({"entities": [{"customer_id": 1}]}, "context: expected an object"),
        ({"context": CONTEXT}, "entities: expected a list of 1 to 1000 objects"),
        (
            {"context": CONTEXT, "entities": []},
            'entities: expected a list of 1 to 1000 objects like {"customer_id": ...}, got an '
            "empty list",
        ),
    ],
)
def test_malformed_requests_by_id_are_one_422(client, body, message) -> None:
    response = client.post("/predict", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error.startswith(message) and "\n" not in error


def test_a_set_of_another_model_version_is_refused(client, store_env, trained_x_learner) -> None:
    """A set written for another run (as a materialization for version 99 would leave it) is
    refused with what to run, not scored with features the served version was not given."""
    from ml.online import StoredSet, context_key, encode_row, entity_key, open_store

    store = open_store(_settings(store_env))
    stale = StoredSet(
        model_name=RECIPE,
        model_version="99",
        run_id="0" * 32,
        context={"campaign_id": "cmp_2026_06"},
        entity_keys=["customer_id"],
        key_kinds={"customer_id": "int"},
        features=["age"],
        rows=0,
        relation="analytics_loaders.score_uplift",
        materialized_at="2026-01-01T00:00:00+00:00",
    )
    key = context_key(stale.context)
    try:
        with store.writer(RECIPE, key, stale) as writer:
            writer.write([entity_key([1])], [encode_row([40.0])])
    finally:
        store.close()
    response = _by_id(client, [1], context={"campaign_id": "cmp_2026_06"})
    assert response.status_code == 409
    version = trained_x_learner.model_version
    assert response.json()["error"] == (
        f"the online store holds features of {RECIPE} version 99 (run {'0' * 32}) for context "
        f"{key}, this server serves version {version} (run {trained_x_learner.run_id}): run "
        f"`ml materialize --model {RECIPE}/{version} --context-params '{key}'`"
    )


# -- ml materialize refusals: one line, the store as it was ------------------------------------


def _store_rows(env: dict[str, str]) -> list:
    with sqlite3.connect(env["ML_ONLINE_STORE_PATH"]) as con:
        return (
            con.execute(
                "select model, context, generation, meta from online_sets order by 1, 2"
            ).fetchall()
            + con.execute("select count(*) from online_rows").fetchall()
        )


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        (
            '{"campaign_id": 2026}',
            2,
            "--context-params: campaign_id: expected a string, got int 2026",
        ),
        (
            '{"campaign_id": "cmp_1999_01"}',
            3,
            "the scoring population is empty for campaign_id='cmp_1999_01'; nothing was written",
        ),
    ],
)
def test_materialize_refusals_leave_the_store(store_env, params, code, message) -> None:
    before = _store_rows(store_env)
    result = _materialize(store_env, "--model", f"{RECIPE}@champion", "--context-params", params)
    assert result.exit_code == code
    assert one_line_error(result).endswith(message)
    assert _store_rows(store_env) == before


def test_materialize_to_an_unreachable_redis_is_one_line(
    warehouse_env, trained_x_learner, tmp_path
) -> None:
    server = RedisServer(tmp_path / "gone")
    server.stop()
    env = _redis_env(warehouse_env, f"redis://127.0.0.1:{server.port}/0", "1")
    start = time.monotonic()
    result = _materialize(env, "--model", f"{RECIPE}@champion")
    assert result.exit_code == 4
    assert one_line_error(result).startswith(
        f"Error: online store redis://127.0.0.1:{server.port}/0: unreachable within 1s"
    )
    assert time.monotonic() - start < 30  # the model's artifacts load first; the store fails fast


# -- feature values `ml score` refuses: refused by `ml materialize` too, the store as it was ---

POPULATION = "analytics_loaders.score_uplift"
REFUSED_VALUES = [  # (SQL value, what the message calls it)
    ("'nan'::double", "NaN"),
    ("'-inf'::double", "infinite"),
    ("1e308", "beyond float32's range (+/-3.4e38)"),
]


def _with_bad_values(pristine: Path, folder: Path, value: str) -> Path:
    """A copy of the warehouse whose upcoming campaign has `value` as monetary_30d for 5
    customers spread over the population (in different batches of the online store's writes)."""
    dest = fresh_copy(pristine, folder)
    with duckdb.connect(str(dest)) as con:
        ids = [
            row[0]
            for row in con.execute(
                f"select customer_id from {POPULATION} where campaign_id = ? order by 1",
                [UPCOMING],
            ).fetchall()
        ]
        chosen = ids[:: len(ids) // 5][:5]
        con.execute(
            f"update {POPULATION} set monetary_30d = {value} "
            f"where campaign_id = ? and customer_id in ({', '.join(map(str, chosen))})",
            [UPCOMING],
        )
    return dest


def _refused(what: str) -> str:
    return (
        f"feature column 'monetary_30d' has 5 {what} value(s); a feature must be null (imputed) "
        "or a finite number the model can take"
    )


@pytest.mark.parametrize(("value", "what"), REFUSED_VALUES)
def test_materialize_refuses_the_values_ml_score_refuses(
    store_env, pristine_warehouse, tmp_path, value, what
) -> None:
    """The same one line as `ml score`, before the store is touched: the champion's set stays."""
    env = {
        **store_env,
        "ML_DUCKDB_PATH": str(_with_bad_values(pristine_warehouse, tmp_path, value)),
    }
    before = _store_rows(store_env)
    result = _materialize(env, "--model", f"{RECIPE}@champion")
    assert result.exit_code == 3, result.output
    line = one_line_error(result)
    assert line.endswith(f"{POPULATION}: {_refused(what)}"), line
    assert _store_rows(store_env) == before
    with mock.patch.dict(os.environ, env):
        scored = CliRunner().invoke(main, ["score", "--model", f"{RECIPE}@champion"])
    assert scored.exit_code == 3, scored.output
    assert one_line_error(scored) == line


def _redis_state(url: str) -> dict[str, object]:
    """Every key of the online namespace but the generation counter, and the live set's rows."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = sorted(k.decode() for k in client.keys("ml:online:*"))
        keys.remove("ml:online:generation")
        rows = {k: client.hlen(k) for k in keys if ":rows:" in k}
        return {"keys": keys, "rows": rows, "ttl": {k: client.ttl(k) for k in rows}}
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_value_refused_while_streaming_drops_the_new_set(
    warehouse_env, scored_champion, pristine_warehouse, tmp_path, kind
) -> None:
    """Each batch written is checked as `ml score` checks the batches it scores (what is stored
    is what was checked): with the warehouse's count skipped, the first bad batch still refuses,
    and the store's writer drops the half-written generation, leaving the previous set live."""
    import ml.contract

    server = RedisServer(tmp_path / "redis") if kind == "redis" else None
    try:
        if server is not None:
            store = {"ML_ONLINE_STORE": "redis", "ML_REDIS_URL": server.url}
            state = lambda: _redis_state(server.url)  # noqa: E731
        else:
            store = {"ML_ONLINE_STORE_PATH": str(tmp_path / "online.sqlite")}
            state = lambda: _store_rows(store)  # noqa: E731
        env = _env(warehouse_env, **store)
        assert _materialize(env, "--model", f"{RECIPE}@champion").exit_code == 0
        before = state()
        broken = _with_bad_values(pristine_warehouse, tmp_path / "wh", "'nan'::double")
        with mock.patch.object(ml.contract, "check_value_faults", lambda *args: None):
            result = _materialize({**env, "ML_DUCKDB_PATH": str(broken)}, "--model", RECIPE)
        assert result.exit_code == 3, result.output
        # the first bad batch's count: the 5 values are spread over batches of 10,000 rows
        line = one_line_error(result)
        assert re.search(rf"{POPULATION}: feature column 'monetary_30d' has [1-4] NaN", line), line
        assert state() == before
    finally:
        if server is not None:
            server.stop()


# -- Redis: the production store, and what a store going down does -----------------------------


def test_redis_serves_the_same_scores_then_503_when_it_goes_down(
    warehouse_env, served_champion, batch_scores, tmp_path
) -> None:
    from fastapi.testclient import TestClient
    from threadpoolctl import threadpool_limits

    from ml.serving.app import create_app

    server = RedisServer(tmp_path / "redis")
    try:
        env = _redis_env(warehouse_env, server.url, "1")
        result = _materialize(env, "--model", f"{RECIPE}@champion")
        assert result.exit_code == 0, result.output
        _, _, target, model = served_champion
        app = create_app(_settings(env), target, model=model)
        ids = sorted(batch_scores)[::97]
        with threadpool_limits(limits=None), TestClient(app) as client:
            assert client.get("/ready").status_code == 200
            response = _by_id(client, ids)
            assert response.status_code == 200, response.text
            scores = {p["customer_id"]: p["score"] for p in response.json()["predictions"]}
            assert scores == pytest.approx({i: batch_scores[i] for i in ids}, abs=1e-9, rel=0)
            server.stop()
            down = _by_id(client, ids[:1])
            assert down.status_code == 503
            assert down.json()["error"].startswith(f"online store {server.url}: unreachable")
            ready = client.get("/ready")
            assert ready.status_code == 503 and "unreachable" in ready.json()["error"]
            assert client.get("/health").status_code == 200
    finally:
        server.stop()


def test_a_stalled_redis_delays_only_the_lookups(
    warehouse_env, served_champion, batch_scores, tmp_path
) -> None:
    """A store that stops answering (SIGSTOP: connected, silent) costs each lookup its timeout,
    in a worker thread: lookups wait side by side, not one after another, and /health and
    records requests answer at once meanwhile."""
    server = RedisServer(tmp_path / "redis")
    try:
        env = _redis_env(warehouse_env, server.url, "2")
        assert _materialize(env, "--model", f"{RECIPE}@champion").exit_code == 0
        api = start_server([], process_env(warehouse_env, **env), tmp_path)
        try:
            record = {f["name"]: None for f in api.client.get("/metadata").json()["features"]}
            ids = sorted(batch_scores)[:1]
            assert _by_id(api.client, ids).status_code == 200  # connected before the stall
            os.kill(server.proc.pid, signal.SIGSTOP)
            done: dict[str, float] = {}

            def lookup(n: int) -> None:
                response = _by_id(api.client, ids)
                assert response.status_code == 503, response.text
                assert "unreachable within 2s" in response.json()["error"]
                done[f"lookup{n}"] = time.monotonic()

            start = time.monotonic()
            threads = [threading.Thread(target=lookup, args=(n,)) for n in range(4)]
            for t in threads:
                t.start()
            time.sleep(0.3)  # the lookups are waiting on the store now
            assert api.client.get("/health").status_code == 200
            done["health"] = time.monotonic()
            assert api.client.post("/predict", json={"records": [record]}).status_code == 200
            done["records"] = time.monotonic()
            for t in threads:
                t.join()
            lookups = sorted(v - start for k, v in done.items() if k.startswith("lookup"))
            assert len(lookups) == 4
            assert done["records"] - start < lookups[0]  # answered while the lookups waited
            assert lookups[-1] < 2 * 2  # side by side: four waits of 2 s end within 4 s
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
            api.stop()
    finally:
        server.stop()


# -- end to end: `ml serve` over HTTP -------------------------------------------------------------


def test_ml_serve_answers_by_id_over_http(
    warehouse_env, store_env, trained_x_learner, batch_scores, tmp_path
) -> None:
    """`ml serve` with no model option serves serving.model (the demo: the champion)."""
    env = process_env(warehouse_env, ML_ONLINE_STORE_PATH=store_env["ML_ONLINE_STORE_PATH"])
    server = start_server([], env, tmp_path)
    try:
        metadata = server.client.get("/metadata").json()
        assert (metadata["model_name"], metadata["run_id"]) == (RECIPE, trained_x_learner.run_id)
        some = sorted(batch_scores)[:3]
        response = server.client.post(
            "/predict",
            json={"context": CONTEXT, "entities": [{"customer_id": i} for i in some]},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == trained_x_learner.model_version
        assert [p["score"] for p in body["predictions"]] == pytest.approx(
            [batch_scores[i] for i in some], abs=1e-9, rel=0
        )
    finally:
        server.stop()


def test_metrics_count_requests_lookups_and_misses(store_env, served_champion, batch_scores):
    """/metrics of one app (one worker: in-process counters), in Prometheus' text format."""
    from fastapi.testclient import TestClient
    from threadpoolctl import threadpool_limits

    from ml.serving.app import create_app

    _, _, target, model = served_champion
    app = create_app(_settings(store_env), target, model=model)
    known = sorted(batch_scores)[:3]
    with threadpool_limits(limits=None), TestClient(app) as client:
        assert _by_id(client, [*known, -1, -2]).status_code == 200
        assert _by_id(client, known).status_code == 200
        assert _by_id(client, [1], context={"campaign_id": "cmp_2099_01"}).status_code == 404
        assert (
            client.post(
                "/predict", content=b"{}", headers={"Content-Type": "text/plain"}
            ).status_code
            == 415
        )
        assert client.get("/no/such/path").status_code == 404
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    text = response.text
    assert _sample(text, 'ml_requests_total{route="/predict",status="200"}') == 2
    assert _sample(text, 'ml_requests_total{route="/predict",status="404"}') == 1
    assert _sample(text, 'ml_requests_total{route="/predict",status="415"}') == 1
    assert _sample(text, 'ml_requests_total{route="other",status="404"}') == 1
    assert _sample(text, 'ml_request_duration_seconds_count{route="/predict"}') == 4
    assert _sample(text, "ml_online_store_lookup_duration_seconds_count") == 3
    assert _sample(text, "ml_online_store_entities_total") == 9
    assert _sample(text, "ml_online_store_misses_total") == 3  # two unknown ids, one context
    info = (
        f'ml_model_info{{model_name="{RECIPE}",model_version="{target.model_version}",'
        f'run_id="{target.run_id}"}}'
    )
    assert _sample(text, info) == 1


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in:\n{text}")
