"""Estimators from class paths: allowlist, import, check params against what the class uses, build.

Any class with a scikit-learn style constructor works, from the module prefixes config allows
(`estimators.allowed_modules`): a recipe is code, so a class path is checked as a string before
anything is imported. A mapping with a `class_path` key inside params (or in a list there) is
built too, so nuisance models of EconML estimators are declared in the recipe; every nesting
level is checked like the top one.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import re
import typing
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from ml.errors import ConfigError, RecipeError, one_line
from ml.textio import MAX_MESSAGE, elide

Task = Literal["uplift", "classification", "regression"]

DEFAULT_ALLOWED_MODULES: tuple[str, ...] = ("xgboost", "econml", "sklearn")
# XGBoost's native parameters are 32-bit, and scikit-learn's Cython trees and numpy seeds are
# no wider: a larger integer is a typo, or a recipe that would run unbounded.
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
_CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
_MODULE_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_NAME = re.compile(r"[A-Za-z_]\w*")
_SPEC_KEYS = {"class_path", "params"}
# Constraints name feature columns, which only the training data has; XGBoost checks them at fit.
_XGB_FEATURE_BOUND = {"monotone_constraints", "interaction_constraints"}
_XGB_CANARY = "ml_validate_canary"  # a name XGBoost must report unused, or the probe is blind


def check_allowed(
    class_path: Any, where: str, allowed_modules: Sequence[str] | None = None
) -> None:
    """Refuse a class path outside the allowed module prefixes: on the string, before any import."""
    allowed = _allowed(allowed_modules)
    if not isinstance(class_path, str) or not _CLASS_PATH.fullmatch(class_path):
        raise _error(
            f"{where}: {_show(class_path)} is not a class path (expected module.Class, e.g. sklearn.linear_model.Ridge)"
        )
    if not _within(class_path, allowed):
        raise _error(
            f"{where}: {_show(class_path)} is not in the allowed modules ({_listing(allowed)}); "
            "add its module prefix to estimators.allowed_modules in config/base.yaml"
        )


def import_class(class_path: str, where: str, allowed_modules: Sequence[str] | None = None) -> type:
    allowed = _allowed(allowed_modules)
    check_allowed(class_path, where, allowed)
    module_name, _, attr = class_path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _error(f"{where}: cannot import {_show(class_path)} ({one_line(exc, 120)})") from None
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise _error(f"{where}: {_show(class_path)} is not a class in module {module_name}")
    defined_in = f"{cls.__module__}.{cls.__qualname__}"
    if not _within(defined_in, allowed):  # an allowed module may re-export anything it imports
        raise _error(
            f"{where}: {_show(class_path)} is {_show(defined_in)}, which is not in the allowed modules "
            f"({_listing(allowed)}); add its module prefix to estimators.allowed_modules in config/base.yaml"
        )
    return cls


def task_of(cls: type) -> Task:
    """Uplift estimators estimate effects (EconML's `effect`); the rest follow scikit-learn tags."""
    if callable(getattr(cls, "effect", None)) and callable(getattr(cls, "fit", None)):
        return "uplift"
    if (
        callable(getattr(cls, "predict_proba", None))
        or getattr(cls, "_estimator_type", None) == "classifier"
    ):
        return "classification"
    return "regression"


def check_task(
    class_path: str,
    params: dict[str, Any],
    task: Task,
    where: str,
    allowed_modules: Sequence[str] | None = None,
) -> None:
    """The estimator, built unfitted with the recipe's params, can do its task: a regressor for
    regression, a classifier with predict_proba for classification (an XGBoost objective that
    predicts what the task scores), and for uplift each nuisance model EconML's parameter names
    a role for. `check_params` has passed: every class path is allowed and every param taken."""
    if task == "uplift":
        _check_nuisance_models(class_path, params, where, allowed_modules)
        return
    estimator = build(class_path, params, None, where, allowed_modules)
    role: Role = "classifier" if task == "classification" else "regressor"
    _check_role(estimator, role, where, class_path, None)


def _check_nuisance_models(
    class_path: str, params: dict[str, Any], where: str, allowed_modules: Sequence[str] | None
) -> None:
    cls = import_class(class_path, f"{where}.class_path", allowed_modules)
    accepted = _constructor_params(cls)[0]
    for name, value in params.items():
        role = _nuisance_role(name, params)
        specs = value if isinstance(value, list) else [value]
        if role is None or not any(_is_spec(spec) for spec in specs):
            continue
        owner = f"{cls.__name__}'s {name}"
        flag = _ROLE_FLAGS.get(name)
        if flag in accepted:  # say why: the flag decides the role
            owner += f" ({flag}: {'true' if params.get(flag) is True else 'false'})"
        for i, spec in enumerate(specs):
            if _is_spec(spec):
                path = f"{where}.params.{name}" + (f"[{i}]" if isinstance(value, list) else "")
                inner = dict(spec.get("params") or {})
                estimator = build(spec["class_path"], inner, None, path, allowed_modules)
                _check_role(estimator, role, path, spec["class_path"], owner)


def check_params(
    cls: type, params: dict[str, Any], where: str, allowed_modules: Sequence[str] | None = None
) -> None:
    """Every param must be one the class uses, of its type, and an int only within 32 bits.

    Nested specs get the same checks; every class path under `params` is held against the
    allowlist before any of them is imported.
    """
    allowed = _allowed(allowed_modules)
    for path, spec in _nested_specs(params, where):
        check_allowed(spec["class_path"], f"{path}.class_path", allowed)
    _check_params(cls, params, where, allowed)


def build(
    class_path: str,
    params: dict[str, Any],
    seed: int | None = None,
    where: str = "model",
    allowed_modules: Sequence[str] | None = None,
) -> Any:
    """Instantiate the estimator and nested specs; seed every `random_state` left unset."""
    allowed = _allowed(allowed_modules)
    check_allowed(class_path, f"{where}.class_path", allowed)
    for path, spec in _nested_specs(params, where):
        check_allowed(spec["class_path"], f"{path}.class_path", allowed)
    return _build(class_path, params, seed, where, allowed)


def _build(
    class_path: str, params: dict[str, Any], seed: int | None, where: str, allowed: tuple[str, ...]
) -> Any:
    cls = import_class(class_path, f"{where}.class_path", allowed)
    kwargs = {
        name: _build_value(value, seed, f"{where}.params.{name}", allowed)
        for name, value in params.items()
    }
    if seed is not None and "random_state" not in kwargs and _accepts(cls, "random_state"):
        kwargs["random_state"] = seed
    try:
        return cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - constructor errors are the recipe's
        raise _error(f"{where}: {cls.__name__}({', '.join(kwargs)}) failed: {exc}") from None


def _build_value(value: Any, seed: int | None, where: str, allowed: tuple[str, ...]) -> Any:
    if _is_spec(value):
        return _build(
            str(value["class_path"]), dict(value.get("params") or {}), seed, where, allowed
        )
    if isinstance(value, list):
        return [_build_value(v, seed, f"{where}[{i}]", allowed) for i, v in enumerate(value)]
    return value


# -- checking params -----------------------------------------------------------------------


def _check_params(cls: type, params: dict[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    named, hints, takes_kwargs = _constructor_params(cls)
    xgboost_model = _is_xgboost_model(cls)
    unknown = [name for name in params if name not in named]
    if unknown and not xgboost_model:  # XGBoost's own learner judges its wrappers' **kwargs
        note = (
            "; it takes **kwargs, but only named parameters can be checked" if takes_kwargs else ""
        )
        raise _unknown(where, unknown, f"{cls.__name__} does not accept", named, note)
    for name, value in params.items():
        path = f"{where}.params.{name}"
        _check_value(value, path, allowed)
        hint = hints.get(name)
        if hint is not None and not _holds_spec(value):
            _check_type(hint, value, path)
    if xgboost_model:
        _check_xgboost_params(cls, params, where, named)
    _check_sklearn_constraints(cls, params, where)


def _check_value(value: Any, path: str, allowed: tuple[str, ...]) -> None:
    """Nested specs are checked like the top level; integers anywhere within 32 bits."""
    if _is_spec(value):
        nested = import_class(value["class_path"], f"{path}.class_path", allowed)
        _check_params(nested, dict(value.get("params") or {}), path, allowed)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_value(item, f"{path}[{i}]", allowed)
    else:
        _check_ints(value, path)


def _check_ints(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_ints(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_ints(item, f"{path}[{i}]")
    elif isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
        raise _error(
            f"{path}: {_show(value)} is outside the 32-bit integer range estimators support "
            f"({INT_MIN:,} to {INT_MAX:,})"
        )


def _unknown(
    where: str,
    unknown: list[str],
    verb: str,
    named: set[str],
    note: str = "",
    listed: bool = True,
) -> RecipeError:
    """One line however many names are wrong: the first, how many others, and what would do."""
    first = unknown[0]
    others = f", nor {len(unknown) - 1:,} other unknown parameters" if len(unknown) > 1 else ""
    close = difflib.get_close_matches(str(first), sorted(named), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    accepted = f" (accepted: {_listing(sorted(named), 100)})" if named and listed else ""
    return _error(
        f"{where}.params.{elide(str(first), 60)}: {verb} parameter {_show(first)}{others}{hint}{note}{accepted}"
    )


def _check_xgboost_params(cls: type, params: dict[str, Any], where: str, named: set[str]) -> None:
    """XGBoost's wrappers pass unknown kwargs to the native learner, which ignores names it does
    not use (a warning at fit). Ask the learner itself, configured with the recipe's params on a
    one-row matrix, which names it does not use and which values it refuses."""
    import numpy as np
    import xgboost

    extras = [name for name in params if name not in named]
    bad = next((n for n in extras if not isinstance(n, str) or not _NAME.fullmatch(n)), None)
    if bad is not None:
        raise _unknown(where, [bad], f"{cls.__name__} has no", named, listed=False)
    spec = next((n for n in extras if _holds_spec(params[n])), None)
    if spec is not None:
        raise _error(
            f"{where}.params.{spec}: XGBoost learner parameters take plain values, not a class_path spec"
        )
    try:
        learner = cls(**{k: v for k, v in params.items() if not _holds_spec(v)}).get_xgb_params()
    except Exception as exc:  # noqa: BLE001 - the wrapper's own refusal is the recipe's
        raise _error(f"{where}: {cls.__name__} refuses its params: {one_line(exc, 160)}") from None
    _check_xgboost_rounds(params, where)
    learner = {k: v for k, v in learner.items() if v is not None and k not in _XGB_FEATURE_BOUND}
    if str(learner.get("objective", "")).startswith("multi:") and "num_class" not in learner:
        learner["num_class"] = 2  # XGBClassifier sets it from the labels at fit
    probe = {**learner, "validate_parameters": True, "verbosity": 1, _XGB_CANARY: 1}
    matrix = xgboost.DMatrix(np.zeros((1, 1)), label=[0.0])
    with warnings.catch_warnings(record=True) as caught, xgboost.config_context(verbosity=1):
        warnings.simplefilter("always")
        try:
            config = json.loads(xgboost.Booster(probe, [matrix]).save_config())
        except xgboost.core.XGBoostError as exc:
            raise _xgboost_refusal(exc, params, where) from None
    unused = {name for w in caught for name in _unused_names(str(w.message))}
    if _XGB_CANARY not in unused:  # fail closed if this xgboost reports unused names differently
        raise _error(
            f"{where}: cannot check {cls.__name__}'s parameters: xgboost {xgboost.__version__} did not "
            "report an unused test parameter, so misspelt ones would go unnoticed"
        )
    unused.discard(_XGB_CANARY)
    if unused:
        ordered = [n for n in params if n in unused] + sorted(unused - set(params))
        train = config["learner"]["learner_train_param"]
        verb = f"XGBoost (booster {train['booster']}, objective {train['objective']}) does not use"
        # suggest from the names this configuration does use: the wrapper's and the learner's
        raise _unknown(where, ordered, verb, named | _leaf_keys(config), listed=False)


def _check_xgboost_rounds(params: dict[str, Any], where: str) -> None:
    """The wrapper's own counts, which the learner probe never sees: XGBoost trains zero rounds
    for `n_estimators` below 1 (a model of no trees, registered as if trained), and early
    stopping needs a validation set, which `ml train` never passes (it fails at fit)."""
    rounds = params.get("n_estimators")
    if rounds is not None and not isinstance(rounds, bool) and rounds < 1:
        raise _error(
            f"{where}.params.n_estimators: expected at least 1 (got {_show(rounds)}): "
            "XGBoost would train a model of no trees"
        )
    if params.get("early_stopping_rounds") is not None:
        raise _error(
            f"{where}.params.early_stopping_rounds: ml trains on the whole training split without "
            "a validation set, so XGBoost cannot stop early; remove it (or tune n_estimators)"
        )


def _leaf_keys(config: Any) -> set[str]:
    """The parameter names in a saved XGBoost config (its JSON's leaf keys)."""
    if isinstance(config, dict):
        return {k for key, v in config.items() for k in (_leaf_keys(v) or {key})}
    if isinstance(config, list):
        return {k for v in config for k in _leaf_keys(v)}
    return set()


def _unused_names(message: str) -> list[str]:
    """The names in XGBoost's `Parameters: { "a", "b" } are not used.` warning."""
    match = re.search(r"Parameters: \{(.*)\} are not used", message, re.S)
    return re.findall(r'"([^"]*)"', match.group(1)) if match else []


def _xgboost_refusal(exc: Exception, params: dict[str, Any], where: str) -> RecipeError:
    text = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", str(exc).strip())
    line = text.splitlines()[0] if text else "refused"
    name = next((word for word in re.findall(r"\w+", line) if word in params), None)
    path = f"{where}.params.{name}" if name else f"{where}.params"
    return _error(f"{path}: XGBoost refuses it: {elide(line, 160)}")


def _check_sklearn_constraints(cls: type, params: dict[str, Any], where: str) -> None:
    """scikit-learn estimators declare each param's types and ranges; check them now, not at fit."""
    constraints = getattr(cls, "_parameter_constraints", None)
    if not isinstance(constraints, dict) or not _within(cls.__module__, ("sklearn",)):
        return
    try:
        from sklearn.utils._param_validation import (
            InvalidParameterError,
            validate_parameter_constraints,
        )
    except ImportError:  # an older scikit-learn checks them itself, at fit
        return
    for name, value in params.items():
        if name in constraints and not _holds_spec(value):
            try:
                validate_parameter_constraints(
                    {name: constraints[name]}, {name: value}, caller_name=cls.__name__
                )
            except InvalidParameterError as exc:
                raise _error(f"{where}.params.{name}: {elide(str(exc), 200)}") from None


# -- what a task needs of its estimator --------------------------------------------------------

Role = Literal["regressor", "classifier"]
# EconML's names for the models inside an uplift estimator: outcome models (classifiers when
# `discrete_outcome`), treatment models (classifiers; model_t only when `discrete_treatment`)
# and final CATE models; a model a name does not cover is left to EconML.
_OUTCOME_MODELS = {"models", "overall_model", "model_regression", "model_y"}
_PROPENSITY_MODELS = {"propensity_model", "model_propensity"}
_CATE_MODELS = {"cate_models", "final_models", "model_final"}
_ROLE_FLAGS = {
    "model_t": "discrete_treatment",
    **{name: "discrete_outcome" for name in _OUTCOME_MODELS},
}
# what the XGBoost objective predicts: a probability of the binary target, or something no
# regression target is (class labels or probabilities per class, a ranking score)
_PROBABILITY_OBJECTIVES = ("binary:logistic", "reg:logistic")
_NOT_A_VALUE = {"multi:": "one score per class", "rank:": "a ranking score"}


def _nuisance_role(name: str, params: dict[str, Any]) -> Role | None:
    if name in _PROPENSITY_MODELS:
        return "classifier"
    if name == "model_t":
        return "classifier" if params.get("discrete_treatment") is True else "regressor"
    if name in _OUTCOME_MODELS:
        return "classifier" if params.get("discrete_outcome") is True else "regressor"
    return "regressor" if name in _CATE_MODELS else None


def _check_role(
    estimator: Any,
    role: Role,
    where: str,
    class_path: str,
    owner: str | None,
) -> None:
    """`owner` names the uplift estimator's parameter the model fills; None for the recipe's
    own model, whose task follows from its class (`task_of`), so any other estimator type is
    refused there, while a nuisance model scikit-learn does not tag is left to EconML."""
    kind = _estimator_kind(estimator)
    needs = "a classifier with predict_proba" if role == "classifier" else "a regressor"
    shown = _show(class_path)
    if kind != role and (owner is None or kind is not None):
        what = _describe_kind(kind, estimator)
        rule = f"{owner} must be {needs}" if owner else _ANY_MODEL
        raise _error(f"{where}.class_path: {shown} is {what}; {rule}")
    subject = owner or f"a {'classification' if role == 'classifier' else 'regression'} model"
    method = "predict_proba" if role == "classifier" else "predict"
    if not callable(getattr(estimator, method, None)):
        probability = "probability" in _constructor_params(type(estimator))[0]
        hint = f" (set {where.rpartition(': ')[2]}.params.probability: true)" if probability else ""
        raise _error(
            f"{where}.class_path: {shown} has no {method} with these params; {subject} must be "
            f"{needs}{hint}"
        )
    if _is_xgboost_model(type(estimator)):
        _check_objective(getattr(estimator, "objective", None), role, where, subject)


_ANY_MODEL = (
    "a recipe's model must be a regressor, a classifier with predict_proba, or an uplift "
    "estimator (EconML)"
)


def _describe_kind(kind: str | None, estimator: Any) -> str:
    if kind is not None:
        name = kind.replace("_", " ")
        return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
    if not callable(getattr(estimator, "predict", None)):
        return "not a predictor (it has no predict method)"
    return "neither a regressor nor a classifier (scikit-learn tags it as neither)"


def _check_objective(objective: Any, role: Role, where: str, subject: str) -> None:
    if not isinstance(objective, str):  # None: the class's default, which fits its kind
        return
    if role == "classifier" and objective not in _PROBABILITY_OBJECTIVES:
        raise _error(
            f"{where}.params.objective: {_show(objective)} does not predict the probability of "
            f"a binary target, which {subject} scores; use binary:logistic (the default) or "
            "reg:logistic"
        )
    predicts = next((v for k, v in _NOT_A_VALUE.items() if objective.startswith(k)), None)
    if role == "regressor" and predicts:
        raise _error(
            f"{where}.params.objective: {_show(objective)} predicts {predicts}, not the target's "
            f"value, which {subject} predicts; use a regression objective such as "
            "reg:squarederror (binary:logistic for a probability)"
        )


def _estimator_kind(estimator: Any) -> str | None:
    """scikit-learn's estimator type (regressor, classifier, clusterer, ...), else the legacy
    `_estimator_type` attribute a class outside scikit-learn may set, else None."""
    try:
        from sklearn.utils import get_tags

        kind = get_tags(estimator).estimator_type
    except Exception:  # noqa: BLE001 - classes outside scikit-learn may have no tags at all
        kind = getattr(estimator, "_estimator_type", None)
    return kind if isinstance(kind, str) else None


# -- nested specs ----------------------------------------------------------------------------


def _nested_specs(params: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every `{class_path, params}` spec under params, at any depth, with its field path."""
    for name, value in params.items():
        yield from _specs_in(value, f"{where}.params.{name}")


def _specs_in(value: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if _is_spec(value):
        extra = sorted(str(k) for k in value if k not in _SPEC_KEYS)
        if extra:
            raise _error(
                f"{path}.{elide(extra[0], 60)}: unknown key (a nested spec takes class_path and params)"
            )
        inner = value.get("params")
        if inner is not None and not isinstance(inner, dict):
            raise _error(
                f"{path}.params: expected a mapping of parameter names to values (got {type(inner).__name__})"
            )
        yield path, value
        yield from _nested_specs(inner or {}, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _specs_in(item, f"{path}[{i}]")


def _is_spec(value: Any) -> bool:
    return isinstance(value, dict) and "class_path" in value


def _holds_spec(value: Any) -> bool:
    return _is_spec(value) or (isinstance(value, list) and any(_holds_spec(v) for v in value))


def _is_xgboost_model(cls: type) -> bool:
    if not _within(cls.__module__, ("xgboost",)):
        return False
    from xgboost.sklearn import XGBModel

    return issubclass(cls, XGBModel)


# -- the allowlist and messages --------------------------------------------------------------


def _allowed(allowed_modules: Sequence[str] | None) -> tuple[str, ...]:
    if allowed_modules is None:
        return DEFAULT_ALLOWED_MODULES
    allowed = tuple(allowed_modules)
    for prefix in allowed:
        if not isinstance(prefix, str) or not _MODULE_PATH.fullmatch(prefix):
            raise ConfigError(
                f"estimators.allowed_modules: {_show(prefix)} is not a module path (expected e.g. sklearn or sklearn.ensemble)"
            )
    return allowed


def _within(path: str, allowed: Sequence[str]) -> bool:
    """On module-path boundaries: `sklearn` covers sklearn.linear_model.X, not sklearnx.Y."""
    return any(path == prefix or path.startswith(prefix + ".") for prefix in allowed)


def _listing(items: Sequence[str], limit: int = 80) -> str:
    shown: list[str] = []
    for item in items:
        if len(", ".join([*shown, item])) > limit:
            return ", ".join(shown) + f", ... ({len(items) - len(shown):,} more)"
        shown.append(item)
    return ", ".join(shown) or "none"


def _show(value: Any, limit: int = 60) -> str:
    """A value as the recipe wrote it, elided; huge integers by size, not digits."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length():,} bits"
    try:
        text = repr(value)
    except ValueError:
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else elide(text, limit)


def _error(message: str) -> RecipeError:
    return RecipeError(elide(message, MAX_MESSAGE))


# -- constructor introspection -----------------------------------------------------------------


def _constructor_params(cls: type) -> tuple[set[str], dict[str, Any], bool]:
    """Named constructor params and their hints, following **kwargs up the MRO (as XGBoost does)."""
    named: set[str] = set()
    hints: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):
            return named, hints, True
        named |= {
            n
            for n, p in params.items()
            if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }
        for name, hint in _type_hints(init).items():
            hints.setdefault(name, hint)
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return named, hints, False
    return named, hints, True


def _accepts(cls: type, name: str) -> bool:
    named, _, _ = _constructor_params(cls)
    return name in named


def _type_hints(func: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - unresolvable annotations just go unchecked
        return {}


def _check_type(hint: Any, value: Any, path: str) -> None:
    from pydantic import TypeAdapter, ValidationError

    try:
        adapter = TypeAdapter(hint, config={"arbitrary_types_allowed": True})
    except Exception:  # noqa: BLE001 - annotations pydantic cannot express go unchecked
        return
    try:
        typed = adapter.validate_python(value, strict=False)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        msg = err["msg"]
        msg = msg[0].lower() + msg[1:]
        raise _error(f"{path}: {msg} (got {_show(value)})") from None
    except Exception:  # noqa: BLE001 - odd annotations (callables, protocols) go unchecked
        return
    _check_ints(typed, path)  # an int-typed param given as 1e12 becomes a 13-digit int
