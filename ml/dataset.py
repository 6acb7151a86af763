"""From a loaded Arrow table to model arrays: the split, outcome vectors and feature columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.errors import ContractError
from ml.recipe import SplitSpec

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass
class Split:
    train: np.ndarray  # row indices
    test: np.ndarray


def in_key_order(table: pa.Table, keys: list[str]) -> pa.Table:
    """The rows sorted by their (unique) entity keys. SQL promises no row order without `order
    by`: a parallel build, or BigQuery's read streams, return the same rows in another order
    each time, and a seeded split picks rows by position, so the same data would train
    another model. In key order, the same rows make the same split and the same model."""
    return table.sort_by([(key, "ascending") for key in keys])


def split_rows(
    table: pa.Table, spec: SplitSpec, seed: int, strata: np.ndarray | None, relation: str
) -> Split:
    n = table.num_rows
    if spec.method == "column":
        if not spec.column or spec.test_values is None:  # the recipe's validator requires both
            raise ContractError(f"{relation}: split: method column needs column and test_values")
        if spec.column not in table.column_names:
            raise ContractError(
                f"{relation}: split column '{spec.column}' is not in the loaded columns"
            )
        values = table.column(spec.column).to_pylist()
        held = np.array([v in set(spec.test_values) for v in values])
        split = Split(np.flatnonzero(~held), np.flatnonzero(held))
    else:
        from sklearn.model_selection import train_test_split

        idx = np.arange(n)
        stratify = (
            strata
            if spec.stratify and strata is not None and _stratifiable(strata, spec.test_size)
            else None
        )
        train, test = train_test_split(
            idx, test_size=spec.test_size, random_state=seed, stratify=stratify
        )
        split = Split(np.sort(train), np.sort(test))
    if len(split.train) == 0 or len(split.test) == 0:
        raise ContractError(
            f"{relation}: the split leaves {len(split.train)} training and {len(split.test)} test rows; both need rows"
        )
    return split


def _stratifiable(strata: np.ndarray, test_size: float) -> bool:
    _, counts = np.unique(strata, return_counts=True)
    return bool(counts.min() >= 2 and min(test_size, 1 - test_size) * len(strata) >= len(counts))


def vector(table: pa.Table, column: str) -> np.ndarray:
    return np.asarray(table.column(column).to_numpy(zero_copy_only=False), dtype=np.float64)


def feature_columns(
    table: pa.Table, features: list[str], rows: np.ndarray | None = None
) -> dict[str, Any]:
    """Feature name -> column: numeric ones as float64 numpy with NaN for nulls, strings as
    Arrow arrays (encoded vectorized by the preprocessor)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, Any] = {}
    for name in features:
        col = table.column(name)
        if rows is not None:
            col = col.take(pa.array(rows))
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            out[name] = col
        else:
            out[name] = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    return out
