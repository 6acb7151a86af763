"""An XGBoost booster as SQL: each tree a nested CASE, read from the booster's own JSON model
(`save_raw('json')`), whose split values and leaves are the float32 numbers it predicts with.

Exactness. XGBoost sends a row left when `float32(x) < s` (x the input value, s the float32
split value), and to the node's default side when x is missing. The compiled query works on
the 64-bit value x: `float32(x) < s` holds exactly when x is below the midpoint m between s
and the float32 just below it, p, and at m itself when rounding the tie to even lands on p
(p's last mantissa bit is 0). So each split compiles to `x < m` or `x <= m` against a float64
constant: exact in any dialect, with no float32 type needed (BigQuery has none).

Leaves are summed in float64 where XGBoost adds float32s; the difference is a few float32
units in the last place of the margin (tests check the scores agree within 1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml.sqlcompile.dialects import number
from ml.xgbtrees import read_trees

FLOAT32_OVERFLOW = 2.0**128  # where float32 rounding reaches infinity, as a virtual float32


@dataclass(frozen=True)
class Booster:
    """The trees of one fitted XGBoost model and how its margin becomes a prediction."""

    trees: list[dict[str, Any]]
    base_margin: float
    logistic: bool  # prediction = sigmoid(margin); else the margin itself
    n_features: int


def read_booster(model: Any, what: str) -> Booster:
    """The trees `model.predict` uses (its iteration range), refusing what the compiler does
    not reproduce: other boosters, objectives, categorical splits, multiple outputs."""
    read = read_trees(model.get_booster(), model._get_iteration_range(None), what)
    base = float(np.float32(read.base_score))
    if read.logistic:
        base = math.log(base / (1.0 - base))
    return Booster(read.trees, base, read.logistic, read.n_features)


def threshold(split: float) -> tuple[str, float]:
    """(`<` or `<=`, m): `float32(x) < split` exactly when `x <op> m` for a float64 x."""
    s = np.float32(split)
    with np.errstate(over="ignore"):
        below = np.nextafter(s, np.float32(-np.inf))
    if np.isinf(below):  # s is float32's lowest: only values rounding to -inf are below it
        return "<=", (float(s) - FLOAT32_OVERFLOW) / 2.0
    midpoint = (float(below) + float(s)) / 2.0  # exact: both are float32s
    even = int(below.view(np.int32)) & 1 == 0
    return ("<=" if even else "<"), midpoint


def tree_sql(
    tree: Mapping[str, Any],
    columns: list[str],
    nullable: list[bool],
    fixed: Mapping[int, float] | None = None,
) -> str:
    """One tree as nested CASE expressions over the matrix columns (names already quoted).

    `fixed` maps a feature index to a constant (the S-learner's treatment columns): splits on
    it are resolved here, so only the branch taken is written."""
    left, right = tree["left_children"], tree["right_children"]
    index, cond, default_left = (
        tree["split_indices"],
        tree["split_conditions"],
        tree["default_left"],
    )
    fixed = fixed or {}

    def node(i: int) -> str:
        if left[i] == -1:
            return number(float(np.float32(cond[i])))
        j = int(index[i])
        if j in fixed:
            goes_left = np.float32(fixed[j]) < np.float32(cond[i])
            return node(left[i] if goes_left else right[i])
        op, m = threshold(float(cond[i]))
        test = f"{columns[j]} {op} {number(m)}"
        if nullable[j]:
            test = f"coalesce({test}, {'true' if default_left[i] else 'false'})"
        return f"case when {test} then {node(left[i])} else {node(right[i])} end"

    return node(0)
