"""The recipe's `tuning:` section checked against its estimator and task, and trial parameters
sampled from it and written into the model spec.

A path such as `model.params.models.params.max_depth` walks the recipe's nested
`{class_path, params}` specs; the last name need not be set in the recipe, but the class at
that level must accept it, with every bound (and an interior value) of its range: the same
checks `ml validate` makes of a hand-written value, on the class imported only after the
allowlist check.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from ml.errors import RecipeError
from ml.estimators import Task, check_params, check_task, import_class
from ml.evaluate import CI_SUFFIXES, logged_metrics
from ml.policy import share_label
from ml.recipe import ClassSpec, Distribution, Recipe
from ml.textio import elide

if TYPE_CHECKING:
    from collections.abc import Sequence

    import optuna

Direction = Literal["maximize", "minimize"]
_MAX: Direction = "maximize"
_MIN: Direction = "minimize"
# lower is better for these; every other metric a trial can be ranked by is maximized
_MINIMIZED = frozenset({"log_loss", "rmse", "mae"})
# logged by every uplift run, but the same for any model (or not a ranking's quality)
_NOT_RANKING = ("ate_estimated", "ate_observed", "treat_all_gain", "blp_slope", "random_gain_at_")


@dataclass(frozen=True)
class Search:
    """A checked tuning section: what to sample, what to optimize and which way."""

    space: dict[str, Distribution]
    metric: str
    direction: Direction
    share: float | None  # the targeted share of a policy_gain_at_<pct> metric
    n_trials: int
    timeout_seconds: float | None
    cv_folds: int


def check_search(
    recipe: Recipe, task: str, label: str, allowed_modules: Sequence[str] | None = None
) -> Search:
    """The recipe's tuning section, refused in one line naming the field if it cannot run on
    this task's estimator (`task` as `ml.plan` resolved it)."""
    spec = recipe.tuning
    if spec is None:
        raise RecipeError(f"{label}: tuning: the recipe has no tuning section (see the README)")
    for path, dist in spec.search_space.items():
        _check_path(recipe, label, allowed_modules, path, dist)
        _check_task(recipe, task, label, allowed_modules, path, dist)
    metrics = tunable_metrics(recipe, task)
    where = f"{label}: tuning.metric"
    if spec.metric not in metrics:
        available = ", ".join(metrics)
        why = (
            "is the same for any model's ranking, so it cannot choose between trials"
            if spec.metric.startswith(_NOT_RANKING) or spec.metric.endswith(CI_SUFFIXES)
            else f"is not a metric a {task} model logs"
        )
        raise RecipeError(f"{where}: {elide(repr(spec.metric), 60)} {why} (tunable: {available})")
    wanted = recipe.evaluation.metrics
    if wanted and spec.metric not in wanted:
        raise RecipeError(
            f"{where}: '{spec.metric}' is not in evaluation.metrics, so the final run would not "
            "log it; add it there"
        )
    natural = metrics[spec.metric]
    if spec.direction is not None and spec.direction != natural:
        better = "higher" if natural == _MAX else "lower"
        raise RecipeError(
            f"{label}: tuning.direction: {spec.direction} is the wrong way for {spec.metric} "
            f"({better} is better); use {natural} or leave direction out"
        )
    share = _policy_shares(recipe).get(spec.metric)
    return Search(
        dict(spec.search_space),
        spec.metric,
        natural,
        share,
        spec.n_trials,
        spec.timeout_seconds,
        spec.cv_folds,
    )


def tunable_metrics(recipe: Recipe, task: str) -> dict[str, Direction]:
    """The metrics a run of this task logs (`ml.evaluate.logged_metrics`) that rank models,
    and which way is better."""
    return {
        name: _MIN if name in _MINIMIZED else _MAX
        for name in logged_metrics(task, recipe.evaluation)
        if not name.endswith(CI_SUFFIXES) and not name.startswith(_NOT_RANKING)
    }


def _policy_shares(recipe: Recipe) -> dict[str, float]:
    e = recipe.evaluation
    return {
        f"policy_gain_at_{share_label(s)}": s for s in sorted({*e.policy_shares, e.decision_share})
    }


# -- paths ----------------------------------------------------------------------------------


