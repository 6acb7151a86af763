"""The warehouse: one interface (`base.Warehouse`), one folder per backend.

`connect(settings)` picks the backend named by `warehouse.type` from `BACKENDS`; nothing outside
this package knows which one it talks to. A new backend is a new folder implementing the
protocol and one line in the table.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from ml.errors import ConfigError
from ml.warehouse.base import KeyStats, Population, Relation, SliceWriter, Warehouse

if TYPE_CHECKING:
    from ml.config import Settings

# warehouse.type -> "module:class", imported only when used (each backend has heavy clients)
BACKENDS = {
    "duckdb": "ml.warehouse.duckdb.backend:DuckDBWarehouse",
    "bigquery": "ml.warehouse.bigquery.backend:BigQueryWarehouse",
}


def database_name(settings: Settings) -> str | None:
    """The database part of the relation names dbt writes for this warehouse."""
    wh = settings.warehouse
    if wh.type == "duckdb" and wh.duckdb is not None:
        return Path(wh.duckdb.path).stem
    if wh.type == "bigquery" and wh.bigquery is not None:
        return wh.bigquery.project
    return None


def warehouse_dialect(settings: Settings) -> str:
    """The SQL dialect of the configured warehouse (compiled models are written in it)."""
    return settings.warehouse.type


def connect(settings: Settings, *, create: bool = False) -> Warehouse:
    """The configured warehouse, not yet connected (`open()` or first use connects). A
    warehouse that is a file (DuckDB) must exist unless `create` (`ml demo-data` loads a new
    one); every other command refuses a missing one in one line and creates nothing."""
    kind = settings.warehouse.type
    if kind not in BACKENDS:
        raise ConfigError(f"config: warehouse.type: '{kind}' is not supported by this build")
    module, _, name = BACKENDS[kind].partition(":")
    backend: Warehouse = getattr(importlib.import_module(module), name)(settings, create=create)
    return backend


__all__ = [
    "BACKENDS",
    "KeyStats",
    "Population",
    "Relation",
    "SliceWriter",
    "Warehouse",
    "connect",
    "database_name",
    "warehouse_dialect",
]
