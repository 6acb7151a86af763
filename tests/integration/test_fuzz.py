"""Fuzzing `ml serve` with schemathesis: requests generated from the server's own /openapi.json
against a real uvicorn process on 127.0.0.1. No response may be a 5xx, and every response must
conform to the schema: status codes, content types, headers and bodies; schema-valid records
are scored (2xx) and schema-breaking ones refused (4xx).

Two ways in: per-operation Hypothesis strategies (valid and invalid /predict bodies, a fixed
number of examples each, counted), and one `schemathesis run` with every check over the
examples, coverage (boundary values, missing headers, wrong methods) and fuzzing phases.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import hypothesis.configuration
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode
from serving import process_env, start_server  # tests/integration/serving.py

pytestmark = pytest.mark.slow
MAX_EXAMPLES = 100  # per operation and mode
EXAMPLES: Counter[str] = Counter()
# Hypothesis strategies per operation rather than `schema.parametrize()`: schemathesis' lazy
# pytest loader (`from_fixture`, needed for a server a fixture starts) breaks on pytest 9.2.
OPERATIONS = [
    ("POST", "/predict", "positive"),  # records that fit the schema: must be scored
    ("POST", "/predict", "negative"),  # bodies that break it: must be refused with a 4xx
    ("GET", "/health", "positive"),
    ("GET", "/ready", "positive"),
    ("GET", "/metadata", "positive"),
    ("GET", "/metrics", "positive"),
]


@pytest.fixture(scope="module")
def fuzzed_server(warehouse_env, trained_x_learner, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    hypothesis.configuration.set_hypothesis_home_dir(folder / ".hypothesis")  # not the repo
    server = start_server(
        ["--run-id", trained_x_learner.run_id], process_env(warehouse_env), folder
    )
    yield server
    server.stop()
    print(f"\nschemathesis examples: {dict(EXAMPLES)}")


@pytest.fixture(scope="module")
def api_schema(fuzzed_server):
    return schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")


def test_every_operation_is_fuzzed(api_schema) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == {(method, path) for method, path, _ in OPERATIONS}


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_api_conforms_to_its_schema_and_never_fails(api_schema, method, path, mode) -> None:
    strategy = api_schema[path][method].as_strategy(generation_mode=GenerationMode(mode))

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # the same examples on every run: a failure reproduces
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case) -> None:
        EXAMPLES[f"{method} {path} {mode}"] += 1
        response = case.call_and_validate(timeout=30)  # every applicable check
        assert response.status_code < 500, response.text

    fuzz()


def test_schemathesis_run_finds_no_issue(fuzzed_server, tmp_path) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    out = subprocess.run(
        [
            str(cli),
            "run",
            f"{fuzzed_server.url}/openapi.json",
            "--checks=all",
            "--phases=examples,coverage,fuzzing",
            f"--max-examples={MAX_EXAMPLES}",
            "--seed=7",
            "--workers=1",
            "--request-timeout=30",
            "--suppress-health-check=all",
            "--no-color",
        ],
        cwd=tmp_path,  # its caches and reports stay out of the repo
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]
    assert "No issues found" in out.stdout, out.stdout[-8000:]
    generated = next(line for line in out.stdout.splitlines() if " generated," in line)
    print(f"\nschemathesis run: {generated.strip()}")
