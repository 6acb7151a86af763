"""Check a recipe against the dbt project and its estimator, and resolve what it will read.

`ml validate` runs exactly this; `ml train` and `ml score` run it first too, so whatever
validate accepts is what they act on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ml.dbt import DbtModel, DbtProject
from ml.errors import RecipeError
from ml.estimators import Task, check_params, check_task, import_class, task_of
from ml.evaluate import CI_SUFFIXES, logged_metrics
from ml.kinds import FEATURE_KINDS, NUMERIC_KINDS, declared_kind
from ml.recipe import Recipe
from ml.textio import elide

_CONTEXT_KINDS = {
    "str": {"string"},
    "int": {"int"},
    "float": {"float", "decimal", "int"},
    "bool": {"bool"},
    "date": {"date"},
}


@dataclass(frozen=True)
class Plan:
    """A recipe resolved against the manifest: models, kinds and the feature list."""

    recipe: Recipe
    label: str
    task: Task
    train_model: DbtModel
    score_model: DbtModel
    features: list[str]
    kinds: dict[str, str]  # column -> logical kind, from the train model's contract
    allowed_modules: tuple[str, ...]  # estimators.allowed_modules, for building the estimator

    @property
    def context_columns(self) -> dict[str, str]:
        return {name: (p.column or name) for name, p in self.recipe.context.items()}

    @property
    def filter_columns(self) -> dict[str, str]:
        return {
            name: (p.column or name)
            for name, p in self.recipe.context.items()
            if "filter" in p.apply
        }

    def filters(self, context: dict[str, Any]) -> dict[str, Any]:
        """Column -> value of the context params applied as filters (bound, never SQL text)."""
        columns = self.filter_columns
        return {columns[n]: v for n, v in context.items() if n in columns}

    @property
    def train_columns(self) -> list[str]:
        d = self.recipe.data
        cols = [*d.entity_keys, *self.filter_columns.values(), d.target]
        if d.treatment:
            cols.append(d.treatment)
        split = self.recipe.split
        if split.method == "column" and split.column:
            cols.append(split.column)
        return _unique([*cols, *self.features])


def plan(recipe: Recipe, label: str, project: DbtProject) -> Plan:
    d = recipe.data
    allowed = project.settings.estimators.allowed_modules
    cls = import_class(recipe.model.class_path, f"{label}: model.class_path", allowed)
    if not callable(getattr(cls, "fit", None)):  # never instantiate an arbitrary class as "model"
        raise RecipeError(
            f"{label}: model.class_path: '{recipe.model.class_path}' is not an estimator (it has no fit method)"
        )
    check_params(cls, recipe.model.params, f"{label}: model", allowed)
    task = task_of(cls)
    check_task(recipe.model.class_path, recipe.model.params, task, f"{label}: model", allowed)
    if task == "uplift" and not d.treatment:
        raise RecipeError(
            f"{label}: data.treatment: required for the uplift estimator {recipe.model.class_path}"
        )
    if task != "uplift" and d.treatment:
        raise RecipeError(
            f"{label}: data.treatment: {recipe.model.class_path} is a {task} estimator, not an uplift one; remove data.treatment"
        )

    train = _model(project, d.train_model, f"{label}: data.train_model")
    score = _model(project, d.score_model, f"{label}: data.score_model")
    train_kinds = _kinds(train, f"{label}: data.train_model")
    score_kinds = _kinds(score, f"{label}: data.score_model")

    for key in d.entity_keys:
        _need(train, train_kinds, key, f"{label}: data.entity_keys")
        _need(score, score_kinds, key, f"{label}: data.entity_keys")
    _need(train, train_kinds, d.target, f"{label}: data.target")
    if train_kinds[d.target] not in NUMERIC_KINDS:
        raise RecipeError(
            f"{label}: data.target: column '{d.target}' of {train.name} is {train_kinds[d.target]}; expected a numeric or boolean column"
        )
    if d.treatment:
        _need(train, train_kinds, d.treatment, f"{label}: data.treatment")
        if train_kinds[d.treatment] not in {"int", "bool"}:
            raise RecipeError(
                f"{label}: data.treatment: column '{d.treatment}' of {train.name} is {train_kinds[d.treatment]}; expected int (0/1) or bool"
            )

    _check_split(recipe, train, train_kinds, label)
    _check_metrics(recipe, task, label)

    for name, param in recipe.context.items():
        column = param.column or name
        where = f"{label}: context.{name}"
        if "filter" in param.apply:
            for model, kinds in ((train, train_kinds), (score, score_kinds)):
                _need(model, kinds, column, where)
                if kinds[column] not in _CONTEXT_KINDS[param.type]:
                    raise RecipeError(
                        f"{where}: declared {param.type}, but column '{column}' of {model.name} is {kinds[column]}"
                    )

    reserved = {
        *d.entity_keys,
        d.target,
        *([d.treatment] if d.treatment else []),
        *(p.column or n for n, p in recipe.context.items()),
    }
    if d.features is not None:
        features = list(d.features)
        if not features:
            raise RecipeError(f"{label}: data.features: the list is empty")
    else:
        features = [c for c, k in score_kinds.items() if c not in reserved and k in FEATURE_KINDS]
    for column in d.exclude:  # a name excluding nothing is a typo, or a column since renamed
        _need(score, score_kinds, column, f"{label}: data.exclude")
    features = [f for f in features if f not in set(d.exclude)]
    if not features:
        raise RecipeError(f"{label}: data.features: no feature columns left after data.exclude")
    for f in features:
        if f in reserved:
            raise RecipeError(
                f"{label}: data.features: '{f}' is a key, target, treatment or context column, not a feature"
            )
        _need(train, train_kinds, f, f"{label}: data.features")
        _need(score, score_kinds, f, f"{label}: data.features")
        if train_kinds[f] not in FEATURE_KINDS:
            raise RecipeError(
                f"{label}: data.features: column '{f}' of {train.name} is {train_kinds[f]}; expected a number, boolean or string"
            )
        if train_kinds[f] != score_kinds[f]:
            raise RecipeError(
                f"{label}: data.features: column '{f}' is {train_kinds[f]} in {train.name} but {score_kinds[f]} in {score.name}"
            )
    return Plan(recipe, label, task, train, score, features, train_kinds, tuple(allowed))


def _check_split(recipe: Recipe, train: DbtModel, kinds: dict[str, str], label: str) -> None:
    """A column split reads a column of the training model, and its test values are of that
    column's kind: a value of another kind can never match, so the test split would be empty."""
    split = recipe.split
    if split.method != "column" or not split.column:
        return
    _need(train, kinds, split.column, f"{label}: split.column")
    kind = kinds[split.column]
    if kind not in _SPLIT_VALUES:  # a type the project has no kind for: the data decides
        return
    accepts, expected = _SPLIT_VALUES[kind]
    for value in split.test_values or []:
        if value is not None and not accepts(value):
            raise RecipeError(
                f"{label}: split.test_values: {elide(repr(value), 60)} can never match column "
                f"'{split.column}' of {train.name}, which is {kind} (expected {expected})"
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_SPLIT_VALUES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "string": (lambda v: isinstance(v, str), "strings"),
    "int": (lambda v: _is_number(v) and float(v).is_integer(), "integers"),
    "float": (_is_number, "numbers"),
    "decimal": (_is_number, "numbers"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "date": (
        lambda v: isinstance(v, dt.date) and not isinstance(v, dt.datetime),
        "dates, unquoted YYYY-MM-DD",
    ),
    "timestamp": (lambda v: isinstance(v, dt.datetime), "timestamps, unquoted YYYY-MM-DD HH:MM:SS"),
}


def _check_metrics(recipe: Recipe, task: Task, label: str) -> None:
    """`evaluation.metrics` keeps metrics a run of this task logs (evaluate would refuse the
    others only after fitting, inside the run)."""
    wanted = recipe.evaluation.metrics or []
    logged = logged_metrics(task, recipe.evaluation)
    unknown = [name for name in wanted if name not in logged]
    if unknown:
        names = [n for n in logged if not n.endswith(CI_SUFFIXES)]
        listed = [n for n in names if not n.startswith(("policy_gain_at_", "random_gain_at_"))]
        pcts = [n.removeprefix("policy_gain_at_") for n in names if n.startswith("policy_gain_at_")]
        if pcts:
            listed.append(
                f"policy_gain_at_<pct> and random_gain_at_<pct> for pct {', '.join(pcts)}"
            )
        article = "an" if task[0] in "aeiou" else "a"
        raise RecipeError(
            f"{label}: evaluation.metrics: unknown metric {elide(repr(unknown[0]), 60)} for "
            f"{article} {task} model (available: {elide(', '.join(listed), 240)})"
        )


def _model(project: DbtProject, name: str, where: str) -> DbtModel:
    model = project.find_model(name)
    if model is None:
        known = ", ".join(project.model_names()) or "none"
        raise RecipeError(f"{where}: dbt model '{name}' not found in the project (models: {known})")
    if not model.contract_enforced:
        raise RecipeError(
            f"{where}: dbt model '{name}' must have an enforced contract (config: contract: {{enforced: true}}) so its columns and types are known"
        )
    return model


def _kinds(model: DbtModel, where: str) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for column, data_type in model.columns.items():
        kind = declared_kind(data_type)
        if kind is None:
            raise RecipeError(
                f"{where}: column '{column}' of dbt model {model.name} has data_type {data_type!r}; expected one of int64, float64/double, string, bool, date, timestamp"
            )
        kinds[column] = kind
    return kinds


def _need(model: DbtModel, kinds: dict[str, str], column: str, where: str) -> None:
    if column not in kinds:
        raise RecipeError(
            f"{where}: column '{column}' is not in the contract of dbt model {model.name}"
        )


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
