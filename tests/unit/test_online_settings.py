"""The online store's and serving's settings, and the one encoding of contexts and keys both
sides of the store share (`ml materialize` writes with it, /predict reads with it)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ml.config import load_settings
from ml.errors import ConfigError
from ml.online import context_key, entity_key, open_store
from ml.online.redis import RedisStore
from ml.online.sqlite import SQLiteStore


def test_defaults_embedded_store_and_the_demo_model(root: Path) -> None:
    s = load_settings(root=root)
    assert s.serving.model == "xgboost_x_learner@champion"
    assert s.serving.reload_seconds == 30
    store = open_store(s)
    assert isinstance(store, SQLiteStore)
    assert store.path == root / "data" / "online_store.sqlite"


def test_redis_from_the_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ML_ONLINE_STORE", "redis")
    monkeypatch.setenv("ML_REDIS_URL", "redis://:s3cret@cache:6379/2")
    monkeypatch.setenv("ML_ONLINE_STORE_TIMEOUT", "0.5")
    store = open_store(load_settings(root=root))
    assert isinstance(store, RedisStore) and store.timeout == 0.5
    assert store.where == "online store redis://:***@cache:6379/2"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"ML_ONLINE_STORE": "redis"},
            r"^config/base\.yaml: serving\.online_store\.url: required for type redis",
        ),
        (
            {"ML_ONLINE_STORE": "memcached"},
            r"serving\.online_store\.type: input should be 'sqlite' or 'redis' \(got 'memcached'\)",
        ),
        (
            {"ML_ONLINE_STORE_TIMEOUT": "0"},
            r"serving\.online_store\.timeout_seconds: input should be greater than 0",
        ),
    ],
)
def test_bad_store_settings_are_one_line(
    root: Path, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_settings(root=root)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("model: 'a@b@c'", r"serving\.model: string should match pattern"),
        ("model: 'name with spaces'", r"serving\.model: string should match pattern"),
        (
            "reload_seconds: -1",
            r"serving\.reload_seconds: input should be greater than or equal to 0",
        ),
    ],
)
def test_bad_serving_settings_are_one_line(project: Path, line: str, message: str) -> None:
    (project / "config" / "dev.yaml").write_text(f"serving:\n  {line}\n")
    with pytest.raises(ConfigError, match=r"^config/dev\.yaml: " + message):
        load_settings(root=project)


def test_one_context_key_whoever_writes_it() -> None:
    # materialize has typed values (a date, a float param), a request has JSON ones
    assert context_key({"day": dt.date(2026, 12, 1), "rate": 5.0}) == context_key(
        {"rate": 5, "day": "2026-12-01"}
    )
    assert context_key({"campaign_id": "cmp"}) == '{"campaign_id":"cmp"}'
    assert context_key({"x": 5.5}) != context_key({"x": 5})
    assert context_key({"x": True}) != context_key({"x": 1})


def test_entity_keys_keep_their_type_and_order() -> None:
    assert entity_key([17]) == "[17]"
    assert entity_key([17]) != entity_key(["17"])
    assert entity_key([1, "a"]) != entity_key(["a", 1])
