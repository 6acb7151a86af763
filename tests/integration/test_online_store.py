"""The online store's contract on both backends, a SQLite file and a real redis-server on a
loopback port: a set is replaced atomically (a reader hammering it during the swap sees the old
rows or the new ones, never a mix), a failed write leaves the old set and no rows behind, the
old generation is gone after a swap, and a store that does not answer is one error line within
its timeout."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from redis_server import RedisServer  # tests/integration/redis_server.py

from ml.errors import OnlineStoreError
from ml.online import StoredSet, context_key, encode_row, entity_key
from ml.online.redis import RedisStore
from ml.online.sqlite import SQLiteStore

ENTITIES = 3_000
CONTEXT = context_key({"campaign_id": "cmp_test"})


def _stored(run_id: str) -> StoredSet:
    return StoredSet(
        model_name="m",
        model_version="1",
        run_id=run_id,
        context={"campaign_id": "cmp_test"},
        entity_keys=["customer_id"],
        key_kinds={"customer_id": "int"},
        features=["generation", "x"],
        rows=0,
        relation="analytics.population",
        materialized_at="2026-01-01T00:00:00+00:00",
    )


def _write(store, model: str, generation: int, batch: int = 500, fail_after: int | None = None):
    """ENTITIES rows whose first feature is `generation`, in batches."""
    with store.writer(model, CONTEXT, _stored(f"run{generation}")) as writer:
        for start in range(0, ENTITIES, batch):
            if fail_after is not None and start >= fail_after:
                raise RuntimeError("the warehouse went away")
            ids = range(start, min(start + batch, ENTITIES))
            writer.write(
                [entity_key([i]) for i in ids],
                [encode_row([float(generation), None if i % 7 == 0 else i / 3]) for i in ids],
            )
    return writer


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path: Path):
    if request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "online.sqlite", timeout_seconds=2)
    else:
        opened = RedisStore(request.getfixturevalue("redis_url"), timeout_seconds=2)
    yield opened
    opened.close()


def _model(request) -> str:
    return f"m_{request.node.name.replace('[', '_').rstrip(']')}"


def test_round_trip_and_unknown_entities(store, request) -> None:
    model = _model(request)
    assert store.lookup(model, CONTEXT, [entity_key([1])]) is None  # never materialized
    writer = _write(store, model, 1)
    assert writer.rows == ENTITIES
    found = store.lookup(model, CONTEXT, [entity_key([7]), entity_key([10**9]), entity_key([8])])
    assert found is not None
    assert found.stored.run_id == "run1" and found.stored.rows == ENTITIES
    assert found.rows == [[1.0, None], None, [1.0, 8 / 3]]
    assert store.lookup(model, context_key({"campaign_id": "other"}), [entity_key([7])]) is None


def test_readers_see_one_generation_during_the_swap(store, request) -> None:
    model = _model(request)
    _write(store, model, 1)
    wanted = [entity_key([i]) for i in range(0, ENTITIES, 37)]
    seen: set[float] = set()
    mixed: list[set[float]] = []
    stop = threading.Event()

    def read() -> None:
        reader = (
            SQLiteStore(store.path, 2)
            if isinstance(store, SQLiteStore)
            else RedisStore(store.url, 2)
        )
        try:
            while not stop.is_set():
                found = reader.lookup(model, CONTEXT, wanted)
                generations = {row[0] for row in found.rows if row is not None}
                if len(generations) != 1 or any(row is None for row in found.rows):
                    mixed.append(generations)
                if found.stored.run_id != f"run{int(next(iter(generations)))}":
                    mixed.append(generations)
                seen.update(generations)
        finally:
            reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for generation in range(2, 6):
            _write(store, model, generation, batch=200)
    finally:
        stop.set()
        thread.join()
    assert not mixed, mixed[:3]
    assert 1.0 in seen and len(seen) >= 2, seen  # the reader saw at least one swap
    assert store.lookup(model, CONTEXT, [entity_key([0])]).rows == [[5.0, None]]
    assert _stored_rows(store, model) == ENTITIES  # the old generations are gone


def test_a_failed_write_leaves_the_old_set(store, request) -> None:
    model = _model(request)
    _write(store, model, 1)
    with pytest.raises(RuntimeError, match="the warehouse went away"):
        _write(store, model, 2, fail_after=1_000)
    found = store.lookup(model, CONTEXT, [entity_key([5])])
    assert found.stored.run_id == "run1" and found.rows == [[1.0, 5 / 3]]
    assert _stored_rows(store, model) == ENTITIES  # nothing of the failed write is left
    _write(store, model, 3)
    assert store.lookup(model, CONTEXT, [entity_key([5])]).rows == [[3.0, 5 / 3]]


def _stored_rows(store, model: str) -> int:
    """Rows the store holds for `model`, all generations (the backend's own view)."""
    if isinstance(store, SQLiteStore):
        import sqlite3

        with sqlite3.connect(store.path) as con:
            return con.execute("select count(*) from online_rows").fetchone()[0]
    client = store.client()
    keys = list(client.scan_iter(match=f"ml:online:{model}:*rows:*"))
    return sum(client.hlen(k) for k in keys)


def test_an_unreachable_redis_is_one_line_within_the_timeout(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "gone")
    port = server.port
    server.stop()  # nothing listens on this port any more
    store = RedisStore(f"redis://:hunter2@127.0.0.1:{port}/0", timeout_seconds=0.5)
    start = time.monotonic()
    with pytest.raises(OnlineStoreError) as caught:
        store.ping()
    assert time.monotonic() - start < 2
    message = caught.value.message
    assert message.startswith(
        f"online store redis://:***@127.0.0.1:{port}/0: unreachable within 0.5s"
    )
    assert "hunter2" not in message and "\n" not in message


def test_a_sqlite_store_not_written_yet_has_no_contexts(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "absent" / "online.sqlite", timeout_seconds=1)
    store.ping()  # nothing materialized is not "down"
    assert store.lookup("m", CONTEXT, [entity_key([1])]) is None
    assert not (tmp_path / "absent").exists()  # reading never creates the file
