"""The recipe's tuning section: its shape (ml.recipe), its fit to the estimator and task
(ml.tuning.space.check_search), and sampling values into the model spec."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from refusals import refused  # tests/unit/refusals.py

from ml.errors import RecipeError
from ml.recipe import recipe_from_dict
from ml.tuning.space import check_search, distributions, suggest, with_model

ROOT = Path(__file__).resolve().parents[2]
X_SPACE = {
    "model.params.models.params.max_depth": {"int": [2, 6]},
    "model.params.models.params.learning_rate": {"float": [0.01, 0.3], "log": True},
    "model.params.cate_models.params.subsample": {"float": [0.5, 1.0]},
    "model.params.cate_models.params.booster": {"choice": ["gbtree", "dart"]},
}


def _demo(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())


def _recipe(
    base: str = "xgboost_x_learner", space: dict[str, Any] | None = None, **tuning: Any
) -> Any:
    data = _demo(base)
    data["tuning"] = {
        "search_space": copy.deepcopy(X_SPACE if space is None else space),
        "metric": "qini_coefficient",
        **tuning,
    }
    return recipe_from_dict(data, "r.yaml")


def _check(recipe: Any, task: str = "uplift") -> Any:
    return check_search(recipe, task, "r.yaml")


def test_x_learner_search_is_accepted() -> None:
    search = _check(_recipe(n_trials=5, cv_folds=4))
    assert list(search.space) == list(X_SPACE)
    assert (search.metric, search.direction, search.share) == ("qini_coefficient", "maximize", None)
    assert (search.n_trials, search.cv_folds, search.timeout_seconds) == (5, 4, None)


def test_policy_gain_metrics_follow_the_recipes_shares() -> None:
    recipe = _recipe(metric="policy_gain_at_25")
    with pytest.raises(RecipeError, match="tunable: qini_coefficient.*policy_gain_at_30"):
        _check(recipe)
    data = _demo("xgboost_x_learner")
    data["evaluation"] = {"policy_shares": [0.1, 0.25]}
    data["tuning"] = {"search_space": X_SPACE, "metric": "policy_gain_at_25"}
    search = _check(recipe_from_dict(data))
    assert (search.metric, search.share) == ("policy_gain_at_25", 0.25)


def test_a_classifier_minimizes_log_loss_by_default() -> None:
    recipe = _recipe(
        "conversion_xgb", {"model.params.max_depth": {"int": [2, 8]}}, metric="log_loss"
    )
    assert _check(recipe, "classification").direction == "minimize"


@pytest.mark.parametrize(
    ("space", "tuning", "task", "expected"),
    [
        (
            {"model.params.max_depth": {"int": [2, 8]}},
            {},
            "uplift",
            r"^r\.yaml: tuning\.search_space: model\.params\.max_depth: 2 \(of its int range\): "
            r"XLearner does not accept parameter 'max_depth'",
        ),
        (
            {"model.params.propensity_model.params.max_dept": {"int": [2, 8]}},
            {},
            "uplift",
            r"model\.params\.propensity_model\.params\.max_dept: .*does not use parameter "
            r"'max_dept'.*did you mean 'max_depth'",
        ),
        (
            {"model.params.nope.params.max_depth": {"int": [2, 8]}},
            {},
            "uplift",
            r"tuning\.search_space: model\.params\.nope\.params\.max_depth: model\.params\.nope is "
            r"not a nested \{class_path, params\} spec",
        ),
        (
            {"model.params.models": {"choice": [1, 2]}},
            {},
            "uplift",
            r"model\.params\.models is a nested spec, not a value",
        ),
        (
            {"model.params.models.params.max_depth": {"float": [2.0, 8.0]}},
            {},
            "uplift",
            r"model\.params\.models\.params\.max_depth: 2\.0 \(of its float range\): "
            r"XGBoost refuses it: Invalid Parameter format for max_depth expect int",
        ),
        (
            {"model.params.models.params.booster": {"choice": ["gbtree", "gbforest"]}},
            {},
            "uplift",
            r"model\.params\.models\.params\.booster: 'gbforest' \(of its choice range\): "
            r"model\.params\.models\.params: XGBoost refuses it: Unknown gbm type gbforest",
        ),
        (
            {
                "model.params.propensity_model.params.objective": {
                    "choice": ["binary:logistic", "reg:squarederror"]
                }
            },
            {},
            "uplift",
            r"^r\.yaml: tuning\.search_space: model\.params\.propensity_model\.params\.objective: "
            r"'reg:squarederror' \(of its choice range\): 'reg:squarederror' does not predict the "
            r"probability of a binary target, which XLearner's propensity_model scores",
        ),
        ({}, {"metric": "ate_observed"}, "uplift", r"tuning\.metric: 'ate_observed' is the same"),
        ({}, {"metric": "roc_auc"}, "uplift", r"'roc_auc' is not a metric a uplift model logs"),
        (
            {},
            {"direction": "minimize"},
            "uplift",
            r"tuning\.direction: minimize is the wrong way for qini_coefficient",
        ),
    ],
)
def test_refused_by_the_estimator_or_task(
    space: dict[str, Any], tuning: dict[str, Any], task: str, expected: str
) -> None:
    recipe = _recipe(space=space or None, **tuning)
    # on this thread: XGBoost reports unused names to the thread that registered its logger
    with pytest.raises(RecipeError) as caught:
        _check(recipe, task)
    message = caught.value.message
    assert "\n" not in message, message
    assert re.search(expected, message), message


def test_a_sampled_objective_must_suit_the_task() -> None:
    """Checked before any trial: a classifier's objective that would make it a regressor."""
    space = {"model.params.objective": {"choice": ["binary:logistic", "reg:squarederror"]}}
    recipe = _recipe("conversion_xgb", space, metric="log_loss")
    with pytest.raises(RecipeError) as caught:  # on this thread, as above
        _check(recipe, "classification")
    assert caught.value.message == (
        "r.yaml: tuning.search_space: model.params.objective: 'reg:squarederror' (of its choice "
        "range): 'reg:squarederror' does not predict the probability of a binary target, which "
        "a classification model scores; use binary:logistic (the default) or reg:logistic"
    )
    ok = {"model.params.objective": {"choice": ["binary:logistic", "reg:logistic"]}}
    assert _check(_recipe("conversion_xgb", ok, metric="log_loss"), "classification")


