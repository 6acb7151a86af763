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

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ml.errors import UnsupportedModelError
from ml.sqlcompile.dialects import number

# Objectives whose prediction is the margin itself, and those that apply the logistic sigmoid.
IDENTITY_OBJECTIVES = frozenset({"reg:squarederror", "reg:pseudohubererror", "reg:absoluteerror"})
LOGISTIC_OBJECTIVES = frozenset({"binary:logistic", "reg:logistic"})
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
    if getattr(model, "booster", None) not in (None, "gbtree"):
        raise UnsupportedModelError(f"{what}: booster '{model.booster}' (gbtree only)")
    booster = model.get_booster()
    learner = json.loads(bytes(booster.save_raw("json")))["learner"]
    objective = learner["objective"]["name"]
    if objective not in IDENTITY_OBJECTIVES | LOGISTIC_OBJECTIVES:
        raise UnsupportedModelError(
            f"{what}: objective '{objective}' (the SQL engine compiles "
            f"{', '.join(sorted(IDENTITY_OBJECTIVES | LOGISTIC_OBJECTIVES))})"
        )
    gb = learner["gradient_booster"]
    if gb.get("name") != "gbtree":
        raise UnsupportedModelError(f"{what}: booster '{gb.get('name')}' (gbtree only)")
    params = learner["learner_model_param"]
    if int(params.get("num_target", "1")) != 1 or int(params.get("num_class", "0")) > 1:
        raise UnsupportedModelError(f"{what}: a model with several outputs")
    forest = gb["model"]
    indptr = [int(i) for i in forest["iteration_indptr"]]
    begin, end = model._get_iteration_range(None)
    end = end or len(indptr) - 1
    trees = forest["trees"][indptr[begin] : indptr[end]]
    for tree in trees:
        if int(tree["tree_param"].get("num_feature", "0")) and tree.get("categories_nodes"):
            raise UnsupportedModelError(f"{what}: categorical splits")
        if any(int(t) != 0 for t in tree.get("split_type", [])):
            raise UnsupportedModelError(f"{what}: categorical splits")
    base = float(np.float32(_base_score(params["base_score"])))
    logistic = objective in LOGISTIC_OBJECTIVES
    if logistic:
        base = math.log(base / (1.0 - base))
    return Booster(trees, base, logistic, int(params["num_feature"]))


def _base_score(text: str) -> float:
    """`base_score` as the JSON model stores it: '5E-1', or '[5E-1]' since XGBoost 3."""
    values = json.loads(text) if text.strip().startswith("[") else [float(text)]
    if len(values) != 1:
        raise UnsupportedModelError("a model with several base scores (several outputs)")
    return float(values[0])


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
