"""Estimators from class paths: import, check params against the signature, build.

Any class with a scikit-learn style constructor works. A mapping with a `class_path` key inside
params is built too, so nuisance models of EconML estimators are declared in the recipe.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from typing import Any, Literal

from ml.errors import RecipeError

Task = Literal["uplift", "classification", "regression"]


def import_class(class_path: str, where: str) -> type:
    module_name, _, attr = class_path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RecipeError(f"{where}: cannot import '{class_path}' ({exc})") from None
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise RecipeError(f"{where}: '{class_path}' is not a class in module {module_name}")
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


def check_params(cls: type, params: dict[str, Any], where: str) -> None:
    """Every param must be a constructor argument, of the annotated type where one is declared."""
    named, hints, accepts_any = _constructor_params(cls)
    for name, value in params.items():
        path = f"{where}.params.{name}"
        if name not in named and not accepts_any:
            raise RecipeError(
                f"{path}: {cls.__name__} does not accept parameter '{name}' (accepted: {', '.join(sorted(named))})"
            )
        if isinstance(value, dict) and "class_path" in value:
            nested = import_class(str(value["class_path"]), f"{path}.class_path")
            check_params(nested, dict(value.get("params") or {}), path)
            continue
        hint = hints.get(name)
        if hint is not None:
            _check_type(hint, value, path)


def build(
    class_path: str, params: dict[str, Any], seed: int | None = None, where: str = "model"
) -> Any:
    """Instantiate the estimator and nested specs; seed every `random_state` left unset."""
    cls = import_class(class_path, f"{where}.class_path")
    kwargs = {
        name: _build_value(value, seed, f"{where}.params.{name}") for name, value in params.items()
    }
    if seed is not None and "random_state" not in kwargs and _accepts(cls, "random_state"):
        kwargs["random_state"] = seed
    try:
        return cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - constructor errors are the recipe's
        raise RecipeError(f"{where}: {cls.__name__}({', '.join(kwargs)}) failed: {exc}") from None


def _build_value(value: Any, seed: int | None, where: str) -> Any:
    if isinstance(value, dict) and "class_path" in value:
        return build(str(value["class_path"]), dict(value.get("params") or {}), seed, where)
    if isinstance(value, list):
        return [_build_value(v, seed, where) for v in value]
    return value


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
        adapter.validate_python(value, strict=False)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        msg = err["msg"]
        msg = msg[0].lower() + msg[1:]
        raise RecipeError(f"{path}: {msg} (got {value!r})") from None
    except Exception:  # noqa: BLE001 - odd annotations (callables, protocols) go unchecked
        return
