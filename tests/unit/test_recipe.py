from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from refusals import refused  # tests/unit/refusals.py

from ml.errors import ConfigError, MLError, RecipeError
from ml.recipe import load_recipe, parse_context_params, recipe_from_dict, resolve_context

DEMO = ["example_recipe", "xgboost_x_learner", "causal_forest", "conversion_xgb"]


@pytest.mark.parametrize("name", DEMO)
def test_demo_recipes_load(root: Path, name: str) -> None:
    recipe = load_recipe(root / "recipes" / f"{name}.yaml")
    assert recipe.name == name
    assert resolve_context(recipe, {}, "train") == {"campaign_id": "cmp_2026_09"}
    assert resolve_context(recipe, {}, "score") == {"campaign_id": "cmp_2026_12"}


def _base() -> dict:
    return {
        "name": "r",
        "data": {"train_model": "a", "score_model": "b", "entity_keys": ["id"], "target": "y"},
        "model": {"class_path": "xgboost.XGBClassifier"},
        "context": {"campaign_id": {"type": "str", "default": "x"}, "day": {"type": "date"}},
    }


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "my_model.yaml"
    path.write_text(
        "data: {train_model: a, score_model: b, entity_keys: [id], target: y}\nmodel: {class_path: a.B}\n"
    )
    assert load_recipe(path).name == "my_model"


def test_context_types_are_checked_strictly() -> None:
    recipe = recipe_from_dict(_base())
    assert resolve_context(recipe, {"day": "2026-12-01"}, "score") == {
        "campaign_id": "x",
        "day": dt.date(2026, 12, 1),
    }
    with pytest.raises(
        ConfigError, match=r"^--context-params: campaign_id: expected a string, got int 5$"
    ):
        resolve_context(recipe, {"campaign_id": 5, "day": "2026-12-01"}, "score")
    with pytest.raises(ConfigError, match=r"day: expected an ISO date"):
        resolve_context(recipe, {"day": "tomorrow"}, "score")
    with pytest.raises(ConfigError, match=r"unknown context param 'campain_id'"):
        resolve_context(recipe, {"campain_id": "x", "day": "2026-12-01"}, "score")
    with pytest.raises(ConfigError, match=r"context param 'day' is required for train"):
        resolve_context(recipe, {}, "train")
    with pytest.raises(ConfigError, match=r"campaign_id: expected a string without NUL"):
        resolve_context(recipe, {"campaign_id": "x\x00' or 1=1", "day": "2026-12-01"}, "score")


