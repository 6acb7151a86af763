"""The demo warehouse: generate the marketing-uplift data and load it as dbt's raw sources."""

from __future__ import annotations

import os

from ml.config import Settings
from ml.warehouse import connect

RAW_SCHEMA_ENV = "ML_RAW_SCHEMA"


def raw_schema() -> str:
    """The raw schema, read from the same variable (and default) as models/staging/_sources.yml."""
    return os.environ.get(RAW_SCHEMA_ENV) or "raw"


def load_demo_data(settings: Settings, n_customers: int = 50_000, seed: int = 7) -> dict[str, int]:
    """Replace the raw tables with freshly generated ones; returns rows per table."""
    from ml.demo_data import generate

    tables = generate(n_customers=n_customers, seed=seed)
    schema = raw_schema()
    with connect(settings, create=True) as wh:  # the demo's raw data starts a new warehouse
        wh.replace_tables(schema, tables)
    return {f"{schema}.{name}": t.num_rows for name, t in tables.items()}
