"""A trained model (fitted preprocessing + estimator) compiled into one SELECT per SQL dialect,
so a warehouse scores its own rows: `select <keys>, <score> from <population>`.

`compile_model` refuses, before any work, what it cannot reproduce (`UnsupportedModelError`,
one line naming the estimator, feature or limit). What compiles gives the score
`ScoringModel.predict_columns` gives for the same row, within 1e-6 (see `trees` for why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml.sqlcompile.dialects import DIALECTS, dialect
from ml.sqlcompile.features import check_feature_kinds, matrix_columns
from ml.sqlcompile.learners import formula
from ml.sqlcompile.query import CompiledQuery, build

if TYPE_CHECKING:
    from ml.model import ScoringModel


def compile_model(
    model: ScoringModel, dialect_name: str, source: str, passthrough: list[str]
) -> CompiledQuery:
    """The model's score over `source` (a table name or a parenthesized SELECT), with the
    `passthrough` columns (entity keys, context columns) beside it."""
    d = dialect(dialect_name)
    schema = model.schema
    check_feature_kinds(schema.features, f"model {schema.recipe}")
    score = formula(model.estimator, schema.task, model.preprocessor.width)
    matrix = matrix_columns(model.preprocessor, schema.features, d)
    for part in score.parts:
        expected = len(matrix) + len(part.fixed)
        if part.booster.n_features != expected:
            raise_width(part.booster.n_features, expected, score.estimator)
    return build(score, matrix, d, source, passthrough)


def raise_width(found: int, expected: int, estimator: str) -> None:
    from ml.errors import UnsupportedModelError

    raise UnsupportedModelError(
        f"estimator {estimator}: an XGBoost model takes {found} features, the preprocessing "
        f"gives {expected}"
    )


def dbt_source(model: ScoringModel, score_model: str) -> tuple[str, list[str]]:
    """The population as a dbt model reads it, and the columns to pass through: what
    `ml compile` prints and the training run logs, ready for a dbt model of one's own."""
    schema = model.schema
    keep = list(dict.fromkeys([*schema.entity_keys, *schema.context.values()]))
    return "{{ ref('" + score_model + "') }}", keep


__all__ = ["DIALECTS", "CompiledQuery", "compile_model", "dbt_source"]
