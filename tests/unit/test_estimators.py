"""Class paths are held to the allowlist before any import, at every nesting level; params are
checked against what the estimator really uses, including XGBoost's **kwargs and 32-bit ints."""

from __future__ import annotations

import importlib
import re
import sys
import types
from pathlib import Path

import pytest
import yaml
from econml.metalearners import XLearner
from sklearn.ensemble import RandomForestRegressor
from xgboost import XGBClassifier, XGBRegressor, XGBRFClassifier

from ml import estimators
from ml.errors import ConfigError, RecipeError
from ml.estimators import (
    DEFAULT_ALLOWED_MODULES,
    build,
    check_allowed,
    check_params,
    check_task,
    import_class,
)
from ml.textio import MAX_MESSAGE

WHERE = "recipes/x.yaml: model"
ALLOWLIST_TAIL = (
    "is not in the allowed modules (xgboost, econml, sklearn); "
    "add its module prefix to estimators.allowed_modules in config/base.yaml"
)


@pytest.fixture
def no_imports(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail the test if anything reaches importlib.import_module."""
    calls: list[str] = []

    def refuse(name: str, *args, **kwargs):
        calls.append(name)
        raise AssertionError(f"importlib.import_module({name!r}) was called")

    monkeypatch.setattr(importlib, "import_module", refuse)
    return calls


def _raises(match: str):
    return pytest.raises(RecipeError, match=match)


def _one_line(exc: pytest.ExceptionInfo[RecipeError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert len(message) <= MAX_MESSAGE, message
    return message


# -- the allowlist ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "class_path",
    [
        "os.system",
        "subprocess.Popen",
        "builtins.eval",
        "sklearnx.linear_model.Ridge",  # starts with an allowed name, but another module
        "xgboost_evil.XGBRegressor",
        "nosuchpkg_outside_the_list.Model",  # would fail to import: the allowlist speaks first
    ],
)
def test_disallowed_class_paths_are_refused_before_import(no_imports, class_path: str) -> None:
    with _raises("allowed modules") as exc:
        import_class(class_path, f"{WHERE}.class_path")
    assert _one_line(exc) == f"{WHERE}.class_path: '{class_path}' {ALLOWLIST_TAIL}"
    assert no_imports == []


@pytest.mark.parametrize(
    ("class_path", "allowed"),
    [
        ("sklearn.linear_model.Ridge", True),
        ("sklearn.Anything", True),
        ("xgboost.XGBRegressor", True),
        ("econml.metalearners.XLearner", True),
        ("sklearnx.Y", False),
        ("sklearn_extra.cluster.KMedoids", False),
        ("econ.Model", False),
    ],
)
def test_prefixes_match_on_module_boundaries(class_path: str, allowed: bool) -> None:
    if allowed:
        check_allowed(class_path, "model.class_path")
    else:
        with _raises("is not in the allowed modules"):
            check_allowed(class_path, "model.class_path")


def test_a_narrower_configured_list_is_honoured(no_imports) -> None:
    check_allowed("sklearn.ensemble.RandomForestRegressor", "m", ["sklearn.ensemble"])
    with _raises(
        r"'sklearn.linear_model.Ridge' is not in the allowed modules \(sklearn.ensemble\)"
    ):
        check_allowed("sklearn.linear_model.Ridge", "m", ["sklearn.ensemble"])


@pytest.mark.parametrize("bad", ["", "sklearn.", ".sklearn", "a b", "sk-learn"])
def test_a_malformed_allowlist_entry_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"estimators.allowed_modules: .* is not a module path"):
        check_allowed("sklearn.linear_model.Ridge", "m", [bad])


def test_a_class_re_exported_into_an_allowed_module_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import subprocess

    fake = types.ModuleType("trusted_pkg")
    fake.Popen = subprocess.Popen  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "trusted_pkg", fake)
    with _raises(r"'trusted_pkg.Popen' is 'subprocess.Popen', which is not in the allowed modules"):
        import_class("trusted_pkg.Popen", "model.class_path", ["trusted_pkg"])


def test_nested_disallowed_paths_are_refused_before_any_nested_import(no_imports) -> None:
    params = {
        "models": {"class_path": "xgboost.XGBRegressor"},
        "cate_models": {
            "class_path": "sklearn.ensemble.RandomForestRegressor",
            "params": {"estimator": {"class_path": "os.system", "params": {"command": "true"}}},
        },
    }
    with _raises("allowed modules") as exc:
        check_params(XLearner, params, WHERE)
    assert _one_line(exc) == (
        f"{WHERE}.params.cate_models.params.estimator.class_path: 'os.system' {ALLOWLIST_TAIL}"
    )
    assert no_imports == []  # not even the allowed xgboost and sklearn specs were imported


def test_a_disallowed_path_in_a_list_names_its_index(no_imports) -> None:
    params = {
        "models": [{"class_path": "xgboost.XGBRegressor"}, {"class_path": "subprocess.Popen"}]
    }
    with _raises(r"model.params.models\[1\].class_path: 'subprocess.Popen' is not in the allowed"):
        check_params(XLearner, params, WHERE)


def test_build_refuses_and_never_runs_a_disallowed_class(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with _raises("'subprocess.Popen' is not in the allowed modules"):
        build("subprocess.Popen", {"args": ["touch", str(marker)]})
    nested = {
        "models": {"class_path": "subprocess.Popen", "params": {"args": ["touch", str(marker)]}}
    }
    with _raises(r"model.params.models.class_path: 'subprocess.Popen' is not in the allowed"):
        build("econml.metalearners.XLearner", nested)
    assert not marker.exists()


def test_nested_specs_take_only_class_path_and_params() -> None:
    with _raises(
        r"model.params.models.junk: unknown key \(a nested spec takes class_path and params\)"
    ):
        check_params(XLearner, {"models": {"class_path": "xgboost.XGBRegressor", "junk": 1}}, WHERE)
    with _raises(r"model.params.models.params: expected a mapping"):
        check_params(
            XLearner, {"models": {"class_path": "xgboost.XGBRegressor", "params": [1]}}, WHERE
        )
    with _raises(r"model.params.models.class_path: 'xgboost' is not a class path"):
        check_params(XLearner, {"models": {"class_path": "xgboost"}}, WHERE)


# -- parameter names -------------------------------------------------------------------------


def test_max_dept_on_xgboost_is_an_error_with_a_suggestion() -> None:
    with _raises(r"model.params.max_dept: XGBoost .* does not use parameter 'max_dept'") as exc:
        check_params(XGBRegressor, {"n_estimators": 10, "max_dept": 3}, WHERE)
    assert "did you mean 'max_depth'?" in _one_line(exc)


def test_max_dept_on_a_nested_xgboost_learner_is_an_error() -> None:
    params = {"models": {"class_path": "xgboost.XGBRegressor", "params": {"max_dept": 3}}}
    with _raises(r"model.params.models.params.max_dept: XGBoost .* does not use parameter"):
        check_params(XLearner, params, WHERE)


def test_max_dept_is_caught_even_with_xgboost_warnings_silenced() -> None:
    with _raises("does not use parameter 'max_dept'"):
        check_params(
            XGBRegressor, {"verbosity": 0, "validate_parameters": False, "max_dept": 3}, WHERE
        )


def test_xgboost_booster_params_it_uses_are_accepted() -> None:
    check_params(
        XGBRegressor,
        {"eta": 0.1, "lambda": 1.0, "alpha": 0.1, "seed": 3, "nthread": 1, "max_bin": 64},
        WHERE,
    )
    check_params(XGBRegressor, {"booster": "dart", "rate_drop": 0.1, "skip_drop": 0.5}, WHERE)
    check_params(XGBRegressor, {"objective": "reg:pseudohubererror", "huber_slope": 0.5}, WHERE)
    check_params(XGBClassifier, {"objective": "multi:softprob", "eval_metric": "mlogloss"}, WHERE)


def test_xgboost_params_are_judged_for_the_configured_booster() -> None:
    with _raises(r"model.params.rate_drop: XGBoost \(booster gbtree, .*\) does not use"):
        check_params(XGBRegressor, {"rate_drop": 0.1}, WHERE)


def test_xgboost_refuses_bad_values_at_validate_time() -> None:
    with _raises(r"model.params.rate_drop: XGBoost refuses it: value 5 .*rate_drop"):
        check_params(XGBRegressor, {"booster": "dart", "rate_drop": 5}, WHERE)
    with _raises(r"model.params.rate_drop: XGBoost refuses it: .*expect float"):
        check_params(XGBRegressor, {"booster": "dart", "rate_drop": "lots"}, WHERE)
    with _raises(r"model.params.objective: XGBoost refuses it: Unknown objective"):
        check_params(XGBRegressor, {"objective": "reg:nope"}, WHERE)


@pytest.mark.parametrize("rounds", [-5, 0])
@pytest.mark.parametrize("cls", [XGBClassifier, XGBRegressor, XGBRFClassifier])
def test_xgboost_needs_at_least_one_round(cls: type, rounds: int) -> None:
    """Below 1, XGBoost trained a model of no trees, and `ml train` registered it."""
    with _raises(r"^recipes/x\.yaml: model\.params\.n_estimators: expected at least 1 ") as exc:
        check_params(cls, {"n_estimators": rounds, "max_depth": 2}, WHERE)
    assert _one_line(exc).endswith(f"(got {rounds}): XGBoost would train a model of no trees")
    check_params(cls, {"n_estimators": 1}, WHERE)


def test_xgboost_rounds_are_checked_in_nested_learners() -> None:
    nested = {"class_path": "xgboost.XGBRegressor", "params": {"n_estimators": -5}}
    with _raises(r"^recipes/x\.yaml: model\.params\.cate_models\.params\.n_estimators: expected"):
        check_params(XLearner, {"models": nested | {"params": {}}, "cate_models": nested}, WHERE)


def test_xgboost_early_stopping_is_refused_as_ml_passes_no_validation_set() -> None:
    with _raises(r"model\.params\.early_stopping_rounds: ml trains .* without a validation set"):
        check_params(XGBClassifier, {"early_stopping_rounds": 10}, WHERE)


def test_the_xgboost_check_fails_closed_if_it_cannot_see_unused_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(estimators, "_unused_names", lambda message: [])
    with _raises("cannot check XGBRegressor's parameters"):
        check_params(XGBRegressor, {"max_depth": 3}, WHERE)


@pytest.mark.parametrize("class_path", ["xgboost.XGBRegressor", "econml.metalearners.XLearner"])
def test_ten_thousand_junk_keys_give_one_short_line(class_path: str) -> None:
    cls = import_class(class_path, "model.class_path")
    junk = {f"junk_{i}": 1 for i in range(10_000)}
    with _raises(r"model.params.junk_0: .* parameter 'junk_0', nor 9,999 other unknown") as exc:
        check_params(cls, junk, WHERE)
    assert _one_line(exc).count("junk_") == 2  # the path and the name, not the 10,000


def test_unknown_params_of_plain_constructors_are_errors_at_every_level() -> None:
    with _raises(r"model.params.cate_modelz: XLearner does not accept parameter 'cate_modelz'"):
        check_params(XLearner, {"cate_modelz": {"class_path": "xgboost.XGBRegressor"}}, WHERE)
    nested = {
        "models": {
            "class_path": "sklearn.ensemble.RandomForestRegressor",
            "params": {"n_estimator": 10},
        }
    }
    with _raises(r"model.params.models.params.n_estimator: RandomForestRegressor does not accept"):
        check_params(XLearner, nested, WHERE)


def test_unknown_names_for_other_kwargs_constructors_fail_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = types.ModuleType("kwargs_pkg")

    class Model:
        def __init__(self, depth: int = 3, **kwargs) -> None:
            self.depth, self.kwargs = depth, kwargs

        def fit(self, x, y):
            return self

    Model.__module__ = "kwargs_pkg"
    fake.Model = Model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kwargs_pkg", fake)
    cls = import_class("kwargs_pkg.Model", "model.class_path", ["kwargs_pkg"])
    check_params(cls, {"depth": 4}, WHERE, ["kwargs_pkg"])
    with _raises(r"model.params.dept: Model does not accept parameter 'dept'.*takes \*\*kwargs"):
        check_params(cls, {"dept": 4}, WHERE, ["kwargs_pkg"])


# -- parameter values ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2**40, -(2**40), 2**31, 10**400])
def test_integers_beyond_32_bits_are_refused(value: int) -> None:
    with _raises(r"model.params.n_estimators: .* is outside the 32-bit integer range") as exc:
        check_params(XGBRegressor, {"n_estimators": value}, WHERE)
    _one_line(exc)


def test_integers_beyond_32_bits_are_refused_at_every_level() -> None:
    nested = {"models": {"class_path": "xgboost.XGBRegressor", "params": {"n_estimators": 2**40}}}
    with _raises(r"model.params.models.params.n_estimators: 1099511627776 is outside the 32-bit"):
        check_params(XLearner, nested, WHERE)
    with _raises(r"model.params.max_depth: 2147483648 is outside the 32-bit"):
        check_params(RandomForestRegressor, {"max_depth": 2**31}, WHERE)
    with _raises(r"model.params.monotonic_cst\[1\]: 4294967296 is outside"):
        check_params(RandomForestRegressor, {"monotonic_cst": [1, 2**32]}, WHERE)


def test_a_float_for_an_int_typed_param_is_bounded_too() -> None:
    with _raises(r"model.params.n_estimators: 1000000000000 is outside the 32-bit"):
        check_params(XGBRegressor, {"n_estimators": 1e12}, WHERE)


def test_int_limit_itself_passes() -> None:
    check_params(XGBRegressor, {"n_estimators": 2**31 - 1}, WHERE)


def test_wrong_types_are_refused_where_the_library_declares_them() -> None:
    with _raises(r"model.params.max_depth: input should be a valid integer.*\(got 'six'\)"):
        check_params(XGBRegressor, {"max_depth": "six"}, WHERE)
    with _raises(r"model.params.n_estimators: The 'n_estimators' parameter of RandomForest"):
        check_params(RandomForestRegressor, {"n_estimators": "many"}, WHERE)
    with _raises(r"model.params.criterion: The 'criterion' parameter .* must be a str among"):
        check_params(RandomForestRegressor, {"criterion": "nope"}, WHERE)
    check_params(RandomForestRegressor, {"min_samples_leaf": 0.1, "max_features": "sqrt"}, WHERE)


def test_long_values_are_elided() -> None:
    with _raises("is not a class path") as exc:
        check_allowed("x" * 5000, "model.class_path")
    _one_line(exc)
    with _raises("valid integer") as exc:
        check_params(XGBRegressor, {"max_depth": "y" * 5000}, WHERE)
    _one_line(exc)


# -- what the task needs of the estimator ------------------------------------------------------

ANY_MODEL = (
    "a recipe's model must be a regressor, a classifier with predict_proba, or an uplift "
    "estimator (EconML)"
)
XGB_REGRESSOR = {"class_path": "xgboost.XGBRegressor", "params": {"n_estimators": 5}}


@pytest.mark.parametrize(
    ("class_path", "params", "expected"),
    [
        # no predict: it failed after training
        ("sklearn.decomposition.PCA", {},
         f"model.class_path: 'sklearn.decomposition.PCA' is not a predictor (it has no predict method); {ANY_MODEL}"),
        # it trained and was registered as a regression model
        ("sklearn.cluster.KMeans", {"n_clusters": 2},
         f"model.class_path: 'sklearn.cluster.KMeans' is a clusterer; {ANY_MODEL}"),
        ("sklearn.mixture.GaussianMixture", {},
         f"model.class_path: 'sklearn.mixture.GaussianMixture' is a density estimator; {ANY_MODEL}"),
        ("xgboost.XGBRanker", {},
         "model.class_path: 'xgboost.XGBRanker' is neither a regressor nor a classifier"),
        # classifiers without class probabilities failed when scoring the test split
        ("sklearn.svm.SVC", {"probability": False},
         "model.class_path: 'sklearn.svm.SVC' has no predict_proba with these params; a "
         "classification model must be a classifier with predict_proba (set model.params.probability: true)"),
        ("sklearn.linear_model.RidgeClassifier", {},
         f"model.class_path: 'sklearn.linear_model.RidgeClassifier' is a classifier; {ANY_MODEL}"),
        # the evaluation failed: "proba must lie in [0, 1]"
        ("xgboost.XGBClassifier", {"objective": "reg:squarederror"},
         "model.params.objective: 'reg:squarederror' does not predict the probability of a "
         "binary target, which a classification model scores; use binary:logistic (the default) or reg:logistic"),
        ("xgboost.XGBClassifier", {"objective": "multi:softprob"}, "model.params.objective: 'multi:softprob' does not"),
        ("xgboost.XGBRegressor", {"objective": "multi:softmax"},
         "model.params.objective: 'multi:softmax' predicts one score per class, not the target's value"),
        ("xgboost.XGBRegressor", {"objective": "rank:pairwise"},
         "model.params.objective: 'rank:pairwise' predicts a ranking score"),
        # uplift: the nuisance models EconML names a role for
        ("econml.metalearners.XLearner",
         {"models": XGB_REGRESSOR, "propensity_model": {"class_path": "sklearn.linear_model.Ridge"}},
         "model.params.propensity_model.class_path: 'sklearn.linear_model.Ridge' is a regressor; "
         "XLearner's propensity_model must be a classifier with predict_proba"),
        ("econml.metalearners.XLearner",
         {"models": XGB_REGRESSOR, "propensity_model": {"class_path": "xgboost.XGBClassifier",
                                                        "params": {"objective": "reg:squarederror"}}},
         "model.params.propensity_model.params.objective: 'reg:squarederror' does not predict the "
         "probability of a binary target, which XLearner's propensity_model scores"),
        ("econml.metalearners.TLearner", {"models": [XGB_REGRESSOR, {"class_path": "xgboost.XGBClassifier"}]},
         "model.params.models[1].class_path: 'xgboost.XGBClassifier' is a classifier; TLearner's "
         "models must be a regressor"),
        ("econml.dml.CausalForestDML",
         {"model_y": XGB_REGRESSOR, "model_t": {"class_path": "xgboost.XGBClassifier"}},
         "model.params.model_t.class_path: 'xgboost.XGBClassifier' is a classifier; "
         "CausalForestDML's model_t (discrete_treatment: false) must be a regressor"),
    ],
)  # fmt: skip
def test_an_estimator_that_cannot_do_its_task_is_refused(
    class_path: str, params: dict, expected: str
) -> None:
    task = estimators.task_of(import_class(class_path, "model.class_path"))
    with _raises("^" + re.escape(f"{WHERE}{expected.removeprefix('model')}")) as exc:
        check_params(import_class(class_path, "model.class_path"), params, WHERE)
        check_task(class_path, params, task, WHERE)
    _one_line(exc)


@pytest.mark.parametrize(
    ("class_path", "params"),
    [
        ("sklearn.svm.SVC", {"probability": True}),
        ("sklearn.linear_model.LogisticRegression", {}),
        ("sklearn.linear_model.Ridge", {}),
        ("xgboost.XGBClassifier", {"objective": "reg:logistic"}),
        ("xgboost.XGBRegressor", {"objective": "count:poisson"}),
        ("xgboost.XGBRegressor", {"objective": "binary:logistic"}),
        ("econml.dml.CausalForestDML",
         {"model_y": XGB_REGRESSOR, "model_t": {"class_path": "sklearn.svm.SVC", "params": {"probability": True}},
          "discrete_treatment": True}),
        ("econml.dr.DRLearner",
         {"model_regression": {"class_path": "sklearn.linear_model.LogisticRegression"}, "discrete_outcome": True}),
    ],
)  # fmt: skip
def test_estimators_that_can_do_their_task_pass(class_path: str, params: dict) -> None:
    check_task(class_path, params, estimators.task_of(import_class(class_path, "m")), WHERE)


# -- the demo recipes and config -------------------------------------------------------------


def test_nested_x_learner_with_xgboost_learners_is_accepted() -> None:
    params = {
        "models": {
            "class_path": "xgboost.XGBRegressor",
            "params": {"objective": "binary:logistic", "n_estimators": 150, "max_depth": 3},
        },
        "propensity_model": {
            "class_path": "xgboost.XGBClassifier",
            "params": {"n_estimators": 50, "max_depth": 2, "n_jobs": 2},
        },
        "cate_models": {
            "class_path": "xgboost.XGBRegressor",
            "params": {"n_estimators": 150, "learning_rate": 0.05, "subsample": 0.8},
        },
    }
    check_params(XLearner, params, WHERE)


@pytest.mark.parametrize(
    "recipe_file",
    sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_every_recipe_in_the_repo_is_accepted(recipe_file: Path) -> None:
    from ml.recipe import load_recipe

    recipe = load_recipe(recipe_file)
    cls = import_class(recipe.model.class_path, f"{recipe_file.name}: model.class_path")
    check_params(cls, recipe.model.params, f"{recipe_file.name}: model")
    task = estimators.task_of(cls)
    check_task(recipe.model.class_path, recipe.model.params, task, f"{recipe_file.name}: model")


def test_the_default_allowlist_is_the_same_in_code_config_and_base_yaml(root: Path) -> None:
    from ml.config import EstimatorSettings, load_settings

    base = yaml.safe_load((root / "config" / "base.yaml").read_text())
    assert tuple(base["estimators"]["allowed_modules"]) == DEFAULT_ALLOWED_MODULES
    assert tuple(EstimatorSettings().allowed_modules) == DEFAULT_ALLOWED_MODULES
    assert tuple(load_settings(root=root).estimators.allowed_modules) == DEFAULT_ALLOWED_MODULES


def test_config_without_the_setting_still_loads(project: Path) -> None:
    from ml.config import load_settings

    base_file = project / "config" / "base.yaml"
    base = yaml.safe_load(base_file.read_text())
    del base["estimators"]
    base_file.write_text(yaml.safe_dump(base))
    settings = load_settings(root=project)
    assert tuple(settings.estimators.allowed_modules) == DEFAULT_ALLOWED_MODULES