def test_metric_left_out_of_evaluation_metrics() -> None:
    data = _demo("xgboost_x_learner")
    data["evaluation"] = {"metrics": ["auuc_normalized"]}
    data["tuning"] = {"search_space": X_SPACE, "metric": "qini_coefficient"}
    with pytest.raises(RecipeError, match="'qini_coefficient' is not in evaluation.metrics"):
        _check(recipe_from_dict(data))


def test_a_class_outside_the_allowlist_is_never_imported() -> None:
    data = _demo("conversion_xgb")
    data["model"] = {"class_path": "antigravity.Fly", "params": {}}
    data["tuning"] = {"search_space": {"model.params.x": {"int": [1, 2]}}, "metric": "roc_auc"}
    recipe = recipe_from_dict(data)
    message = refused(lambda: _check(recipe, "classification"), RecipeError)
    assert "'antigravity.Fly' is not in the allowed modules" in message
    assert "antigravity" not in sys.modules


@pytest.mark.parametrize(
    ("tuning", "expected"),
    [
        ({"search_space": {}}, r"tuning\.search_space: dictionary should have at least 1 item"),
        (
            {"search_space": {"model.params.x": {"int": [8, 2]}}},
            r"search_space\.model\.params\.x\.int: the range \[8, 2\] is inverted",
        ),
        (
            {"search_space": {"model.params.x": {"float": [0.5, 0.5]}}},
            r"\.float: the range \[0\.5, 0\.5\] is empty",
        ),
        ({"search_space": {"model.params.x": {"int": []}}}, r"\.int: expected \[low, high\]"),
        (
            {"search_space": {"model.params.x": {"float": [0, 1], "log": True}}},
            r"\.x\.log: a log-scale range needs positive bounds \(got \[0\.0, 1\.0\]\)",
        ),
        (
            {"search_space": {"model.params.x": {"choice": []}}},
            r"\.choice: the list is empty",
        ),
        (
            {"search_space": {"model.params.x": {"choice": [1, 1]}}},
            r"\.choice: values repeat",
        ),
        (
            {"search_space": {"model.params.x": {"int": [1, 2], "float": [1, 2]}}},
            r"\.x: expected exactly one of int",
        ),
        (
            {"search_space": {"params.x": {"int": [1, 2]}}},
            r"tuning\.search_space: 'params\.x' is not a parameter path",
        ),
        ({"n_trials": 0}, r"tuning\.n_trials: input should be greater than 0"),
        ({"n_trials": -3}, r"tuning\.n_trials: input should be greater than 0"),
        ({"timeout_seconds": 0}, r"tuning\.timeout_seconds: input should be greater than 0"),
        ({"cv_folds": 1}, r"tuning\.cv_folds: input should be greater than or equal to 2"),
        ({"direction": "up"}, r"tuning\.direction: input should be 'maximize' or 'minimize'"),
        ({"metrics": "x"}, r"tuning\.metrics: unknown key"),
    ],
)
def test_refused_by_the_recipe_schema(tuning: dict[str, Any], expected: str) -> None:
    data = _demo("xgboost_x_learner")
    data["tuning"] = {"search_space": X_SPACE, "metric": "qini_coefficient", **tuning}
    message = refused(lambda: recipe_from_dict(data, "r.yaml"), RecipeError)
    assert message.startswith("r.yaml: tuning."), message
    assert re.search(expected, message), message


def test_sampled_values_land_in_the_model_spec_within_their_ranges() -> None:
    recipe = _recipe()
    search = _check(recipe)
    sampler = optuna.samplers.TPESampler(seed=3)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    seen = []
    for _ in range(12):
        trial = study.ask()
        values = suggest(trial, search.space)
        study.tell(trial, float(values["model.params.models.params.max_depth"]))
        seen.append(values)
        tuned = with_model(recipe, values).model.params
        assert (
            tuned["models"]["params"]["max_depth"] == values["model.params.models.params.max_depth"]
        )
        assert tuned["cate_models"]["params"]["booster"] in {"gbtree", "dart"}
        assert 0.5 <= tuned["cate_models"]["params"]["subsample"] <= 1.0
        assert 0.01 <= tuned["models"]["params"]["learning_rate"] <= 0.3
        # the rest of the spec is the recipe's
        assert tuned["propensity_model"] == recipe.model.params["propensity_model"]
        assert tuned["models"]["params"]["n_estimators"] == 150
    assert recipe.model.params["models"]["params"]["max_depth"] == 3  # the recipe is untouched
    depths = {v["model.params.models.params.max_depth"] for v in seen}
    assert depths <= set(range(2, 7)) and len(depths) > 1
    assert set(distributions(search.space)) == set(X_SPACE)


def test_the_same_seed_samples_the_same_values() -> None:
    search = _check(_recipe())

    def sample(seed: int) -> list[dict[str, Any]]:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        out = []
        for _ in range(15):
            trial = study.ask()
            values = suggest(trial, search.space)
            study.tell(trial, values["model.params.cate_models.params.subsample"])
            out.append(values)
        return out

    assert sample(42) == sample(42)
    assert sample(42) != sample(43)
