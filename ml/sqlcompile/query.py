"""The compiled SELECT, built in layers of sub-selects so no expression nests deeply:

1. the matrix columns (the fitted preprocessing) beside the pass-through columns;
2. each XGBoost model's trees in groups of `GROUP_TREES`, one column per group;
3. the group columns summed `GROUP_TREES` at a time, as many layers as needed, down to one
   margin column per model;
4. each model's prediction (the margin, or its sigmoid), then the score combining them.

Each layer selects the pass-through columns (entity keys, context columns) unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from ml.errors import UnsupportedModelError
from ml.sqlcompile.dialects import Dialect, number
from ml.sqlcompile.features import MatrixColumn
from ml.sqlcompile.learners import ScoreFormula
from ml.sqlcompile.trees import tree_sql

GROUP_TREES = 16  # trees per summed column, and columns per sum in the later layers
PREFIX = "_ml_"  # the compiler's own column names; a pass-through column may not start so


@dataclass(frozen=True)
class CompiledQuery:
    sql: str
    dialect: str
    trees: int
    estimator: str


def build(
    formula: ScoreFormula,
    matrix: list[MatrixColumn],
    d: Dialect,
    source: str,
    passthrough: list[str],
    score_column: str = "score",
) -> CompiledQuery:
    for name in passthrough:
        if name.startswith(PREFIX) or name == score_column:
            raise UnsupportedModelError(
                f"column '{name}' clashes with the compiled query's own column names"
            )
    keep = ", ".join(d.ident(c) for c in passthrough)
    lead = f"{keep}, " if keep else ""
    x = [f"{PREFIX}x{j}" for j in range(len(matrix))]
    select = ", ".join(f"{c.expr} as {d.ident(name)}" for c, name in zip(matrix, x, strict=True))
    sql = f"select {lead}{select} from {source} as {PREFIX}population"
    quoted = [d.ident(n) for n in x]
    nullable = [c.nullable for c in matrix]

    sums: dict[str, list[str]] = {}  # part -> expressions of its current layer
    for part in formula.parts:
        trees = [tree_sql(t, quoted, nullable, part.fixed) for t in part.booster.trees]
        sums[part.name] = [
            " + ".join(trees[i : i + GROUP_TREES]) for i in range(0, len(trees), GROUP_TREES)
        ] or ["0.0e0"]
    layer = 0
    while True:
        cols: list[str] = []
        nxt: dict[str, list[str]] = {}
        for name, exprs in sums.items():
            names = [f"{PREFIX}{name}_{layer}_{i}" for i in range(len(exprs))]
            cols += [f"{e} as {d.ident(n)}" for e, n in zip(exprs, names, strict=True)]
            quoted_names = [d.ident(n) for n in names]
            nxt[name] = [
                " + ".join(quoted_names[i : i + GROUP_TREES])
                for i in range(0, len(quoted_names), GROUP_TREES)
            ]
        sql = f"select {lead}{', '.join(cols)} from ({sql}) as {PREFIX}layer{layer}"
        layer += 1
        sums = nxt
        if all(len(e) == 1 for e in sums.values()):
            break
    predictions = []
    for part in formula.parts:
        margin = f"{number(part.booster.base_margin)} + {sums[part.name][0]}"
        pred = f"1.0e0 / (1.0e0 + exp(-({margin})))" if part.booster.logistic else margin
        predictions.append(f"{pred} as {d.ident(PREFIX + part.name)}")
    sql = f"select {lead}{', '.join(predictions)} from ({sql}) as {PREFIX}layer{layer}"
    combine = formula.combine.format(**{p.name: d.ident(PREFIX + p.name) for p in formula.parts})
    sql = f"select {lead}{combine} as {d.ident(score_column)} from ({sql}) as {PREFIX}predictions"
    if d.max_query_chars is not None and len(sql) > d.max_query_chars:
        raise UnsupportedModelError(
            f"the compiled {d.name} query is {len(sql):,} characters, over {d.name}'s limit of "
            f"{d.max_query_chars:,}; use fewer or shallower trees, or --engine python"
        )
    n_trees = sum(len(p.booster.trees) for p in formula.parts)
    return CompiledQuery(sql, d.name, n_trees, formula.estimator)
