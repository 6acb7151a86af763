"""Recipe schema and loading: one YAML file fully defines a model.

Loading checks the file's own shape only (types, required keys, no unknown keys). Whether the
recipe fits the dbt project and the estimator's signature is `ml.validate`'s job.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from ml.errors import ConfigError, RecipeError
from ml.textio import check_text, elide, parse_json
from ml.yamlio import MAX_YAML_BYTES, format_validation_error, read_yaml

Phase = Literal["train", "score"]
ContextType = Literal["str", "int", "float", "bool", "date"]
Apply = Literal["filter", "var"]
_FILTER_ONLY: list[Apply] = ["filter"]
_PY_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool, "date": dt.date}
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
TEMPLATE_SYNTAX = re.compile(r"\{[{%#]")  # where Jinja (dbt) starts an expression, tag or comment
RAW_END = re.compile(r"\{%[-+]?\s*endraw")  # ends a {% raw %} block early
MAX_CONTEXT_PARAMS_CHARS = 64 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassSpec(_Strict):
    """An object built from a class path; nested specs may appear inside params."""

    class_path: str = Field(pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")
    params: dict[str, Any] = Field(default_factory=dict)


class PhaseDefaults(_Strict):
    train: Any = None
    score: Any = None


class ContextParam(_Strict):
    """A typed run-time parameter, e.g. campaign_id. Applied as a bound filter and/or dbt var."""

    type: ContextType
    apply: list[Apply] = Field(default_factory=lambda: _FILTER_ONLY.copy(), min_length=1)
    column: str | None = None
    default: Any = None
    description: str = ""

    @field_validator("column")
    @classmethod
    def _column_is_a_name(cls, value: str | None) -> str | None:
        return None if value is None else _dbt_name(value)

    @model_validator(mode="after")
    def _default_is_typed(self) -> ContextParam:
        for phase in ("train", "score"):
            value = self.default_for(phase)
            if value is not None:
                try:
                    coerce_context_value(self, value)
                except ValueError as exc:
                    raise ValueError(f"default: {exc}") from None
        return self

    def default_for(self, phase: Phase) -> Any:
        if isinstance(self.default, dict):
            return PhaseDefaults.model_validate(self.default).model_dump()[phase]
        return self.default


class DataSpec(_Strict):
    train_model: str
    score_model: str
    entity_keys: list[str] = Field(min_length=1)
    target: str
    treatment: str | None = None
    features: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)

    @field_validator("train_model", "score_model")
    @classmethod
    def _model_is_a_name(cls, value: str) -> str:
        return _dbt_name(value)

    @field_validator("entity_keys", "features", "exclude")
    @classmethod
    def _columns_once(cls, value: list[str] | None) -> list[str] | None:
        seen: set[str] = set()
        for column in value or []:
            if column in seen:
                raise ValueError(
                    f"{elide(repr(column), 60)} is listed twice (expected each column once)"
                )
            seen.add(column)
        return value

    @field_validator("entity_keys")
    @classmethod
    def _keys_are_names(cls, value: list[str]) -> list[str]:
        return [_dbt_name(key) for key in value]


def _dbt_name(value: str) -> str:
    """A model or column name `ml score` declares to dbt (ml/sources.py), which renders it as
    Jinja, a model's inside `ref('...')`: nothing in it may start a template or end the quote."""
    if TEMPLATE_SYNTAX.search(value) or any(c in value for c in "'\"\\"):
        raise ValueError(
            f"{elide(repr(value), 60)} is not a name dbt can be given (expected no {{{{, {{%, "
            "{#, quote or backslash)"
        )
    return value


class PreprocessingSpec(_Strict):
    impute_numeric: Literal["median", "mean", "zero", "none"] = "median"
    impute_categorical: Literal["constant", "most_frequent"] = "constant"
    encoding: Literal["onehot", "ordinal"] = "onehot"
    max_categories: int | None = Field(default=20, ge=2)
    scale: bool = False


