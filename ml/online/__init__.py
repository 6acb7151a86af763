"""The online store: entity features by key, for serving by id. One protocol (`base`), one
module per backend; `open_store(settings)` picks it from `serving.online_store.type`. Nothing
outside this package knows which one it talks to."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ml.online.base import (
    Found,
    OnlineStore,
    SetWriter,
    StoredSet,
    context_key,
    encode_row,
    entity_key,
)

if TYPE_CHECKING:
    from ml.config import Settings

# serving.online_store.type -> "module:class", imported only when used (redis is a client library)
BACKENDS = {
    "sqlite": "ml.online.sqlite:SQLiteStore",
    "redis": "ml.online.redis:RedisStore",
}


def open_store(settings: Settings) -> OnlineStore:
    """The configured store, not yet connected (its first use connects)."""
    config = settings.serving.online_store
    module, _, name = BACKENDS[config.type].partition(":")
    cls = getattr(importlib.import_module(module), name)
    if config.type == "redis":
        store: OnlineStore = cls(config.url, config.timeout_seconds)
    else:
        store = cls(settings.path(config.path), config.timeout_seconds)
    return store


__all__ = [
    "BACKENDS",
    "Found",
    "OnlineStore",
    "SetWriter",
    "StoredSet",
    "context_key",
    "encode_row",
    "entity_key",
    "open_store",
]
