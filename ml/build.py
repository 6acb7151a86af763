"""`--build`: dbt build of a recipe's model (and its parents) for one context, refused before
anything is built when the context matches no rows.

The context params applied as dbt vars decide what the model holds; a mistyped value would
rebuild it empty. So the model's SQL is compiled with those vars and counted in the warehouse
first (a read, no side effect), and only a non-empty population is built.
"""

from __future__ import annotations

from typing import Any

from ml.config import Settings
from ml.dbt import DbtModel, DbtProject
from ml.errors import ContractError
from ml.plan import Plan
from ml.progress import Steps


def dbt_vars(p: Plan, context: dict[str, Any]) -> dict[str, Any]:
    """The context values the recipe applies as dbt vars."""
    return {n: v for n, v in context.items() if "var" in p.recipe.context[n].apply}


def build_for_context(
    settings: Settings,
    project: DbtProject,
    p: Plan,
    model: DbtModel,
    context: dict[str, Any],
    steps: Steps,
) -> None:
    """`dbt build --select +<model>` with the context's vars, after checking it has rows."""
    variables = dbt_vars(p, context)
    if variables:
        with steps.step(f"checking {model.name} has rows for {_shown(context)}"):
            _check_rows(settings, project, p, model, context, variables)
    with steps.step(f"dbt build --select +{model.name}"):
        project.build(f"+{model.name}", vars=variables)


def _check_rows(
    settings: Settings,
    project: DbtProject,
    p: Plan,
    model: DbtModel,
    context: dict[str, Any],
    variables: dict[str, Any],
) -> None:
    from ml.warehouse import connect

    filters = p.filters(context)
    with connect(settings) as wh:
        if not wh.present() or not wh.exists(model.relation):
            return  # never built: there is nothing a mistake could empty (dbt creates it)
        sql = project.compiled_sql(model.name, vars=variables)
        rows = wh.count_query_rows(sql, filters)
    if rows == 0:
        raise ContractError(
            f"dbt model {model.name}: no rows for {_shown(context)}; nothing was built "
            f"({model.relation} keeps its rows). Check the value, or the data it selects"
        )


def _shown(context: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in context.items()) or "no context"
