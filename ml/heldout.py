"""The held-out rows a model is judged on: the test split, plus whole past campaigns kept out
of training (`evaluation.holdout_contexts`), each row with its campaign's KNOWN treatment
probability (the randomization's treated share, not a fitted propensity)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ml import contract
from ml.config import Settings
from ml.dataset import Split
from ml.errors import ContractError, RecipeError
from ml.plan import Plan

if TYPE_CHECKING:
    import pyarrow as pa


def check_population(table: pa.Table, p: Plan, context: dict[str, Any]) -> None:
    """The data contract of a training population (or a holdout campaign's rows)."""
    d, relation = p.recipe.data, str(p.train_model.relation)
    contract.check_not_empty(table, relation, context)
    contract.check_keys(table, d.entity_keys, relation)
    contract.check_target(table, d.target, p.task, relation)
    contract.check_feature_values(table, {f: p.kinds[f] for f in p.features}, relation)
    if d.treatment:
        contract.check_treatment(table, d.treatment, relation)


def read_holdout_contexts(
    settings: Settings, p: Plan, context: dict[str, Any], columns: list[str]
) -> list[pa.Table]:
    """The rows of each `evaluation.holdout_contexts` campaign, checked before training starts:
    a value of the recipe's one filter context, not the training context, with rows, both
    arms (randomized) and the population contract."""
    import pyarrow.compute as pc

    from ml.recipe import coerce_context_value
    from ml.warehouse import connect

    where = f"{p.label}: evaluation.holdout_contexts"
    filtered = [n for n in p.recipe.context if n in p.filter_columns]
    if len(filtered) != 1:
        raise RecipeError(f"{where}: needs exactly one context param applied as a filter")
    param = filtered[0]
    column = p.filter_columns[param]
    parts = []
    with connect(settings) as wh:
        for raw in p.recipe.evaluation.holdout_contexts:
            try:
                value = coerce_context_value(p.recipe.context[param], raw)
            except ValueError as exc:
                raise RecipeError(f"{where}: {raw!r}: {exc}") from None
            if value == context.get(param):
                raise RecipeError(f"{where}: {value!r} is the training context itself")
            part = wh.read_arrow(p.train_model.relation, columns, {column: value})
            label = f"{p.train_model.relation} ({param}={value!r})"
            if part.num_rows == 0:
                raise RecipeError(f"{where}: {value!r} has no rows in {p.train_model.relation}")
            treated = pc.sum(part.column(p.recipe.data.treatment or "")).as_py() or 0
            if not 0 < treated < part.num_rows:
                raise RecipeError(f"{where}: {label} has one treatment arm only (not randomized)")
            check_population(part, p, {param: value})
            parts.append(part)
    return parts


def join_holdout(table: pa.Table, split: Split, parts: list[pa.Table]) -> tuple[pa.Table, Split]:
    """The population plus the holdout campaigns' rows, which join the held-out rows only: the
    honest check that a model generalizes to the next campaign."""
    import pyarrow as pa

    n = table.num_rows
    combined = pa.concat_tables([table, *(part.cast(table.schema) for part in parts)])
    held = np.concatenate([split.test, np.arange(n, combined.num_rows)])
    return combined, Split(split.train, held)


def known_propensity(table: pa.Table, t: np.ndarray, p: Plan) -> np.ndarray:
    """Each row's known treatment probability: the treated share of its campaign's whole
    randomized population (the rows of its context), not a fitted propensity."""
    import pyarrow.compute as pc

    columns = list(p.filter_columns.values())
    if not columns:
        groups = np.zeros(len(t), dtype=np.int64)
    else:
        keys = [pc.cast(table.column(c), "string").to_numpy(zero_copy_only=False) for c in columns]
        _, groups = np.unique(np.stack(keys, axis=1).astype(str), axis=0, return_inverse=True)
        groups = groups.ravel()
    share = np.bincount(groups, weights=t) / np.bincount(groups)
    if np.any((share <= 0) | (share >= 1)):
        raise ContractError(
            f"{p.train_model.relation}: a context has one treatment arm only: its assignment "
            "was not randomized, so no held-out effect can be estimated"
        )
    return np.asarray(share[groups], dtype=np.float64)
