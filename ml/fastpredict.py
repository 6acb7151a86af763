"""Lower per-call cost for XGBoost models inside a loaded estimator.

XGBoost's scikit-learn `predict` costs ~0.3 ms per call before any tree is walked (keyword
plumbing, a JSON config per call, ctypes output wrapping), and an X-learner makes three such
calls per score. For one API record that is most of the request. `accelerate` gives each
fitted XGBoost model inside a loaded estimator a `predict` (regressors) or `predict_proba`
(binary classifiers) that goes straight to `XGBoosterPredictFromDense` with the same
arguments XGBoost's own `inplace_predict` sends: same trees, same iteration range, same
`missing`, same input dtype, so the same float32 output.

On a CPU with AVX-512 and a C compiler, every batch walks the trees in `ml.forestkernel` (16
rows at a time): about a third of XGBoost's own CPU time on large batches (batch scoring's
largest cost), a few hundredths of its C call's for one row. Elsewhere, up to SMALL_ROWS rows
(an API request) walk the trees in numpy (`ml.treewalk`): no per-call setup, so one row costs
a third of the C call.

Each replacement is checked against the model's own method on a probe matrix when it is
installed and kept only if the outputs are bitwise equal (each walk also on rows placed on and
beside the model's split values, and dropped alone if it differs); anything unusual (multi-class,
custom objectives, gblinear, categorical features, an XGBoost without this C entry point)
keeps XGBoost's own method. Only loaded copies are accelerated (batch scoring and serving),
never the estimator that training pickles.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ml import forestkernel, treewalk
from ml.xgbtrees import read_trees

# Where estimators keep their fitted sub-models: EconML meta-learners and DML, plain lists.
_CONTAINER_ATTRS = (
    "propensity_models",
    "cate_controls_models",
    "cate_treated_models",
    "models",
    "models_cate",
    "overall_model",
    "propensity_model",
)
_TYPESTR = {np.dtype(np.float32): "<f4", np.dtype(np.float64): "<f8"}
# Up to this many rows, walking the trees in numpy costs clearly less than XGBoost's C call
# (bench/predict_bench.py, 150 depth-6 trees, two runs: 0.30-0.31x of its CPU for 1 row,
# 0.48-0.65x for 16, 0.92-1.01x for 32, 1.08-1.35x for 64).
SMALL_ROWS = 16


def _walks(
    booster: Any, iteration_range: tuple[int, int], missing: float, walk: bool, vector_walk: bool
) -> tuple[treewalk.Forest | None, forestkernel.PaddedForest | None]:
    """The trees for the numpy walk of small batches and for the vector walk (each None where
    it is not wanted or cannot reproduce XGBoost: then XGBoost's own path). The numpy walk is
    built only where the vector walk is not: that one serves every batch size."""
    if not np.isnan(missing) or not (walk or vector_walk):
        return None, None
    try:
        trees = read_trees(booster, iteration_range, "model")
    except Exception:  # noqa: BLE001 - anything the walks do not reproduce keeps XGBoost's
        return None, None
    forest = padded = None
    with contextlib.suppress(Exception):
        padded = forestkernel.build(trees) if vector_walk else None
    with contextlib.suppress(Exception):
        forest = treewalk.build(trees) if walk and padded is None else None
    return forest, padded


class _DensePredictor:
    """`Booster.inplace_predict(X)` for dense float arrays, minus the wrapper's fixed cost; up
    to SMALL_ROWS rows walked in numpy (`ml.treewalk`), more in `ml.forestkernel`, when the
    model and the machine allow it."""

    def __init__(
        self,
        booster: Any,
        iteration_range: tuple[int, int],
        missing: float,
        walk: bool = True,
        vector_walk: bool = True,
    ) -> None:
        from xgboost import core

        begin, end = iteration_range
        self._init_args = (booster, (begin, end), missing)  # also keeps the handle alive
        self._walk = walk  # wanted, and not found to disagree
        self.forest, self.padded = _walks(booster, (begin, end), missing, walk, vector_walk)
        self.threads = _thread_count(_nthread(booster))
        self._fn = core._LIB.XGBoosterPredictFromDense
        self._check = core._check_call
        self._ulong = core.c_bst_ulong
        self._handle = booster.handle
        self._args = json.dumps(
            {
                "type": 0,
                "training": False,
                "iteration_begin": int(iteration_range[0]),
                "iteration_end": int(iteration_range[1]),
                "missing": float(missing),
                "strict_shape": False,
                "cache_id": 0,
            }
        ).encode()

    def __reduce__(self) -> tuple[Any, ...]:
        # ctypes state is rebuilt, not pickled; a walk found to disagree stays off
        return (_DensePredictor, (*self._init_args, self._walk, self.padded is not None))

    def drop_vector_walk(self) -> None:
        """The vector walk disagreed with XGBoost: small batches go to the numpy walk, if
        wanted (built now: it was not while the vector walk served them)."""
        self.padded = None
        if self._walk:
            self.forest, _ = _walks(*self._init_args, walk=True, vector_walk=False)

    def drop_walk(self) -> None:
        """The numpy walk disagreed with XGBoost: XGBoost's C call serves every batch."""
        self.forest, self._walk = None, False

    def __call__(self, X: Any) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.dtype not in _TYPESTR:
            raise TypeError("dense 2-d float32/float64 input expected")
        if self.padded is not None:  # every batch size: for one row too, a fraction of either
            return forestkernel.predict(self.padded, X, self.threads)
        if self.forest is not None and X.shape[0] <= SMALL_ROWS:
            return treewalk.predict(self.forest, X)
        if not X.flags.aligned:
            X = np.require(X, requirements="A")
        # Strides as numpy reports them (None when C-contiguous), as XGBoost's own wrapper
        # sends them: a column-major matrix from the preprocessor is read without a copy.
        strides = None if X.flags.c_contiguous else list(X.strides)
        interface = json.dumps(
            {
                "data": [X.ctypes.data, True],
                "shape": list(X.shape),
                "strides": strides,
                "typestr": _TYPESTR[X.dtype],
                "version": 3,
            }
        )
        preds = ctypes.POINTER(ctypes.c_float)()
        shape = ctypes.POINTER(self._ulong)()
        dims = self._ulong()
        self._check(
            self._fn(
                self._handle,
                interface.encode(),
                self._args,
                None,
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(preds),
            )
        )
        out_shape = tuple(int(shape[i]) for i in range(dims.value))
        size = int(np.prod(out_shape)) if out_shape else 0
        # The buffer belongs to the booster and is reused by its next call: copy it out.
        return np.ctypeslib.as_array(preds, shape=(size,)).reshape(out_shape).copy()


def accelerate(estimator: Any, n_features: int, *, walk: bool = True) -> int:
    """Install the fast path on every XGBoost model found in `estimator` (itself included);
    returns how many models now use it."""
    return sum(_accelerate_one(m, n_features, walk) for m in _xgb_models(estimator))


@contextlib.contextmanager
def threads_at_most(estimator: Any, limit: int) -> Iterator[None]:
    """Until exit, every XGBoost model in `estimator` predicts on at most `limit` threads (on
    its own count if that is lower; XGBoost's 0 or less means every core)."""
    saved: list[tuple[Any, str, _DensePredictor | None, int]] = []
    try:
        for model in _xgb_models(estimator):
            if not model.__sklearn_is_fitted__():
                continue  # an unfitted template (EconML keeps them beside the fitted copies)
            booster = model.get_booster()
            own = _nthread(booster)
            threads = min(_thread_count(own), max(1, limit))
            fast = _installed(model)
            saved.append((booster, own, fast, fast.threads if fast is not None else 0))
            booster.set_param({"nthread": threads})
            if fast is not None:
                fast.threads = threads
        yield
    finally:
        for booster, own, fast, before in saved:
            booster.set_param({"nthread": own})
            if fast is not None:
                fast.threads = before


def _nthread(booster: Any) -> str:
    """The booster's `nthread` setting, as its config states it."""
    return str(json.loads(booster.save_config())["learner"]["generic_param"]["nthread"])


def _thread_count(nthread: str) -> int:
    """The threads an `nthread` setting predicts on (XGBoost's 0 or less: every core)."""
    return int(nthread) if int(nthread) > 0 else cpu_count()


def _installed(model: Any) -> _DensePredictor | None:
    """The fast path `accelerate` gave this model, if any."""
    method = vars(model).get("predict_proba", vars(model).get("predict"))
    if isinstance(method, _BinaryProba):
        return method.fast
    return method if isinstance(method, _DensePredictor) else None


def streaming_threads() -> int:
    """What a model predicts on while batch scoring streams, unless configured: the cores less
    the one the warehouse reads and writes on (at least one)."""
    return max(1, cpu_count() - 1)


def cpu_count() -> int:
    """The cores this process may run on (its affinity, where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _xgb_models(estimator: Any) -> list[Any]:
    try:
        from xgboost import XGBModel
    except ImportError:
        return []
    found: list[Any] = []
    candidates = [estimator]
    for attr in _CONTAINER_ATTRS:
        value = getattr(estimator, attr, None)
        if isinstance(value, (list, tuple)):
            candidates.extend(value)
        elif value is not None:
            candidates.append(value)
    for c in candidates:
        if isinstance(c, XGBModel) and all(c is not f for f in found):
            found.append(c)
    return found


def _accelerate_one(model: Any, n_features: int, walk: bool) -> int:
    from xgboost import XGBClassifier

    try:
        if getattr(model, "booster", None) == "gblinear" or model.feature_types:
            return 0
        if model.get_booster().num_features() != n_features:
            return 0
        fast = _DensePredictor(
            model.get_booster(), model._get_iteration_range(None), model.missing, walk
        )
    except Exception:  # noqa: BLE001 - anything unexpected keeps XGBoost's own path
        return 0
    method: Callable[..., Any]
    if isinstance(model, XGBClassifier):
        if model.objective != "binary:logistic" or getattr(model, "n_classes_", 2) != 2:
            return 0
        name, method = "predict_proba", _BinaryProba(fast)
    else:
        if not str(model.objective).startswith("reg:"):
            return 0
        name, method = "predict", fast
    if not _agrees(getattr(model, name), method, n_features, fast):
        return 0
    setattr(model, name, method)  # an instance attribute: the class and the pickle are untouched
    return 1


class _BinaryProba:
    """`XGBClassifier.predict_proba` for binary:logistic over the fast path."""

    def __init__(self, fast: _DensePredictor) -> None:
        self.fast = fast

    def __call__(self, X: Any) -> np.ndarray:
        p = self.fast(X)
        return np.vstack((1.0 - p, p)).transpose()  # as XGBClassifier.predict_proba does


def _agrees(original: Any, fast: Any, n_features: int, dense: _DensePredictor) -> bool:
    """The replacement gives XGBoost's own output bitwise, through the C call (large batches)
    and through the walk (small ones: on a probe at the split values too); a walk that does
    not agree is dropped, and the C call is checked alone."""
    rng = np.random.default_rng(0)
    probe = rng.normal(0.0, 3.0, size=(64, n_features))
    probe[::7, ::3] = np.nan
    f32 = probe.astype(np.float32)
    batches: list[np.ndarray] = [probe, f32, np.asfortranarray(f32), f32[::2], probe[:1]]
    if dense.padded is not None and not _same(original, fast, _vector_probe(dense.padded)):
        dense.drop_vector_walk()  # the vector walk alone is dropped
    if dense.forest is not None:
        at_splits = treewalk.probe(dense.forest, 4 * SMALL_ROWS)
        small = [at_splits[i : i + SMALL_ROWS] for i in range(0, len(at_splits), SMALL_ROWS)]
        small += [at_splits[i : i + 3] for i in range(0, 24, 3)]
        small += [at_splits[i : i + 1].astype(np.float64) for i in range(8)]
        if not _same(original, fast, small):
            dense.drop_walk()  # the walk alone is dropped
    return _same(original, fast, batches)


def _vector_probe(padded: forestkernel.PaddedForest) -> list[np.ndarray]:
    """Batches the vector walk takes: whole 64-row blocks and a tail, with values on and beside
    the splits, some infinite, some missing (at nodes of either default side), and small
    batches (serving's)."""
    features, splits = forestkernel.split_points(padded)
    clean = treewalk.probe_at(features, splits, padded.n_features, 517, seed=1, missing=0.0)
    infinite = clean[:192].copy()
    rng = np.random.default_rng(2)
    infinite[rng.random(infinite.shape) < 0.05] = np.inf
    infinite[rng.random(infinite.shape) < 0.05] = -np.inf
    holes = treewalk.probe_at(features, splits, padded.n_features, 256, seed=3, missing=0.05)
    small = [clean[:1], clean[1:4].astype(np.float64), holes[:1], holes[1:17], infinite[:5]]
    return [
        clean,
        infinite,
        holes,
        clean[:130].astype(np.float64),
        np.asfortranarray(clean),
        *small,
    ]


def _same(original: Any, fast: Any, batches: list[np.ndarray]) -> bool:
    try:
        for X in batches:
            a, b = np.asarray(original(X)), np.asarray(fast(X))
            if a.shape != b.shape or a.dtype != b.dtype or not np.array_equal(a, b, equal_nan=True):
                return False
    except Exception:  # noqa: BLE001
        return False
    return True
