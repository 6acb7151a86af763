"""The trees of a fitted XGBoost booster as its own JSON model (`save_raw('json')`) states them:
split features, float32 split values and leaves, default directions, the objective and the
base score. Read by the SQL compiler and by the small-batch tree walker, which both reproduce
XGBoost's prediction from them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ml.errors import UnsupportedModelError

# Objectives whose prediction is the margin itself, and those that apply the logistic sigmoid.
IDENTITY_OBJECTIVES = frozenset({"reg:squarederror", "reg:pseudohubererror", "reg:absoluteerror"})
LOGISTIC_OBJECTIVES = frozenset({"binary:logistic", "reg:logistic"})


@dataclass(frozen=True)
class BoosterTrees:
    """The trees one prediction walks (its iteration range), in the order XGBoost adds them."""

    trees: list[dict[str, Any]]
    objective: str
    base_score: float  # as the model states it (a probability for logistic objectives)
    n_features: int

    @property
    def logistic(self) -> bool:
        return self.objective in LOGISTIC_OBJECTIVES


def read_trees(booster: Any, iteration_range: tuple[int, int], what: str) -> BoosterTrees:
    """The trees in `iteration_range` (end 0: all), refusing what neither reproduction handles:
    other boosters and objectives, categorical splits, several outputs."""
    learner = json.loads(bytes(booster.save_raw("json")))["learner"]
    objective = learner["objective"]["name"]
    if objective not in IDENTITY_OBJECTIVES | LOGISTIC_OBJECTIVES:
        raise UnsupportedModelError(
            f"{what}: objective '{objective}' (supported: "
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
    begin, end = iteration_range
    end = end or len(indptr) - 1
    trees = forest["trees"][indptr[begin] : indptr[end]]
    for tree in trees:
        if tree.get("categories_nodes") or any(int(t) != 0 for t in tree.get("split_type", [])):
            raise UnsupportedModelError(f"{what}: categorical splits")
    return BoosterTrees(
        trees, objective, _base_score(params["base_score"]), int(params["num_feature"])
    )


def _base_score(text: str) -> float:
    """`base_score` as the JSON model stores it: '5E-1', or '[5E-1]' since XGBoost 3."""
    values = json.loads(text) if text.strip().startswith("[") else [float(text)]
    if len(values) != 1:
        raise UnsupportedModelError("a model with several base scores (several outputs)")
    return float(values[0])
