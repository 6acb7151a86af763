"""DuckDB SQL text: quoted identifiers only; values always travel as `?` parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ml.errors import ConfigError

if TYPE_CHECKING:
    from ml.warehouse.base import Relation


def checked_ident(name: str) -> str:
    """Identifiers come from config and recipe names; refuse anything that could break out."""
    if not name or '"' in name or "`" in name or "\x00" in name:
        raise ConfigError(f"invalid identifier {name!r}")
    return name


def quote_ident(name: str) -> str:
    """A validated identifier, double-quoted."""
    return '"' + checked_ident(name) + '"'


def qualified(relation: Relation) -> str:
    return ".".join(
        quote_ident(p) for p in (relation.database, relation.schema, relation.name) if p
    )


def marks(items: list[Any]) -> str:
    """`?, ?, ?`: one placeholder per value."""
    return ", ".join("?" for _ in items)


def select(
    relation: Relation, columns: list[str], filters: dict[str, Any]
) -> tuple[str, list[Any]]:
    """`select <columns> from <relation> where <column> = ? and ...` and its parameters."""
    sql = f"select {', '.join(quote_ident(c) for c in columns)} from {qualified(relation)}"
    where = " and ".join(f"{quote_ident(c)} = ?" for c in filters)
    return (f"{sql} where {where}" if where else sql), list(filters.values())