def test_context_default_of_wrong_type_is_a_recipe_error() -> None:
    data = _base()
    data["context"]["campaign_id"]["default"] = {"train": 2026, "score": "x"}
    with pytest.raises(
        RecipeError, match=r"context.campaign_id.default: expected a string, got int 2026"
    ):
        recipe_from_dict(data)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"campaign_id": ', r"^--context-params: invalid JSON at line 1 column \d+: "),
        ('["cmp"]', r"^--context-params: expected a JSON object"),
    ],
)
def test_malformed_context_params(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_context_params(raw)


def test_context_params_empty_is_empty() -> None:
    assert parse_context_params(None) == {} and parse_context_params("  ") == {}


# -- the recipe file and --context-params through the hardened reader ----------------------

MINIMAL = "data: {train_model: a, score_model: b, entity_keys: [id], target: y}\nmodel: {class_path: a.B}\n"


def _refused(fn: Callable[[], Any], error: type[MLError], seconds: float = 5) -> str:
    return refused(fn, error, seconds)


def test_recipe_that_is_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "r.yaml"
    os.mkfifo(fifo)
    try:
        message = _refused(lambda: load_recipe(fifo), RecipeError)
    finally:
        with contextlib.suppress(OSError):  # release a reader stuck in open(), if any
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert message == f"{fifo}: not a regular file (it is a FIFO)"


def test_recipe_that_is_a_directory_or_device(tmp_path: Path) -> None:
    assert _refused(lambda: load_recipe(tmp_path), RecipeError) == (
        f"{tmp_path}: not a regular file (it is a directory)"
    )
    if os.path.exists("/dev/zero"):
        assert _refused(lambda: load_recipe("/dev/zero"), RecipeError) == (
            "/dev/zero: not a regular file (it is a character device)"
        )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"# " + b"x" * (1 << 20), "1,048,578 bytes is over the 1,048,576-byte limit"),
        (b"name: caf\xe9\n", "not valid UTF-8 at byte 9"),
        (b"name: a\x00\n", "NUL byte at byte 7 (not a text file)"),
        (b'name: "a\\0"\n', "line 1, column 7: NUL character in a value"),
        (b"name: " + b"[" * 100_000, "line 1, column 71: nested deeper than 64 levels"),
        (
            b"model: {class_path: a.B}\nmodel: {class_path: c.D}\n",
            "line 2, column 1: duplicate key 'model' (first at line 1)",
        ),
    ],
    ids=["oversized", "utf8", "nul", "escaped-nul", "deep", "duplicate-key"],
)
def test_bad_recipe_file(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    assert _refused(lambda: load_recipe(path), RecipeError) == f"{path}: {problem}"


def test_recipe_alias_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(
        MINIMAL
        + "seed: &a [1, 1, 1, 1, 1, 1, 1, 1]\n"
        + "".join(
            f"x{i}: &a{i} [{', '.join(['*a' if i == 0 else f'*a{i - 1}'] * 8)}]\n" for i in range(8)
        )
    )
    assert "more than 32 alias references" in _refused(lambda: load_recipe(path), RecipeError)


def test_recipe_param_keys_may_be_numbers_but_not_mappings(tmp_path: Path) -> None:
    path = tmp_path / "weights.yaml"
    path.write_text(
        MINIMAL.replace(
            "{class_path: a.B}", "{class_path: a.B, params: {class_weight: {0: 1, 1: 5}}}"
        )
    )
    assert load_recipe(path).model.params == {"class_weight": {0: 1, 1: 5}}
    path.write_text(MINIMAL + "extra:\n  ? [a]\n  : 1\n")
    assert _refused(lambda: load_recipe(path), RecipeError) == (
        f"{path}: line 4, column 5: a key must be a plain value, not a list or mapping"
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[" * 60_000, "nested deeper than 64 levels at line 1 column 65"),
        (
            '{"campaign_id": "a", "campaign_id": "b"}',
            "duplicate key 'campaign_id' in a JSON object",
        ),
        ('{"campaign_id": NaN}', "NaN is not a JSON number (numbers must be finite)"),
        ('{"campaign_id": 1e999}', "number 1e999 is out of range (numbers must be finite)"),
        ('{"campaign_id": "' + "x" * 70_000 + '"}', "70,019 characters is over the 65,536 limit"),
    ],
    ids=["deep", "duplicate-key", "nan", "overflow", "too-long"],
)
def test_context_params_json_is_parsed_strictly(raw: str, message: str) -> None:
    assert (
        _refused(lambda: parse_context_params(raw), ConfigError) == f"--context-params: {message}"
    )


def test_context_params_escaped_nul_reaches_the_type_check() -> None:
    given = parse_context_params(json.dumps({"campaign_id": "x\x00y", "day": "2026-12-01"}))
    recipe = recipe_from_dict(_base())
    with pytest.raises(ConfigError, match=r"campaign_id: expected a string without NUL"):
        resolve_context(recipe, given, "score")


def test_context_params_with_a_100kb_value_stay_one_short_line() -> None:
    recipe = recipe_from_dict(_base())
    huge = "x" * 50_000
    unknown = parse_context_params(json.dumps({huge: 1}))
    assert "(50,002 chars)" in _refused(
        lambda: resolve_context(recipe, unknown, "score"), ConfigError
    )
    wrong = {"campaign_id": [huge, huge], "day": "2026-12-01"}
    message = _refused(lambda: resolve_context(recipe, wrong, "score"), ConfigError)
    assert message.startswith("--context-params: campaign_id: expected a string, got list ['xxx")
    data = _base()
    data["context"]["campaign_id"]["default"] = 10**50
    data["name"] = "y" * 100_000
    assert _refused(lambda: recipe_from_dict(data), RecipeError).startswith("recipe: name: ")


def _with_evaluation(**evaluation: Any) -> dict:
    return {**_base(), "evaluation": evaluation}


def test_evaluation_bootstrap_and_policy_defaults() -> None:
    spec = recipe_from_dict(_base()).evaluation
    assert spec.bootstrap_replicates == 200
    assert spec.bootstrap_seed == 0
    assert spec.policy_shares == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert spec.decision_share == 0.3
    assert spec.holdout_contexts == []


def test_evaluation_policy_shares_are_sorted_and_unique() -> None:
    spec = recipe_from_dict(_with_evaluation(policy_shares=[0.5, 0.05, 1, 0.5])).evaluation
    assert spec.policy_shares == [0.05, 0.5, 1.0]


@pytest.mark.parametrize("shares", [[0.0, 0.5], [0.5, 1.2], [-0.1]])
def test_evaluation_policy_shares_outside_0_1_are_refused(shares: list[float]) -> None:
    with pytest.raises(
        RecipeError, match=r"^recipe: evaluation\.policy_shares: Policy shares outside \(0, 1\]"
    ) as info:
        recipe_from_dict(_with_evaluation(policy_shares=shares))
    assert "\n" not in str(info.value)


ECONOMICS = {"value_per_conversion": 40.0, "cost_per_contact": 0.05}


@pytest.mark.parametrize(
    ("evaluation", "field"),
    [
        ({"bootstrap_replicates": 49}, "bootstrap_replicates"),
        ({"bootstrap_replicates": 10_001}, "bootstrap_replicates"),
        ({"bootstrap_seed": -1}, "bootstrap_seed"),
        ({"bootstrap_seed": 2**32}, "bootstrap_seed"),
        ({"decision_share": 0}, "decision_share"),
        ({"decision_share": 1.5}, "decision_share"),
        ({"policy_shares": []}, "policy_shares"),
        ({"holdout_contexts": [True]}, "holdout_contexts"),
        ({"holdout_contexts": [1.5]}, "holdout_contexts"),
        ({"holdout_contexts": "cmp_2026_09"}, "holdout_contexts"),
        ({"bootstrap": 10}, "bootstrap"),
        ({"economics": {"cost_per_contact": 0.05}}, "economics.value_per_conversion"),
        ({"economics": {"value_per_conversion": 40}}, "economics.cost_per_contact"),
        ({"economics": {**ECONOMICS, "cost_per_contact": 0}}, "economics.cost_per_contact"),
        (
            {"economics": {**ECONOMICS, "value_per_conversion": -1}},
            "economics.value_per_conversion",
        ),
        (
            {"economics": {**ECONOMICS, "value_per_conversion": "nan"}},
            "economics.value_per_conversion",
        ),
        ({"economics": {**ECONOMICS, "budget": float("inf")}}, "economics.budget"),
        ({"economics": {**ECONOMICS, "budget": 0}}, "economics.budget"),
        ({"economics": {**ECONOMICS, "population": 0}}, "economics.population"),
        ({"economics": {**ECONOMICS, "population": 1.5}}, "economics.population"),
        ({"economics": {**ECONOMICS, "currency": "EUR"}}, "economics.currency"),
        ({"economics": [40, 0.05]}, "economics"),
    ],
)
def test_evaluation_fields_are_checked(evaluation: dict, field: str) -> None:
    with pytest.raises(RecipeError, match=rf"^recipe: evaluation\.{field}"):
        recipe_from_dict(_with_evaluation(**evaluation))


@pytest.mark.parametrize(
    ("economics", "field", "expected"),
    [
        # a tester's: the report's arithmetic overflowed, then matplotlib failed (exit 70)
        ({"value_per_conversion": 1.0e306, "budget": 300.0}, "value_per_conversion",
         "expected an amount of money from 0 to 1e12 (got 1e306)"),
        ({"cost_per_contact": 1e-308}, "cost_per_contact",
         "expected an amount of money from 1e-6 to 1e12 (got 1e-308)"),
        ({"cost_per_contact": 2e12}, "cost_per_contact",
         "expected an amount of money from 1e-6 to 1e12 (got 2e12)"),
        ({"population": 10**30}, "population", "expected a number of customers from 1 to 1e12 (got 1e30)"),
        ({"budget": 1e308}, "budget", "expected an amount of money from 1e-6 to 1e12 (got 1e308)"),
        ({"budget": 1e-7}, "budget", "expected an amount of money from 1e-6 to 1e12 (got 1e-7)"),
    ],
)  # fmt: skip
def test_evaluation_economics_are_amounts_a_campaign_can_have(
    economics: dict, field: str, expected: str
) -> None:
    message = refused(
        lambda: recipe_from_dict(_with_evaluation(economics={**ECONOMICS, **economics}), "r.yaml"),
        RecipeError,
    )
    assert message == f"r.yaml: evaluation.economics.{field}: {expected}"


def test_evaluation_economics_bounds_are_inclusive() -> None:
    """The largest amounts and population, and the smallest cost, still pass (the report draws
    them: tests/unit/test_report.py)."""
    economics = {"value_per_conversion": 1e12, "cost_per_contact": 1e-6, "budget": 1e12}
    spec = recipe_from_dict(_with_evaluation(economics={**economics, "population": 10**12}))
    assert spec.evaluation.economics is not None
    assert spec.evaluation.economics.population == 10**12


def test_evaluation_economics_are_optional_and_kept_as_given() -> None:
    assert recipe_from_dict(_with_evaluation()).evaluation.economics is None
    economics = recipe_from_dict(
        _with_evaluation(economics={**ECONOMICS, "budget": 300, "population": 50_000})
    ).evaluation.economics
    assert economics is not None
    assert (economics.value_per_conversion, economics.cost_per_contact) == (40.0, 0.05)
    assert (economics.budget, economics.population) == (300.0, 50_000)


def test_evaluation_holdout_contexts_take_strings_and_integers() -> None:
    spec = recipe_from_dict(_with_evaluation(holdout_contexts=["cmp_2026_03", 202606])).evaluation
    assert spec.holdout_contexts == ["cmp_2026_03", 202606]
    assert spec.bootstrap_replicates == 200


# -- columns listed once; names and text that reach dbt's generated sources ----------------


def _demo_with(root: Path, tmp_path: Path, edit: Callable[[dict], None]) -> Path:
    """recipes/conversion_xgb.yaml with one edit, at tmp/recipes/conversion_xgb.yaml."""
    data = yaml.safe_load((root / "recipes" / "conversion_xgb.yaml").read_text())
    edit(data)
    path = tmp_path / "recipes" / "conversion_xgb.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("field", "columns"),
    [
        ("entity_keys", ["customer_id", "customer_id"]),
        ("features", ["recency_days", "frequency_90d", "recency_days"]),
        ("exclude", ["region", "region"]),
    ],
)
def test_a_column_listed_twice_is_refused(
    root: Path, tmp_path: Path, field: str, columns: list[str]
) -> None:
    path = _demo_with(root, tmp_path, lambda d: d["data"].__setitem__(field, columns))
    assert _refused(lambda: load_recipe(path), RecipeError) == (
        f"{path}: data.{field}: '{columns[-1]}' is listed twice (expected each column once)"
    )


