"""`ml validate`: a recipe against config, the dbt manifest and its estimator, without data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from ml.config import Settings
from ml.dbt import DbtProject
from ml.plan import plan
from ml.recipe import load_recipe, parse_context_params, resolve_context
from ml.tuning.space import check_search


def validate_recipe(
    settings: Settings, recipe_path: str | Path, context_params: str | None = None
) -> dict[str, Any]:
    recipe = load_recipe(recipe_path)
    given = parse_context_params(context_params)
    phases: tuple[Literal["train", "score"], ...] = ("train", "score")
    contexts = {phase: resolve_context(recipe, given, phase, required=False) for phase in phases}
    p = plan(recipe, str(recipe_path), DbtProject(settings))
    search = (
        check_search(recipe, p.task, p.label, p.allowed_modules)
        if recipe.tuning is not None
        else None
    )
    return {
        "recipe": recipe.name,
        "task": p.task,
        "estimator": recipe.model.class_path,
        "train_relation": str(p.train_model.relation),
        "score_relation": str(p.score_model.relation),
        "features": p.features,
        "context": contexts,
        "tuning": None
        if search is None
        else {
            "parameters": list(search.space),
            "metric": search.metric,
            "direction": search.direction,
        },
    }
