from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ml.errors import ConfigError, RecipeError
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