def _check_path(
    recipe: Recipe,
    label: str,
    allowed_modules: Sequence[str] | None,
    path: str,
    dist: Distribution,
) -> None:
    where = f"{label}: tuning.search_space: {path}"
    names = path.split(".")[2::2]  # model.params.a.params.b -> a, b
    spec: dict[str, Any] = recipe.model.model_dump()
    level = "model"
    for name in names[:-1]:
        inner: Any = (spec.get("params") or {}).get(name)
        level = f"{level}.params.{name}"
        if not _is_spec(inner):
            raise RecipeError(
                f"{where}: {level} is not a nested {{class_path, params}} spec in the recipe's model"
            )
        spec = inner
    leaf = names[-1]
    params = dict(spec.get("params") or {})
    if _is_spec(params.get(leaf)):
        raise RecipeError(
            f"{where}: {level}.params.{leaf} is a nested spec, not a value; tune its params "
            f"({path}.params.<name>)"
        )
    cls = import_class(str(spec["class_path"]), f"{where}: {level}.class_path", allowed_modules)
    for value in _probes(dist):
        try:
            check_params(cls, {**params, leaf: value}, level, allowed_modules)
        except RecipeError as exc:
            why = exc.message.removeprefix(f"{level}.params.{leaf}: ")
            raise RecipeError(
                f"{where}: {elide(repr(value), 40)} (of its {dist.kind} range): {why}"
            ) from None


def _check_task(
    recipe: Recipe,
    task: str,
    label: str,
    allowed_modules: Sequence[str] | None,
    path: str,
    dist: Distribution,
) -> None:
    """Every value of the range leaves an estimator that can do the task (a sampled objective
    that turns a classifier into a regressor fails here, not in a trial)."""
    for value in _probes(dist):
        model = with_params(recipe.model, {path: value})
        try:
            check_task(model.class_path, model.params, cast("Task", task), "model", allowed_modules)
        except RecipeError as exc:
            why = exc.message.removeprefix(f"{path}: ")
            raise RecipeError(
                f"{label}: tuning.search_space: {path}: {elide(repr(value), 40)} (of its "
                f"{dist.kind} range): {why}"
            ) from None


def _probes(dist: Distribution) -> list[Any]:
    """Values that stand for the whole range: both bounds, and for a float range an interior
    value off any integer, so a float range on an integer parameter is caught."""
    values = list(dist.values() or [])
    if dist.kind == "float":
        low, high = values
        inner = math.exp((math.log(low) + math.log(high)) / 2) if dist.log else (low + high) / 2
        inner = inner + (high - low) / (math.pi * 100) if float(inner).is_integer() else inner
        values = [low, inner, high]
    return values


def _is_spec(value: Any) -> bool:
    return isinstance(value, dict) and "class_path" in value


# -- sampling and applying -------------------------------------------------------------------


def suggest(trial: optuna.Trial, space: dict[str, Distribution]) -> dict[str, Any]:
    """One value per path from Optuna's sampler (the path is the Optuna parameter name)."""
    out: dict[str, Any] = {}
    for path, dist in space.items():
        values = dist.values() or []
        if dist.kind == "int":
            out[path] = trial.suggest_int(path, values[0], values[1], log=dist.log)
        elif dist.kind == "float":
            out[path] = trial.suggest_float(path, values[0], values[1], log=dist.log)
        else:
            out[path] = trial.suggest_categorical(path, values)
    return out


def distributions(space: dict[str, Distribution]) -> dict[str, Any]:
    """Optuna distributions of the search space (to check a resumed study samples the same)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for path, dist in space.items():
        values = dist.values() or []
        if dist.kind == "int":
            out[path] = IntDistribution(values[0], values[1], log=dist.log)
        elif dist.kind == "float":
            out[path] = FloatDistribution(values[0], values[1], log=dist.log)
        else:
            out[path] = CategoricalDistribution(values)
    return out


def with_params(model: ClassSpec, values: dict[str, Any]) -> ClassSpec:
    """The model spec with each path's value written in (checked paths only)."""
    data = copy.deepcopy(model.model_dump())
    for path, value in values.items():
        names = path.split(".")[2::2]
        node = data
        for name in names[:-1]:
            node = node["params"][name]
        node.setdefault("params", {})[names[-1]] = value
    return ClassSpec.model_validate(data)


def with_model(recipe: Recipe, values: dict[str, Any]) -> Recipe:
    """The recipe with the tuned values in its model: what `ml train` logs and registers."""
    return recipe.model_copy(update={"model": with_params(recipe.model, values)})
