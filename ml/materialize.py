"""`ml materialize`: copy the recipe's scoring population for one context (its entity keys and
the model's features, read as `ml score` reads them) from the warehouse into the online store,
where `POST /predict` looks entities up by id. The population gets the verdict `ml score` gives
it (its contract, then every feature value, `ml.contract.check_feature_values`) before the
previous set for that model and context is replaced atomically; memory is bounded by
`serving.online_store.batch_size` rows.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml import contract, population, registry
from ml.config import Settings
from ml.dbt import DbtProject
from ml.errors import ContractError
from ml.online import OnlineStore, StoredSet, context_key, encode_row, entity_key, open_store
from ml.plan import Plan, plan
from ml.progress import Steps
from ml.recipe import parse_context_params, resolve_context
from ml.registry import ModelRef

if TYPE_CHECKING:
    import pyarrow as pa

    from ml.model import TrainingSchema
    from ml.warehouse import Warehouse

KEY_KINDS = ("int", "string")  # what a JSON request can name an entity by


@dataclass
class MaterializeResult:
    rows: int
    model_name: str
    model_version: str | None
    run_id: str
    context: dict[str, Any]
    relation: str
    store: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "run_id": self.run_id,
            "context": self.context,
            "relation": self.relation,
            "store": self.store,
            "seconds": round(self.seconds, 3),
        }


def materialize(
    settings: Settings,
    ref: ModelRef,
    context_params: str | dict[str, Any] | None = None,
    *,
    steps: Steps | None = None,
) -> MaterializeResult:
    """Replace the online store's set for the model and context with the warehouse's rows."""
    steps = steps or Steps(enabled=False)
    given = parse_context_params(context_params)
    definition = registry.open_definition(
        settings, ref, steps, "reading the model's recipe and training schema"
    )
    context = resolve_context(definition.recipe, given, "score")
    with steps.step("checking the recipe against the dbt project"):
        p = plan(definition.recipe, f"run {definition.run_id}: recipe", DbtProject(settings))
    store = open_store(settings)
    try:
        with steps.step(f"checking the {store.where}"):
            store.ping()
        from ml.warehouse import connect

        with connect(settings) as wh:
            with steps.step("opening the warehouse"):
                wh.open()
            start = time.perf_counter()
            relation = str(p.score_model.relation)
            with steps.step(f"checking {relation} against the training schema"):
                key_kinds = _key_kinds(wh, settings, p, definition.schema, context)
            features = definition.schema.features
            with steps.step(f"checking the feature values of {relation}"):
                # counted by the warehouse before the store is touched, as `ml score
                # --engine sql` counts them: the same message as `ml score`
                faults = wh.value_faults(p.score_model.relation, features, p.filters(context))
                contract.check_value_faults(faults, relation)
            stored = StoredSet(
                model_name=definition.model_name,
                model_version=definition.model_version,
                run_id=definition.run_id,
                context=context_view(context),
                entity_keys=list(definition.schema.entity_keys),
                key_kinds=key_kinds,
                features=list(definition.schema.features),
                rows=0,
                relation=relation,
                materialized_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            )
            with steps.step(f"writing the population to the {store.where}"):
                rows = _write(settings, wh, store, p, stored, features, context)
            seconds = time.perf_counter() - start
    finally:
        store.close()
    return MaterializeResult(
        rows,
        definition.model_name,
        definition.model_version,
        definition.run_id,
        stored.context,
        relation,
        store.where,
        seconds,
    )


def context_view(context: dict[str, Any]) -> dict[str, Any]:
    """The resolved context as JSON shows it (dates as ISO text)."""
    return {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in context.items()}


def _key_kinds(
    wh: Warehouse, settings: Settings, p: Plan, schema: TrainingSchema, context: dict[str, Any]
) -> dict[str, str]:
    """The scoring population's contract (ml/population.py), and int or string entity keys:
    their kinds."""
    _, columns = population.check_scoring_population(wh, settings, p, schema, context)
    for key in schema.entity_keys:
        if columns[key] not in KEY_KINDS:
            raise ContractError(
                f"{p.score_model.relation}: entity key column '{key}' is {columns[key]}; "
                "serving by id needs int or string keys"
            )
    return {k: columns[k] for k in schema.entity_keys}


def _write(
    settings: Settings,
    wh: Warehouse,
    store: OnlineStore,
    p: Plan,
    stored: StoredSet,
    kinds: Mapping[str, str],
    context: dict[str, Any],
) -> int:
    """Stream the keys and features into a new set, swapped in when every batch is written.
    Each batch's values are checked as `ml score` checks the batches it scores: what is stored
    is what was checked, and a refusal drops the new set, leaving the previous one."""
    import pyarrow as pa

    filters = p.filters(context)
    columns = list(dict.fromkeys([*stored.entity_keys, *stored.features]))
    batches = wh.read_batches(
        p.score_model.relation, columns, filters, settings.serving.online_store.batch_size
    )
    with store.writer(stored.model_name, context_key(stored.context), stored) as writer:
        for batch in batches:
            table = pa.Table.from_batches([batch])
            contract.check_feature_values(table, kinds, stored.relation)
            keys = [batch.column(k).to_pylist() for k in stored.entity_keys]
            values = [_values(batch.column(f)) for f in stored.features]
            writer.write(
                [entity_key(k) for k in zip(*keys, strict=True)],
                [encode_row(row) for row in zip(*values, strict=True)],
            )
    return writer.rows


def _values(column: pa.Array) -> list[Any]:
    """A feature column as the model reads it in batch scoring (`ml.dataset.feature_columns`):
    strings as they are, everything else as float64; nulls as None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.to_pylist()
    values: list[Any] = pc.cast(column, pa.float64()).to_pylist()
    return values
