"""Copies of the session warehouse for tests that break data or kill writers on purpose.
pytest puts this folder on sys.path: `from warehouse_snapshots import snapshot`."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb


def snapshot(env: dict[str, str], dest: Path) -> None:
    """Copy every committed row of the session warehouse into a new file `dest`. Name it
    warehouse.duckdb: dbt's views embed the catalog name, which DuckDB takes from the file."""
    with duckdb.connect(env["ML_DUCKDB_PATH"]) as con:
        con.execute(f"attach '{dest}' as snapshot")
        try:
            con.execute("copy from database warehouse to snapshot")
        finally:
            con.execute("detach snapshot")


def fresh_copy(pristine: Path, folder: Path) -> Path:
    """A private copy of a closed warehouse file, as folder/warehouse.duckdb."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / "warehouse.duckdb"
    shutil.copyfile(pristine, dest)
    return dest


def contents(path: Path | str) -> dict:
    """What a refused or killed command must leave as it was: every table dbt can see, and per
    score relation (the predictions schema's views; `_`-prefixed tables hold their slices) its
    row count and latest scored_at (a policy curve: its latest run id)."""
    with duckdb.connect(str(path)) as con:
        tables = sorted(
            con.execute(
                "select table_schema, table_name, table_type from information_schema.tables"
            ).fetchall()
        )
        scores = {
            name: con.execute(
                f"select count(*), max({'run_id' if name.endswith('__policy') else 'scored_at'}) "
                f'from predictions."{name}"'
            ).fetchone()
            for schema, name, _ in tables
            if schema == "predictions" and not name.startswith("_")
        }
        # a model rebuilt empty (or half-loaded) is a write too
        rows = {
            f"{schema}.{name}": con.execute(f'select count(*) from "{schema}"."{name}"').fetchone()[
                0
            ]
            for schema, name, kind in tables
            if kind == "BASE TABLE" and schema != "predictions"
        }
    return {"tables": tables, "scores": scores, "rows": rows}
