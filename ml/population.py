"""Reading populations, one definition each: the training population as `ml train` and
`ml tune` read it, and the scoring population's contract for `ml score` and `ml materialize`
(the dbt model is built, its columns have the training schema's kinds, and the context's rows
are there with unique, non-null entity keys), checked before anything is written."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ml import contract
from ml.config import Settings
from ml.errors import ContractError, WarehouseError
from ml.plan import Plan

if TYPE_CHECKING:
    import pyarrow as pa

    from ml.dbt import DbtModel
    from ml.model import TrainingSchema
    from ml.warehouse import Warehouse


def require_built(
    wh: Warehouse, settings: Settings, model: DbtModel, flag_of: str | None = None
) -> None:
    """A WarehouseError saying how to build `model` when its relation is not in the warehouse;
    `flag_of` is the command whose `--build` would build it (e.g. `ml score`), if it has one."""
    if not wh.exists(model.relation):
        t = settings.dbt.target
        build = f"`dbt build --select +{model.name} --target {t}`"
        raise WarehouseError(
            f"relation {model.relation} (dbt model {model.name}) is not built for target {t}: "
            f"run {build}" + (f" or `{flag_of} --build`" if flag_of else "")
        )


def read_training_population(
    settings: Settings,
    p: Plan,
    context: dict[str, Any],
    columns: list[str],
    flag_of: str | None = None,
) -> pa.Table:
    """The training relation's `columns` for the context, once it is built and its columns have
    the kinds the recipe's plan expects."""
    from ml.warehouse import connect

    relation = p.train_model.relation
    with connect(settings) as wh:
        require_built(wh, settings, p.train_model, flag_of)
        expected = {c: p.kinds[c] for c in p.train_columns}
        contract.check_columns(wh.columns(relation), expected, str(relation))
        return wh.read_arrow(relation, columns, p.filters(context))


def described(context: dict[str, Any]) -> str:
    """A context as error messages show it: campaign_id='cmp_2026_12'."""
    return ", ".join(f"{k}={v!r}" for k, v in context.items()) or "no filter"


def check_scoring_population(
    wh: Warehouse,
    settings: Settings,
    p: Plan,
    schema: TrainingSchema,
    context: dict[str, Any],
    flag_of: str | None = None,
) -> tuple[int, dict[str, str]]:
    """The context's row count and the relation's column kinds, or the first fault found."""
    rel, filters = p.score_model.relation, p.filters(context)
    require_built(wh, settings, p.score_model, flag_of)
    columns = wh.columns(rel)
    expected = {k: p.kinds.get(k, "int") for k in schema.entity_keys}
    expected.update({c: p.kinds[c] for c in filters if c in p.kinds})
    expected.update(schema.features)
    contract.check_columns(columns, expected, str(rel))
    stats = wh.key_stats(rel, schema.entity_keys, filters)
    if stats.rows == 0:
        raise ContractError(
            f"{rel}: the scoring population is empty for {described(context)}; nothing was written"
        )
    for key, nulls in stats.nulls.items():
        if nulls:
            raise ContractError(
                f"{rel}: key column '{key}' has {nulls} null value(s); nothing was written"
            )
    if stats.duplicates:
        raise ContractError(
            f"{rel}: key ({', '.join(schema.entity_keys)}) has {stats.duplicates} duplicate "
            "row(s) in this context; nothing was written"
        )
    return stats.rows, columns