def test_an_entity_key_may_be_a_context_column(root: Path, tmp_path: Path) -> None:
    # a composite key (customer, campaign) whose campaign part is also the context filter
    path = _demo_with(
        root,
        tmp_path,
        lambda d: d["data"].__setitem__("entity_keys", ["customer_id", "campaign_id"]),
    )
    recipe = load_recipe(path)
    assert recipe.data.entity_keys == ["customer_id", "campaign_id"]
    assert list(recipe.context) == ["campaign_id"]


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [
        ("data.train_model", "train_{{ var('x') }}", "train_{{ var('x') }}"),
        ("data.score_model", "score') }}{{ ref('other", "score') }}{{ ref('other"),
        ("data.score_model", "score\\uplift", "score\\uplift"),
        ("data.entity_keys", ["customer_id", "{% if 1 %}id{% endif %}"], "{% if 1 %}id{% endif %}"),
        ("context.campaign_id.column", "campaign_{# note #}id", "campaign_{# note #}id"),
    ],
)
def test_names_that_dbt_would_render_are_refused(
    root: Path, tmp_path: Path, field: str, value: Any, name: str
) -> None:
    # `ml score` declares these to dbt, which renders them (a model's inside `ref('...')`)
    def edit(data: dict) -> None:
        *parents, last = field.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[last] = value

    path = _demo_with(root, tmp_path, edit)
    assert _refused(lambda: load_recipe(path), RecipeError) == (
        f"{path}: {field}: {name!r} is not a name dbt can be given "
        "(expected no {{, {%, {#, quote or backslash)"
    )


@pytest.mark.parametrize(
    "description",
    [
        "Scores {{ no_such_macro() }} for the team",
        "Uses {% if %} and {# a comment #} and {{ doc('x') }} as plain words",
        "Braces { alone } and } { are not templates",
    ],
)
def test_a_description_with_template_syntax_loads_as_written(
    root: Path, tmp_path: Path, description: str
) -> None:
    path = _demo_with(root, tmp_path, lambda d: d.__setitem__("description", description))
    assert load_recipe(path).description == description


@pytest.mark.parametrize(
    "description",
    ["Ends {% endraw %} early", "Ends {%- endraw -%} too", "{%+endraw %}"],
)
def test_a_description_with_an_endraw_tag_is_refused(
    root: Path, tmp_path: Path, description: str
) -> None:
    path = _demo_with(root, tmp_path, lambda d: d.__setitem__("description", description))
    assert _refused(lambda: load_recipe(path), RecipeError) == (
        f"{path}: description: must not contain an '{{% endraw %}}' tag (dbt shows the "
        "description verbatim inside a raw block, which the tag would end)"
    )
