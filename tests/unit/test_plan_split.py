"""A column split is checked against the training model's contract before anything runs."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from refusals import refused  # tests/unit/refusals.py

from ml.errors import RecipeError
from ml.plan import _check_split
from ml.recipe import recipe_from_dict


def _recipe(column: str, values: list) -> object:
    return recipe_from_dict(
        {
            "name": "split_unit",
            "data": {
                "train_model": "train_m",
                "score_model": "score_m",
                "entity_keys": ["id"],
                "target": "y",
            },
            "model": {"class_path": "xgboost.XGBClassifier"},
            "split": {"method": "column", "column": column, "test_values": values},
        }
    )


TRAIN = SimpleNamespace(name="train_m")


def test_values_of_another_kind_than_the_column_are_refused() -> None:
    kinds = {"cohort": "int", "as_of": "date", "week": "string"}
    _check_split(_recipe("cohort", [3, 4.0]), TRAIN, kinds, "r.yaml")
    _check_split(_recipe("as_of", [dt.date(2026, 1, 1)]), TRAIN, kinds, "r.yaml")
    message = refused(
        lambda: _check_split(_recipe("cohort", ["forty"]), TRAIN, kinds, "r.yaml"), RecipeError
    )
    assert message == (
        "r.yaml: split.test_values: 'forty' can never match column 'cohort' of train_m, which "
        "is int (expected integers)"
    )
    message = refused(
        lambda: _check_split(_recipe("nope", ["a"]), TRAIN, kinds, "r.yaml"), RecipeError
    )
    assert (
        message == "r.yaml: split.column: column 'nope' is not in the contract of dbt model train_m"
    )


@pytest.mark.parametrize("kind", ["time", "interval", "blob"])
def test_a_column_of_a_type_without_a_kind_is_left_to_the_data(kind: str) -> None:
    """A contract type the project has no kind for keeps its own name: no check to make."""
    _check_split(_recipe("t", ["08:00:00"]), TRAIN, {"t": kind}, "r.yaml")
