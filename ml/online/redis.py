"""The production online store: Redis.

A set's rows are one hash per generation (`<prefix>rows:<generation>`: entity -> features) and
its record one string (`<prefix>meta:<generation>`); `<prefix>current` names the live
generation. A materialization writes a new generation's hash (expiring while it is written, so a
writer that dies leaves nothing for long), then flips `current` with one SET and unlinks the old
generation. A lookup is one Lua script (atomic in Redis): the pointer, the record and the rows
of one generation, never a mix.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any

from ml.errors import OnlineStoreError, one_line
from ml.online.base import Found, StoredSet, decode_row

NAMESPACE = "ml:online:"
WRITING_TTL_SECONDS = 86_400  # a generation not yet swapped in expires after this
_LOOKUP = """
local g = redis.call('GET', KEYS[1])
if not g then return false end
local rows_key = KEYS[3] .. g
local out = {}
for i = 1, #ARGV, 4000 do
  local part = redis.call('HMGET', rows_key, unpack(ARGV, i, math.min(i + 3999, #ARGV)))
  for j = 1, #part do out[#out + 1] = part[j] end
end
return {g, redis.call('GET', KEYS[2] .. g), out}
"""


def _prefix(model: str, context: str) -> str:
    return f"{NAMESPACE}{model}:{context}:"


class RedisStore:
    def __init__(self, url: str, timeout_seconds: float) -> None:
        self.url = url
        self.timeout = timeout_seconds
        self._client: Any = None
        self._script: Any = None
        self._opening = threading.Lock()  # lookups run in the server's worker threads
        self._meta: dict[tuple[str, str], tuple[bytes, StoredSet]] = {}

    @property
    def where(self) -> str:
        # redis://[user]:password@host: the password never reaches a message
        return "online store " + re.sub(r"(://[^:/@\s]*:)[^@\s]+@", r"\1***@", self.url)

    def client(self) -> Any:
        with self._opening:
            return self._open()

    def _open(self) -> Any:
        if self._client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            try:
                self._client = redis.Redis.from_url(
                    self.url,
                    socket_timeout=self.timeout,
                    socket_connect_timeout=self.timeout,
                    retry=Retry(NoBackoff(), 0),  # down is down: answer within the timeout
                )
            except ValueError as exc:  # a malformed URL
                raise OnlineStoreError(f"{self.where}: {one_line(exc, 200)}") from None
            self._script = self._client.register_script(_LOOKUP)
        return self._client

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise OnlineStoreError(
                f"{self.where}: unreachable within {self.timeout:g}s ({one_line(exc, 160)})"
            ) from None
        except redis.RedisError as exc:
            raise OnlineStoreError(f"{self.where}: {one_line(exc, 200)}") from None

    def ping(self) -> None:
        client = self.client()
        with self._errors():
            client.ping()

    def writer(self, model: str, context: str, stored: StoredSet) -> _Writer:
        self.ping()
        return _Writer(self, _prefix(model, context), stored)

    def lookup(self, model: str, context: str, entities: Sequence[str]) -> Found | None:
        self.client()
        prefix = _prefix(model, context)
        with self._errors():
            answer = self._script(
                keys=[f"{prefix}current", f"{prefix}meta:", f"{prefix}rows:"], args=list(entities)
            )
        if answer is None:
            return None
        generation, meta, rows = answer
        if meta is None:  # the pointer moved and the old record went between two calls
            raise OnlineStoreError(f"{self.where}: generation {generation!r} has no record")
        cached = self._meta.get((model, context))
        if cached is None or cached[0] != generation:  # parsed once per generation
            cached = (generation, StoredSet.from_json(meta))
            self._meta[(model, context)] = cached
        return Found(cached[1], [None if r is None else decode_row(r) for r in rows])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class _Writer:
    def __init__(self, store: RedisStore, prefix: str, stored: StoredSet) -> None:
        self.store, self.prefix, self.stored = store, prefix, stored
        self.rows = 0
        self.generation = 0

    @property
    def _rows_key(self) -> str:
        return f"{self.prefix}rows:{self.generation}"

    def __enter__(self) -> _Writer:
        with self.store._errors():
            self.generation = int(self.store.client().incr(f"{NAMESPACE}generation"))
        return self

    def write(self, entities: Sequence[str], rows: Sequence[str]) -> None:
        client = self.store.client()
        with self.store._errors():
            pipe = client.pipeline(transaction=False)
            pipe.hset(self._rows_key, mapping=dict(zip(entities, rows, strict=True)))
            pipe.expire(self._rows_key, WRITING_TTL_SECONDS)
            pipe.execute()
        self.rows += len(entities)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client = self.store.client()
        if exc_type is not None:
            with contextlib.suppress(Exception):
                client.unlink(self._rows_key)
            return
        meta = replace(self.stored, rows=self.rows).to_json()
        with self.store._errors():
            pipe = client.pipeline(transaction=True)
            pipe.set(f"{self.prefix}meta:{self.generation}", meta)
            pipe.persist(self._rows_key)
            pipe.set(f"{self.prefix}current", self.generation, get=True)  # the one flip
            old = pipe.execute()[-1]
            if old is not None:
                old = old.decode()
                client.unlink(f"{self.prefix}rows:{old}", f"{self.prefix}meta:{old}")
