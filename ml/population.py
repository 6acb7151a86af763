"""Reading populations, one definition each: the training population as `ml train` and
`ml tune` read it, and the scoring population's contract for `ml score` and `ml materialize`
(the dbt model is built, its columns have the training schema's kinds, and the context's rows
are there with unique, non-null entity keys), checked before anything is written; or, for keys
`ml score` watches as they stream (`KeyOrder`), before the new slice goes live."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ml import contract
from ml.config import Settings
from ml.errors import ContractError, WarehouseError
from ml.plan import Plan
from ml.textio import elide

if TYPE_CHECKING:
    import pyarrow as pa

    from ml.dbt import DbtModel
    from ml.model import TrainingSchema
    from ml.warehouse import Relation, Warehouse


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
    """A context as error messages show it: campaign_id='cmp_2026_12', as_of_date=2026-12-01
    (values as the user wrote them, long ones cut)."""
    shown = (
        v.isoformat() if isinstance(v, dt.date) else elide(repr(v), 80) for v in context.values()
    )
    return ", ".join(f"{k}={v}" for k, v in zip(context, shown, strict=True)) or "no filter"


def check_scoring_population(
    wh: Warehouse,
    settings: Settings,
    p: Plan,
    schema: TrainingSchema,
    context: dict[str, Any],
    flag_of: str | None = None,
    *,
    count_distinct: bool = True,
) -> tuple[int, dict[str, str]]:
    """The context's row count and the relation's column kinds, or the first fault found.
    Without `count_distinct`, the keys' uniqueness is left to the caller (a stream that
    watches their order, then `require_unique_keys` if that did not prove it)."""
    rel, filters = p.score_model.relation, p.filters(context)
    require_built(wh, settings, p.score_model, flag_of)
    columns = wh.columns(rel)
    expected = {k: p.kinds.get(k, "int") for k in schema.entity_keys}
    expected.update({c: p.kinds[c] for c in filters if c in p.kinds})
    expected.update(schema.features)
    contract.check_columns(columns, expected, str(rel))
    stats = wh.key_stats(rel, schema.entity_keys, filters, distinct=count_distinct)
    if stats.rows == 0:
        raise ContractError(
            f"{rel}: the scoring population is empty for {described(context)}; nothing was written"
        )
    for key, nulls in stats.nulls.items():
        if nulls:
            raise ContractError(
                f"{rel}: key column '{key}' has {nulls} null value(s); nothing was written"
            )
    _refuse_duplicates(rel, schema.entity_keys, stats.duplicates)
    return stats.rows, columns


def require_unique_keys(
    wh: Warehouse, relation: Relation, keys: list[str], filters: dict[str, Any]
) -> None:
    """A ContractError when the filtered relation holds a key more than once."""
    _refuse_duplicates(relation, keys, wh.key_stats(relation, keys, filters).duplicates)


def _refuse_duplicates(relation: Relation, keys: list[str], duplicates: int | None) -> None:
    if duplicates:
        raise ContractError(
            f"{relation}: key ({', '.join(keys)}) has {duplicates} duplicate "
            "row(s) in this context; nothing was written"
        )


class KeyOrder:
    """Watches a single-column key batch by batch: keys that arrive strictly increasing are
    unique, so a population read in key order (a table written sorted, as DuckDB returns it)
    needs no count of its distinct keys. Anything else (a repeat, a step down, a composite key,
    a type that does not compare) leaves `increasing` False."""

    def __init__(self, keys: list[str]) -> None:
        self.key = keys[0] if len(keys) == 1 else None
        self.increasing = self.key is not None
        self._last: Any = None

    def add(self, table: pa.Table) -> None:
        if not self.increasing or table.num_rows == 0:
            return
        import pyarrow.compute as pc

        column = table.column(self.key).combine_chunks()
        n = len(column)
        try:
            first, last = column[0].as_py(), column[n - 1].as_py()
            within = n < 2 or pc.all(pc.greater(column.slice(1), column.slice(0, n - 1))).as_py()
            self.increasing = bool(within) and (self._last is None or first > self._last)
        except (TypeError, NotImplementedError, ValueError):  # a type without an order
            self.increasing = False
        self._last = last if self.increasing else None
