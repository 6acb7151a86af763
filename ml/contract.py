"""Schema contract checks on loaded data, before any fitting or predicting.

Each failure is a ContractError naming the relation and the column, so the fix is obvious.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ml.errors import ContractError

if TYPE_CHECKING:
    import pyarrow as pa


def check_columns(live: Mapping[str, str], expected: Mapping[str, str], relation: str) -> None:
    """The relation has every expected column with the expected logical kind."""
    for column, kind in expected.items():
        if column not in live:
            raise ContractError(
                f"{relation}: column '{column}' is missing (the dbt model changed? rebuild it or update the recipe)"
            )
        if live[column] != kind and not (kind == "float" and live[column] in {"int", "decimal"}):
            raise ContractError(
                f"{relation}: column '{column}' is {live[column]}, expected {kind} (the dbt model changed? rebuild it or retrain)"
            )


def check_keys(table: pa.Table, keys: list[str], relation: str) -> None:
    for key in keys:
        nulls = table.column(key).null_count
        if nulls:
            raise ContractError(f"{relation}: key column '{key}' has {nulls} null value(s)")
    if table.num_rows:
        distinct = table.group_by(keys).aggregate([]).num_rows
        if distinct != table.num_rows:
            dupes = table.num_rows - distinct
            raise ContractError(
                f"{relation}: key ({', '.join(keys)}) has {dupes} duplicate row(s); expected one row per key"
            )


def check_not_empty(table: pa.Table, relation: str, context: Mapping[str, object]) -> None:
    if table.num_rows == 0:
        where = ", ".join(f"{k}={v!r}" for k, v in context.items()) or "no filter"
        raise ContractError(f"{relation}: the population is empty for {where}")


def check_target(table: pa.Table, target: str, task: str, relation: str) -> None:
    import pyarrow.compute as pc

    column = table.column(target)
    if column.null_count:
        raise ContractError(
            f"{relation}: target column '{target}' has {column.null_count} null value(s)"
        )
    if task in {"classification", "uplift"}:
        values = set(pc.unique(column).to_pylist())
        if task == "classification" and len(values) < 2:
            raise ContractError(
                f"{relation}: target column '{target}' has a single class {sorted(values)}; a classifier needs two"
            )
        if task == "classification" and not values <= {0, 1}:
            raise ContractError(
                f"{relation}: target column '{target}' has values {sorted(values)[:5]}; expected 0/1"
            )


def check_treatment(table: pa.Table, treatment: str, relation: str) -> None:
    import pyarrow.compute as pc

    column = table.column(treatment)
    if column.null_count:
        raise ContractError(
            f"{relation}: treatment column '{treatment}' has {column.null_count} null value(s)"
        )
    values = {int(v) for v in pc.unique(column).to_pylist()}
    if not values <= {0, 1}:
        raise ContractError(
            f"{relation}: treatment column '{treatment}' has values {sorted(values)[:5]}; expected binary 0/1"
        )
    if len(values) < 2:
        arm = "control" if values == {0} else "treatment"
        raise ContractError(
            f"{relation}: treatment column '{treatment}' has one arm only (all rows are {arm}); uplift needs both"
        )
