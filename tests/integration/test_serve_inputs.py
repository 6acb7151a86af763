"""`ml serve` against hostile input: request bodies built to make the answer huge or slow (a
record of 100k unknown keys, thousands of errors, long keys and values, deep nesting), a worker
supervisor killed with SIGKILL, and a host or port it cannot serve on.

Bodies go to a real uvicorn process on 127.0.0.1 (time and size are what matter); the CLI
refusals run in-process through CliRunner, as in test_serve.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from serving import (  # tests/integration/serving.py
    process_env,
    session_pids,
    start_server,
    worker_pids,
)

from ml.cli import main

MAX_ERRORS = 10  # ml.serving.body.MAX_ERRORS
SMALL = 4096  # bytes: every refusal below must fit
SURROGATE = "a string escapes an unpaired UTF-16 surrogate ({}), which is not text"


@pytest.fixture(scope="module")
def server(warehouse_env, trained_x_learner, tmp_path_factory):
    """One worker, default limits (1,000 records, 1 MB bodies), served by run id."""
    srv = start_server(
        ["--run-id", trained_x_learner.run_id],
        process_env(warehouse_env),
        tmp_path_factory.mktemp("serve-inputs"),
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def features(server) -> list[str]:
    return [f["name"] for f in server.client.get("/metadata").json()["features"]]


@pytest.fixture(scope="module")
def record(features) -> dict:
    """A valid record: every feature null (imputation fills them)."""
    return dict.fromkeys(features)


def _post(server, body: bytes | str) -> tuple[int, dict, int, float]:
    """(status, JSON body, response bytes, seconds) for a raw JSON body."""
    started = time.perf_counter()
    response = server.client.post(
        "/predict", content=body, headers={"Content-Type": "application/json"}
    )
    seconds = time.perf_counter() - started
    return response.status_code, response.json(), len(response.content), seconds


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, d = divmod(n, 36)
        out = digits[d] + out
    return out


# 100,000 distinct 4-character keys that start with a digit (no feature is named like that)
UNKNOWN = {_base36(36**3 + i): 0 for i in range(100_000)}


def _compact(body: object) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


# -- bodies built to make the 422 huge or slow --------------------------------------------------


def test_a_record_of_100k_unknown_keys_is_a_short_quick_422(server, record) -> None:
    body = _compact({"records": [{**record, **UNKNOWN}]})
    assert 900_000 < len(body) < 1_000_000  # just under serving.max_body_bytes
    status, answer, size, seconds = _post(server, body)
    assert status == 422, answer
    assert size < SMALL and seconds < 1.0, (size, seconds)  # was 11 MB in 5 s
    assert answer["error_count"] == 100_000
    assert len(answer["detail"]) == MAX_ERRORS
    for error in answer["detail"]:
        assert error["type"] == "extra_forbidden"
        assert error["loc"][:3] == ["body", "records", 0] and error["loc"][3] in UNKNOWN
        assert error["input"] == 0
    assert server.client.get("/health").status_code == 200


def test_100k_unknown_top_level_keys_are_a_short_quick_422(server, record) -> None:
    status, answer, size, seconds = _post(server, _compact({"records": [record], **UNKNOWN}))
    assert status == 422, answer
    assert size < SMALL and seconds < 1.0, (size, seconds)
    assert answer["error_count"] == 100_000
    assert {e["type"] for e in answer["detail"]} == {"extra_forbidden"}
    assert all(len(e["loc"]) == 2 and e["loc"][0] == "body" for e in answer["detail"])


def test_many_records_with_unknown_keys_count_them_all(server, record) -> None:
    extra = {f"{i}x": i for i in range(20)}
    status, answer, size, _ = _post(server, _compact({"records": [{**record, **extra}] * 50}))
    assert status == 422 and size < SMALL
    assert answer["error_count"] == 50 * 20
    assert [e["loc"][2] for e in answer["detail"]] == [0] * MAX_ERRORS  # the first record first


def test_thousands_of_errors_list_ten_and_count_them(server, features) -> None:
    # 1,000 empty records: a `missing` error per feature per record, each echoing its record
    status, answer, size, seconds = _post(server, _compact({"records": [{}] * 1000}))
    assert status == 422 and size < SMALL and seconds < 1.0, (size, seconds)
    assert answer["error_count"] == 1000 * len(features)
    assert len(answer["detail"]) == MAX_ERRORS
    first = answer["detail"][0]
    assert first == {
        "type": "missing",
        "loc": ["body", "records", 0, features[0]],
        "msg": "Field required",
        "input": {},
    }


def test_long_keys_and_values_are_elided(server, record) -> None:
    key, value = "k" * 100_000, "v" * 100_000
    region = "r" * 50_000
    records = [{**record, key: value}, {**record, "recency_days": region}]
    status, answer, size, _ = _post(server, _compact({"records": records}))
    assert status == 422 and size < SMALL, size
    extra, wrong = answer["detail"]
    assert extra["type"] == "extra_forbidden"
    assert extra["loc"][3].startswith("kkk") and extra["loc"][3].endswith("(100,000 chars)")
    assert extra["input"].startswith("vvv") and extra["input"].endswith("(100,000 chars)")
    assert len(extra["loc"][3]) <= 80 and len(extra["input"]) <= 80
    assert wrong["type"] == "int_type" and wrong["loc"] == ["body", "records", 1, "recency_days"]
    assert wrong["input"].endswith("(50,000 chars)")


def test_a_big_echoed_object_is_a_preview(server, record) -> None:
    # `not an object` echoes the whole body as its input: a preview and its size instead
    status, answer, size, _ = _post(server, _compact([record] * 900))
    assert status == 422 and size < SMALL
    (error,) = answer["detail"]
    assert error["type"] == "model_attributes_type" and error["loc"] == ["body"]
    assert error["input"].startswith('[{"') and error["input"].endswith("(900 items)")


def test_normal_bad_records_keep_every_field_error(server, record, features) -> None:
    # within the record's size, pydantic reports all that is wrong, extra fields included
    bad = {k: v for k, v in record.items() if k != features[0]}
    bad["shoe_size"] = 42
    bad[features[1]] = float("nan")
    status, answer, _, _ = _post(server, json.dumps({"records": [bad]}))
    assert status == 422
    found = {(e["type"], e["loc"][-1]) for e in answer["detail"]}
    assert ("missing", features[0]) in found
    assert ("extra_forbidden", "shoe_size") in found
    assert answer["error_count"] == len(answer["detail"]) == 3
    nan = next(e for e in answer["detail"] if e["loc"][-1] == features[1])
    assert nan["input"] == "nan"  # JSON cannot carry NaN: spelled out


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("[" * 100_000, "nested too deeply"),
        ('{"records": [{"age": 1' + "0" * 5000 + "}]}", "a number has more than 4,300 digits"),
        ('{"records": [', "Expecting value"),
        # half a UTF-16 pair: not text, and no UTF-8 response could echo it back
        ('{"records": [{"age": "\\ud800"}]}', SURROGATE.format("\\ud800")),
        ('{"records": [{}], "\\udc00": 1}', SURROGATE.format("\\udc00")),
        ('{"context": {"campaign_id": "\\udbff"}, "entities": []}', SURROGATE.format("\\udbff")),
    ],
    ids=["deep", "long-number", "truncated", "surrogate-value", "surrogate-key", "surrogate-by-id"],
)
def test_unparseable_json_is_a_short_json_invalid(server, body, problem) -> None:
    status, answer, size, seconds = _post(server, body)
    assert status == 422 and size < SMALL and seconds < 1.0
    (error,) = answer["detail"]
    assert error["type"] == "json_invalid" and error["loc"][0] == "body"
    assert error["ctx"]["error"] == problem


def test_a_body_that_is_not_utf8_is_400(server) -> None:
    status, answer, _, _ = _post(server, b'{"records": [{"region": "\xff"}]}')
    assert status == 400
    assert answer == {"detail": "There was an error parsing the body"}


# -- killing the supervisor of several workers --------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_killing_the_parent_stops_its_workers(warehouse_env, trained_x_learner, tmp_path) -> None:
    srv = start_server(
        ["--run-id", trained_x_learner.run_id, "--workers", "2"],
        process_env(warehouse_env),
        tmp_path,
    )
    parent, port = srv.proc.pid, int(srv.url.rsplit(":", 1)[1])
    try:
        deadline = time.monotonic() + 30
        while len(workers := worker_pids(parent)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) == 2, workers

        os.kill(parent, signal.SIGKILL)  # no chance to pass anything on to its workers
        srv.proc.wait(timeout=10)
        killed = time.monotonic()
        while session_pids(parent) and time.monotonic() - killed < 8:
            time.sleep(0.1)
        left = session_pids(parent)  # workers, and anything else the server started
        assert left == [], f"still running after {time.monotonic() - killed:.1f}s: {left}"

        with pytest.raises(ConnectionRefusedError):  # nothing listens on the port
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        with socket.socket() as again:  # and a new server can take it
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", port))
            again.listen()
    finally:
        srv.client.close()
        for pid in session_pids(parent):  # only on failure: this server's own processes
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# -- a host or port it cannot serve on: one line, before the announcement -----------------------


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert not any(line.startswith("serving ") for line in lines), result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_refused(ml_env, trained_x_learner, workers) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            main,
            ["serve", "--run-id", trained_x_learner.run_id, "--port", str(port)]
            + ["--workers", workers],
        )
    assert _one_line_error(result) == (
        f"Error: cannot serve on 127.0.0.1:{port}: the port is already in use"
    )
    assert "ML_SERVE_RUN_ID" not in os.environ  # nothing set up for workers that never ran


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("not a host!", "'not a host!' is neither an IP address nor a host name"),
        ("256.1.1.1", "'256.1.1.1' is not a valid IPv4 address"),
        ("1.2.3", "'1.2.3' is not a valid IPv4 address"),
        ("::1::2", "'::1::2' is not a valid IPv6 address"),
        ("-host.example", "'-host.example' is neither an IP address nor a host name"),
    ],
)
def test_a_bad_host_is_refused(ml_env, trained_x_learner, host, problem) -> None:
    result = CliRunner().invoke(
        main, ["serve", "--run-id", trained_x_learner.run_id, "--host", host, "--port", "8123"]
    )
    where = f"[{host}]:8123" if ":" in host else f"{host}:8123"
    assert _one_line_error(result) == f"Error: cannot serve on {where}: {problem}"


def test_hosts_that_are_fine() -> None:
    from ml.serving.run import bind, check_host

    for host in ["127.0.0.1", "0.0.0.0", "::1", "localhost", "api-1.internal", "my_service"]:
        check_host(host, 8000)
    with bind("localhost", 0) as sock:  # a name that resolves; port 0 picks a free port
        assert sock.getsockname()[0] == "127.0.0.1" and sock.getsockname()[1] > 0
