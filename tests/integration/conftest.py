"""Integration fixtures built on the session warehouse (tests/conftest.py): scores to keep
intact, and a closed copy of the warehouse to break or lock on purpose."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest
from warehouse_snapshots import snapshot  # tests/integration/warehouse_snapshots.py

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def scored_champion(warehouse_env, trained_x_learner):
    """The upcoming campaign scored once with the champion (idempotent): rows to keep intact."""
    with mock.patch.dict(os.environ, warehouse_env):
        from ml.config import load_settings
        from ml.registry import ModelRef
        from ml.score import score

        return score(
            load_settings(root=ROOT),
            ModelRef(name="xgboost_x_learner", alias_or_version="champion"),
        )


@pytest.fixture(scope="session")
def pristine_warehouse(warehouse_env, scored_champion, tmp_path_factory) -> Path:
    """A closed copy of the scored session warehouse; `fresh_copy` it before changing it."""
    dest = tmp_path_factory.mktemp("pristine") / "warehouse.duckdb"
    snapshot(warehouse_env, dest)
    return dest


@pytest.fixture(scope="session")
def served_champion(warehouse_env, trained_x_learner):
    """(settings, ref, target, model): the champion's run resolved and loaded as `ml serve`
    does, for TestClient apps built with `create_app(settings, target, model=...)`."""
    with mock.patch.dict(os.environ, warehouse_env):
        from ml import registry
        from ml.config import load_settings
        from ml.registry import ModelRef
        from ml.serving.run import resolve

        settings = load_settings(root=ROOT)
        ref = ModelRef(run_id=trained_x_learner.run_id)
        target = resolve(settings, ref)
        return settings, ref, target, registry.load_pyfunc(target)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port for the session (`make redis` installs it)."""
    from redis_server import RedisServer  # tests/integration/redis_server.py

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()
