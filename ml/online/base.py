"""What every online store provides: the `OnlineStore` and `SetWriter` protocols, and the one
encoding of contexts, entity keys and feature rows both sides of the store share.

A *set* is the scoring population of one model and context as `ml materialize` copied it: one
row of feature values per entity, plus what it was materialized for (`StoredSet`). Writing a
set replaces the previous one for that model and context atomically: a reader sees the old set
or the new one, never a mix.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Protocol


@dataclass(frozen=True)
class StoredSet:
    """What one materialization recorded beside its rows."""

    model_name: str
    model_version: str | None
    run_id: str
    context: dict[str, Any]
    entity_keys: list[str]
    key_kinds: dict[str, str]  # entity key -> "int" or "string"
    features: list[str]  # the order of the values in each stored row
    rows: int
    relation: str
    materialized_at: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> StoredSet:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Found:
    """A lookup's answer: the set it read and, per entity asked for, its row or None."""

    stored: StoredSet
    rows: list[list[Any] | None]


class SetWriter(Protocol):
    """Writes a new set beside the current one; a clean exit swaps it in, an exception drops it
    and leaves the current set as it was."""

    rows: int

    def __enter__(self) -> SetWriter: ...

    def write(self, entities: Sequence[str], rows: Sequence[str]) -> None:
        """Encoded entity keys and their encoded feature rows (`entity_key`, `encode_row`)."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class OnlineStore(Protocol):
    """One connection to the configured store (opened on first use)."""

    @property
    def where(self) -> str:
        """The store as a message names it (file path, or URL without its password)."""
        ...

    def ping(self) -> None:
        """Raise OnlineStoreError unless the store answers within the configured timeout."""
        ...

    def writer(self, model: str, context: str, stored: StoredSet) -> SetWriter: ...

    def lookup(self, model: str, context: str, entities: Sequence[str]) -> Found | None:
        """The current set's rows for `entities` (encoded keys), or None when nothing was ever
        materialized for this model and context."""
        ...

    def close(self) -> None: ...


def context_key(context: Mapping[str, Any]) -> str:
    """A context as the store names it: the same JSON whichever side writes it (`ml
    materialize` from typed params, /predict from a request): dates as ISO text, whole floats
    as integers."""
    return json.dumps(
        {name: _plain(value) for name, value in context.items()},
        sort_keys=True,
        separators=(",", ":"),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def entity_key(values: Sequence[int | str]) -> str:
    """An entity as the store names it: its key values, in the recipe's key order, as JSON."""
    return json.dumps(list(values), separators=(",", ":"))


def encode_row(values: Sequence[Any]) -> str:
    """One entity's feature values (floats, strings, None for nulls) as the store keeps them."""
    return json.dumps(values, separators=(",", ":"))


def decode_row(text: str | bytes) -> list[Any]:
    row: list[Any] = json.loads(text)
    return row
