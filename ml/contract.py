"""Schema contract checks on loaded data, before any fitting or predicting.

Each failure is a ContractError naming the relation and the column, so the fix is obvious.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ml.errors import ContractError
from ml.kinds import FLOAT32_MAX, INT_EXACT_MAX

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


def check_feature_values(table: pa.Table, kinds: Mapping[str, str], relation: str) -> None:
    """Every numeric feature value is null or one the model takes the same way everywhere:
    finite, within float32's range, an int exactly representable (ml.kinds). The API refuses
    the same values with a 422, so a row gets the same verdict in training, batch and online."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for name, kind in kinds.items():
        if kind not in ("int", "float", "decimal"):
            continue
        column = table.column(name)
        if _all_in_range(column, kind):
            continue  # the usual case, in one pass: the counts below only for a refusal
        if kind == "int":
            wide = pc.or_(pc.greater(column, INT_EXACT_MAX), pc.less(column, -INT_EXACT_MAX))
            _refuse(
                relation, name, pc.sum(wide).as_py(), f"beyond +/-{INT_EXACT_MAX:,} (2**53 - 1)"
            )
            continue
        values = pc.cast(column, pa.float64())
        _refuse(relation, name, pc.sum(pc.is_nan(values)).as_py(), "NaN")
        _refuse(relation, name, pc.sum(pc.is_inf(values)).as_py(), "infinite")
        big = pc.and_(pc.is_finite(values), pc.greater(pc.abs(values), FLOAT32_MAX))
        _refuse(relation, name, pc.sum(big).as_py(), "beyond float32's range (+/-3.4e38)")


def _all_in_range(column: pa.ChunkedArray, kind: str) -> bool:
    """No value `check_feature_values` would refuse: ints within +/-(2**53 - 1); floats and
    decimals finite and within float32's range (NaN and infinities fail the comparison)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind == "int":
        bounds = pc.min_max(column)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        return low is None or (low >= -INT_EXACT_MAX and high <= INT_EXACT_MAX)
    if pa.types.is_floating(column.type) and column.null_count == 0:
        # no nulls: the values buffer is the column, so numpy's min and max read it in place
        # (a NaN makes both NaN and fails the test): two passes, nothing allocated
        for chunk in column.chunks:
            values = chunk.to_numpy(zero_copy_only=True)
            if values.size and not (values.min() >= -FLOAT32_MAX and values.max() <= FLOAT32_MAX):
                return False
        return True
    values = column if pa.types.is_floating(column.type) else pc.cast(column, pa.float64())
    return pc.all(pc.less_equal(pc.abs(values), FLOAT32_MAX)).as_py() is not False


# What `check_feature_values` refuses, by the names a warehouse counts them under (the SQL
# engine checks the same values in the warehouse, before any SQL writes).
VALUE_FAULTS = {
    "int_range": f"beyond +/-{INT_EXACT_MAX:,} (2**53 - 1)",
    "nan": "NaN",
    "inf": "infinite",
    "float32_range": "beyond float32's range (+/-3.4e38)",
}


def check_value_faults(faults: Mapping[str, Mapping[str, int]], relation: str) -> None:
    """The warehouse's counts of refused values (feature -> fault -> rows), refused as
    `check_feature_values` refuses them."""
    for column, counts in faults.items():
        for fault, what in VALUE_FAULTS.items():
            _refuse(relation, column, counts.get(fault, 0), what)


def _refuse(relation: str, column: str, count: int | None, what: str) -> None:
    if count:
        raise ContractError(
            f"{relation}: feature column '{column}' has {count} {what} value(s); a feature must "
            "be null (imputed) or a finite number the model can take"
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
