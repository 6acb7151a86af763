"""A trained model (fitted preprocessing + estimator) compiled into one SELECT per SQL dialect,
so a warehouse scores its own rows: `select <keys>, <score> from <population>`.

`compile_model` refuses, before any work, what it cannot reproduce (`UnsupportedModelError`,
one line naming the estimator, feature or limit). What compiles gives the score
`ScoringModel.predict_columns` gives for the same row, within 1e-6 (see `trees` for why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ml.errors import UnsupportedModelError
from ml.sqlcompile.dialects import DIALECTS, dialect
from ml.sqlcompile.features import check_feature_kinds, matrix_columns
from ml.sqlcompile.learners import formula
from ml.sqlcompile.query import CompiledQuery, build

if TYPE_CHECKING:
    from ml.model import TrainingSchema
    from ml.preprocess import Preprocessor


def compile_model(
    schema: TrainingSchema,
    preprocessor: Preprocessor,
    estimator: Any,
    dialect_name: str,
    source: str,
    passthrough: list[str],
) -> CompiledQuery:
    """The model's score over `source` (a table name or a parenthesized SELECT), with the
    `passthrough` columns (entity keys, context columns) beside it."""
    d = dialect(dialect_name)
    check_feature_kinds(schema.features, f"model {schema.recipe}")
    score = formula(estimator, schema.task, preprocessor.width)
    matrix = matrix_columns(preprocessor, schema.features, d)
    for part in score.parts:
        expected = len(matrix) + len(part.fixed)
        if part.booster.n_features != expected:
            _refuse_width(part.booster.n_features, expected, score.estimator)
    return build(score, matrix, d, source, passthrough)


def _refuse_width(found: int, expected: int, estimator: str) -> None:
    raise UnsupportedModelError(
        f"estimator {estimator}: an XGBoost model takes {found} features, the preprocessing "
        f"gives {expected}"
    )


def for_dbt(
    schema: TrainingSchema, preprocessor: Preprocessor, estimator: Any, dialect_name: str,
    score_model: str,
) -> str:  # fmt: skip
    """The SELECT `ml compile` prints and a training run logs: over the scoring population as
    a dbt model reads it (`{{ ref('...') }}`), keys and context columns passed through, ready
    to review or to put in a dbt model of one's own."""
    keep = list(dict.fromkeys([*schema.entity_keys, *schema.context.values()]))
    source = "{{ ref('" + score_model + "') }}"
    return compile_model(schema, preprocessor, estimator, dialect_name, source, keep).sql


def model_sql_files(
    schema: TrainingSchema, preprocessor: Preprocessor, estimator: Any, score_model: str
) -> dict[str, str]:
    """`model_sql/<dialect>.sql` for each dialect the model compiles to; what did not compile
    is said in one line in `model_sql/not_compiled.txt` (training never fails for it)."""
    files: dict[str, str] = {}
    refused: list[str] = []
    for name in DIALECTS:
        try:
            files[f"model_sql/{name}.sql"] = for_dbt(
                schema, preprocessor, estimator, name, score_model
            )
        except UnsupportedModelError as exc:
            refused.append(f"{name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - what the compiler did not foresee never fails training
            refused.append(f"{name}: the compiler failed ({type(exc).__name__}: {exc})")
    if refused:
        files["model_sql/not_compiled.txt"] = "\n".join(refused) + "\n"
    return files


__all__ = ["DIALECTS", "CompiledQuery", "compile_model", "for_dbt", "model_sql_files"]
