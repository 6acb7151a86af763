"""The fitted preprocessing as SQL: one expression per column of the matrix the estimator sees,
with the same arithmetic as `Preprocessor.transform` (float64 fill, centre, scale; the float32
rounding is folded into the split thresholds, see `ml.sqlcompile.trees`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ml.errors import UnsupportedModelError
from ml.preprocess import Preprocessor
from ml.sqlcompile.dialects import Dialect, number

# The kinds the compiler turns into numbers exactly as Python does. A decimal is refused: its
# conversion to a 64-bit float is not specified to round the same way in every warehouse.
COMPILED_KINDS = frozenset({"int", "float", "bool", "string"})


@dataclass(frozen=True)
class MatrixColumn:
    """One column of the estimator's input matrix, as SQL over the population's columns."""

    expr: str
    nullable: bool  # may be NULL (XGBoost's missing value) in the compiled query


def check_feature_kinds(features: Mapping[str, str], where: str) -> None:
    for name, kind in features.items():
        if kind not in COMPILED_KINDS:
            raise UnsupportedModelError(
                f"{where}: feature '{name}' is {kind}; the SQL engine compiles "
                f"{', '.join(sorted(COMPILED_KINDS))} features only (use --engine python)"
            )


def matrix_columns(
    pre: Preprocessor, features: Mapping[str, str], d: Dialect
) -> list[MatrixColumn]:
    """In `pre.feature_names` order: numeric columns first, then each categorical's codes."""
    out: list[MatrixColumn] = []
    for col in pre.numeric:
        x = d.to_double(d.ident(col.name), features[col.name])
        nullable = col.fill is None
        if not nullable:
            x = f"coalesce({x}, {number(col.fill or 0.0)})"
        if col.center != 0.0:
            x = f"({x} - {number(col.center)})"
        if col.scale != 1.0:
            x = f"({x} / {number(col.scale)})"
        out.append(MatrixColumn(x, nullable))
    for cat in pre.categorical:
        value = f"coalesce({d.ident(cat.name)}, {d.string(cat.fill)})"
        if pre.spec.encoding == "onehot":
            for v in cat.categories:
                out.append(
                    MatrixColumn(
                        f"(case when {value} = {d.string(v)} then 1.0e0 else 0.0e0 end)", False
                    )
                )
            known = ", ".join(d.string(v) for v in cat.categories)
            other = f"{value} not in ({known})" if known else "true"
            out.append(MatrixColumn(f"(case when {other} then 1.0e0 else 0.0e0 end)", False))
        else:
            whens = " ".join(
                f"when {d.string(v)} then {number(float(i))}" for i, v in enumerate(cat.categories)
            )
            code = f"(case {value} {whens} else -1.0e0 end)" if whens else "-1.0e0"
            out.append(MatrixColumn(code, False))
    return out