class SplitSpec(_Strict):
    method: Literal["random", "column"] = "random"
    test_size: float = Field(default=0.3, gt=0, lt=1)
    stratify: bool = True
    column: str | None = None
    test_values: list[Any] | None = None

    @model_validator(mode="after")
    def _column_split_needs_column(self) -> SplitSpec:
        if self.method == "column" and (not self.column or not self.test_values):
            raise ValueError("method 'column' needs 'column' and 'test_values'")
        return self


def _default_policy_shares() -> list[float]:
    return [round(i / 10, 1) for i in range(1, 11)]


# Money amounts and head counts a campaign can have: beyond these the report's arithmetic
# overflows or its axes collapse, and no real campaign comes near them.
MAX_AMOUNT = 1e12
MIN_CONTACT_COST = 1e-6
MAX_POPULATION = 10**12
_ECONOMICS_RANGES: dict[str, tuple[float, float, str]] = {
    "value_per_conversion": (0, MAX_AMOUNT, "an amount of money"),
    "cost_per_contact": (MIN_CONTACT_COST, MAX_AMOUNT, "an amount of money"),
    "budget": (MIN_CONTACT_COST, MAX_AMOUNT, "an amount of money"),
    "population": (1, MAX_POPULATION, "a number of customers"),
}


class Economics(_Strict):
    """What a contact costs and a conversion is worth, for the run report's "net value against
    budget" figure. `population` is the number of customers the figure plans for (default: the
    training population's rows); `budget`, when given, is marked on it."""

    value_per_conversion: float = Field(allow_inf_nan=False)
    cost_per_contact: float = Field(allow_inf_nan=False)
    population: int | None = None
    budget: float | None = Field(default=None, allow_inf_nan=False)

    @field_validator("value_per_conversion", "cost_per_contact", "population", "budget")
    @classmethod
    def _in_range(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None:
            return None
        low, high, what = _ECONOMICS_RANGES[str(info.field_name)]
        if not low <= value <= high:
            raise ValueError(f"expected {what} from {_g(low)} to {_g(high)} (got {_g(value)})")
        return value


def _g(number: float) -> str:
    """1e12, 1e-6, 0.05: short and exact enough for a bound or an out-of-range value."""
    return f"{number:g}".replace("e+", "e").replace("e-0", "e-").replace("e0", "e")


class EvaluationSpec(_Strict):
    """Held-out evaluation: which metrics to keep, plots, and the bootstrap and policy grid.

    `holdout_contexts` names whole past campaigns kept out of training for evaluation only."""

    metrics: list[str] | None = None
    plots: bool = True
    bootstrap_replicates: int = Field(default=200, ge=50, le=10_000)
    bootstrap_seed: int = Field(default=0, ge=0, le=2**32 - 1)
    policy_shares: list[float] = Field(default_factory=_default_policy_shares, min_length=1)
    decision_share: float = Field(default=0.3, gt=0, le=1)
    holdout_contexts: list[StrictStr | StrictInt] = Field(default_factory=list)
    economics: Economics | None = None

    @field_validator("policy_shares")
    @classmethod
    def _shares_are_fractions(cls, value: list[float]) -> list[float]:
        outside = [share for share in value if not 0 < share <= 1]
        if outside:
            raise ValueError(f"Policy shares outside (0, 1]: {elide(repr(outside), 60)}")
        # metric names carry the share in percent to 2 decimals: keep shares apart at that grain
        return sorted({round(share, 4) for share in value})


class PromotionSpec(_Strict):
    """How `ml train --alias A` decides whether the new version takes A from its holder
    (ml/promotion.py): `non_inferior` moves it unless the new model is worse with 95% confidence
    on the policy gain at `evaluation.decision_share`; `superior` only if it is better."""

    rule: Literal["non_inferior", "superior"] = "non_inferior"


_PARAM_PATH = re.compile(r"^model(\.params\.[A-Za-z_]\w*)+$")
Choice = StrictStr | StrictInt | StrictFloat | StrictBool | None


class Distribution(_Strict):
    """One parameter's search range: `{int: [lo, hi]}`, `{float: [lo, hi], log: true}` or
    `{choice: [a, b, ...]}`; `log` samples evenly on a log scale (positive bounds only)."""

    int_: list[StrictInt] | None = Field(default=None, alias="int")
    float_: list[StrictFloat] | None = Field(default=None, alias="float")
    choice: list[Choice] | None = None
    log: StrictBool = False

    @model_validator(mode="after")
    def _one_kind_in_order(self) -> Distribution:
        given = [k for k in ("int", "float", "choice") if self.values(k) is not None]
        if len(given) != 1:
            raise ValueError(
                "expected exactly one of int: [low, high], float: [low, high] or choice: [...]"
            )
        kind = given[0]
        values = self.values(kind) or []
        if kind == "choice":
            if not values:
                raise ValueError("choice: the list is empty (expected at least one value)")
            if len({repr(v) for v in values}) != len(values):
                raise ValueError(f"choice: values repeat ({elide(repr(values), 60)})")
            if self.log:
                raise ValueError("log: only for int and float ranges")
            return self
        if len(values) != 2:
            raise ValueError(f"{kind}: expected [low, high], got {len(values)} value(s)")
        low, high = values
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{kind}: bounds must be finite numbers (got {values})")
        if low >= high:
            what = "empty" if low == high else "inverted"
            raise ValueError(f"{kind}: the range [{low}, {high}] is {what} (expected low < high)")
        if self.log and low <= 0:
            raise ValueError(f"log: a log-scale range needs positive bounds (got [{low}, {high}])")
        return self

    @model_serializer(mode="plain")
    def _as_written(self) -> dict[str, Any]:
        """As a recipe writes it (`{int: [2, 8]}`), so a logged recipe loads again."""
        return {self.kind: self.values(), **({"log": True} if self.log else {})}

    @property
    def kind(self) -> Literal["int", "float", "choice"]:
        return "int" if self.int_ is not None else "float" if self.float_ is not None else "choice"

    def values(self, kind: str | None = None) -> list[Any] | None:
        kind = kind or self.kind
        return self.int_ if kind == "int" else self.float_ if kind == "float" else self.choice


class TuningSpec(_Strict):
    """`ml tune`'s search: parameter path -> distribution, trials, and the metric to optimize
    by k-fold cross-validation inside the training split (the test split is never seen).
    `direction` defaults to the metric's own (minimize for losses and errors)."""

    search_space: dict[str, Distribution] = Field(min_length=1)
    metric: str = Field(min_length=1)
    direction: Literal["maximize", "minimize"] | None = None
    n_trials: int = Field(default=20, gt=0, le=10_000)
    timeout_seconds: float | None = Field(default=None, gt=0)
    cv_folds: int = Field(default=3, ge=2, le=20)

    @field_validator("search_space")
    @classmethod
    def _paths(cls, value: dict[str, Distribution]) -> dict[str, Distribution]:
        for path in value:
            if not _PARAM_PATH.fullmatch(path):
                raise ValueError(
                    f"{elide(repr(path), 60)} is not a parameter path (expected "
                    "model.params.<name> or model.params.<nested>.params.<name>)"
                )
        return value


class Recipe(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    data: DataSpec
    context: dict[str, ContextParam] = Field(default_factory=dict)
    preprocessing: PreprocessingSpec = PreprocessingSpec()
    model: ClassSpec
    split: SplitSpec = SplitSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    promotion: PromotionSpec = PromotionSpec()
    tuning: TuningSpec | None = None
    # numpy's and scikit-learn's random_state take 0 .. 2**32 - 1
    seed: int = Field(default=42, ge=0, le=2**32 - 1)

    @field_validator("name")
    @classmethod
    def _not_a_derived_name(cls, value: str) -> str:
        if value.endswith(("__current", "__policy")):  # relations derived from another recipe's
            raise ValueError(
                "must not end in '__current' or '__policy' (those suffixes name the current "
                "scores and the policy curves of another recipe)"
            )
        return value

    @field_validator("context")
    @classmethod
    def _context_names(cls, value: dict[str, ContextParam]) -> dict[str, ContextParam]:
        for name in value:
            if not re.fullmatch(NAME_PATTERN, name):
                shown = elide(repr(name), 60)
                raise ValueError(f"context param name {shown} must match {NAME_PATTERN}")
        return value

    @field_validator("description")
    @classmethod
    def _description_fits_a_raw_block(cls, value: str) -> str:
        # the generated dbt sources quote it inside {% raw %}...{% endraw %}, so dbt shows it as
        # written instead of rendering it; an endraw tag of its own would end that block early
        if RAW_END.search(value):
            raise ValueError(
                "must not contain an '{% endraw %}' tag (dbt shows the description verbatim "
                "inside a raw block, which the tag would end)"
            )
        return value

    @property
    def experiment_name(self) -> str:
        return self.name


def coerce_context_value(param: ContextParam, value: Any) -> Any:
    """Check a context value against its declared type; only lossless conversions pass."""
    expected = param.type
    if expected == "str" and isinstance(value, str):
        if "\x00" in value:  # no legitimate value has one, and SQL engines cut strings at it
            raise ValueError("expected a string without NUL characters")
        return value
    if expected == "bool" and isinstance(value, bool):
        return value
    if expected == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if expected == "date":
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
    shown = elide(repr(value), 60)
    raise ValueError(f"expected {_describe(expected)}, got {type(value).__name__} {shown}")


def _describe(kind: str) -> str:
    return {
        "str": "a string",
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "date": "an ISO date (YYYY-MM-DD)",
    }[kind]


def load_recipe(path: Path | str) -> Recipe:
    """Read and validate a recipe; the recipe name defaults to the file's stem."""
    path = Path(path)
    label = str(path)
    # keys may be numbers (an estimator's class_weight: {0: 1, 1: 5}), never lists or mappings
    data = read_yaml(path, RecipeError, label, max_bytes=MAX_YAML_BYTES, string_keys=False)
    if data is None:
        raise RecipeError(f"{elide(label, 100)}: the file is empty (expected a recipe mapping)")
    if not isinstance(data, dict):
        raise RecipeError(
            f"{elide(label, 100)}: expected a mapping at the top level, got {type(data).__name__}"
        )
    data.setdefault("name", path.stem)
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, label)) from None


