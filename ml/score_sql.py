"""The SQL engine of `ml score`: the model compiled to the warehouse's dialect and run there,
its rows written by the warehouse itself (`INSERT ... SELECT` on DuckDB, `MERGE ... USING
(SELECT ...)` on BigQuery), so no population row leaves it. Only a sample for the drift report
does. Also what `ml compile` prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ml import contract
from ml.errors import ContractError
from ml.sqlcompile import CompiledQuery, compile_model, for_dbt

if TYPE_CHECKING:
    from ml.config import Settings
    from ml.drift import DriftAccumulator
    from ml.registry import ModelRef, TrainedModel
    from ml.warehouse import Relation, SliceWriter, Warehouse


def compiled_sql(settings: Settings, ref: ModelRef, dialect: str) -> str:
    """`ml compile`: the SELECT of a registered model, over its scoring population as a dbt
    model reads it."""
    from ml import registry, tracking

    tracking.configure(settings)
    trained = registry.load_trained(registry.resolve(ref))
    m = trained.model
    return for_dbt(m.schema, m.preprocessor, m.estimator, dialect, trained.recipe.data.score_model)


def compile_for(
    trained: TrainedModel, dialect: str, source: str, passthrough: list[str]
) -> CompiledQuery:
    m = trained.model
    return compile_model(m.schema, m.preprocessor, m.estimator, dialect, source, passthrough)


def check_values(
    wh: Warehouse, relation: Relation, features: Mapping[str, str], filters: Mapping[str, Any]
) -> None:
    """What the Python engine checks batch by batch, counted by the warehouse before any SQL
    writes; and no feature whose live type the compiled query would read differently."""
    live = wh.columns(relation)
    for name, kind in features.items():
        if kind != "decimal" and live.get(name) == "decimal":
            raise ContractError(
                f"{relation}: feature column '{name}' is decimal, trained as {kind}: the SQL "
                "engine reads it as trained only (cast it in the dbt model, or --engine python)"
            )
    contract.check_value_faults(wh.value_faults(relation, features, filters), str(relation))


def drift_sample(
    wh: Warehouse,
    relation: Relation,
    features: Mapping[str, str],
    filters: Mapping[str, Any],
    profile: Mapping[str, Any] | None,
    rows: int,
) -> DriftAccumulator | None:
    """PSI from about `rows` rows the warehouse samples."""
    if not profile:
        return None
    from ml.dataset import feature_columns
    from ml.drift import DriftAccumulator

    sample = wh.read_sample(relation, list(features), filters, rows)
    drift = DriftAccumulator(profile)
    if sample.num_rows:
        drift.add(feature_columns(sample, list(features)))
    return drift


def write_scores(
    wh: Warehouse,
    writer: SliceWriter,
    relation: Relation,
    trained: TrainedModel,
    passthrough: list[str],
    filters: Mapping[str, Any],
) -> CompiledQuery:
    """The compiled model over the filtered population, written into the writer's slice."""
    schema = trained.model.schema
    columns = list(dict.fromkeys([*passthrough, *schema.features]))
    population = wh.population(relation, columns, filters)
    compiled = compile_for(trained, wh.dialect, population.sql, passthrough)
    live = wh.columns(relation)
    kinds = {c: live[c] for c in passthrough}
    kinds["score"] = "float"
    writer.write_query(compiled.sql, population.params, kinds)
    return compiled