def recipe_from_dict(data: dict[str, Any], label: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, label)) from None


def parse_context_params(raw: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Parse `--context-params` JSON into a mapping (types are checked against the recipe later);
    a mapping (the Python API's) is taken as it is."""
    if isinstance(raw, Mapping):
        return dict(raw)
    if raw is None or raw.strip() == "":
        return {}
    label = "--context-params"
    value = parse_json(check_text(raw, label, max_chars=MAX_CONTEXT_PARAMS_CHARS), label)
    if not isinstance(value, dict):
        raise ConfigError(
            f'--context-params: expected a JSON object like {{"campaign_id": "..."}}, got {type(value).__name__}'
        )
    return value


def resolve_context(
    recipe: Recipe,
    given: dict[str, Any],
    phase: Phase,
    label: str = "--context-params",
    required: bool = True,
) -> dict[str, Any]:
    """Merge given values over the recipe's defaults for a phase; every declared param needs a value."""
    unknown = sorted(set(given) - set(recipe.context))
    if unknown:
        declared = ", ".join(sorted(recipe.context)) or "none"
        raise ConfigError(
            f"{label}: unknown context param {elide(repr(unknown[0]), 60)} "
            f"(recipe {recipe.name} declares: {elide(declared, 120)})"
        )
    resolved: dict[str, Any] = {}
    for name, param in recipe.context.items():
        value = given.get(name, param.default_for(phase))
        if value is None:
            if not required:
                continue
            raise ConfigError(
                f"{label}: context param '{name}' is required for {phase} (recipe {recipe.name} has no {phase} default)"
            )
        try:
            resolved[name] = coerce_context_value(param, value)
        except ValueError as exc:
            raise ConfigError(f"{label}: {name}: {exc}") from None
        if "var" in param.apply and isinstance(value, str) and TEMPLATE_SYNTAX.search(value):
            # dbt renders what it is given as Jinja: a value must stay a value
            raise ConfigError(
                f"{label}: {name}: template syntax ({{{{, {{% or {{#) is not allowed in a value "
                f"passed to dbt as a var (got {elide(repr(value), 60)})"
            )
    return resolved
