"""XGBoost's prediction for a few rows, computed in numpy, bit for bit as XGBoost computes it.

XGBoost's C++ predictor costs about 0.1 ms per call before any tree is walked and about a
microsecond per tree for a single row (it sets up per-block feature vectors and thread-local
buffers); a request scoring one customer with an X-learner pays that three times. Walking all
trees of a model at once, one numpy step per tree level, costs a few microseconds per level
instead, so for a handful of rows it is several times faster.

Exactness. The walk does what XGBoost's CPU predictor does: features as float32, a row goes left
when `x < split` (both float32) and to the node's default side when x is missing (NaN); the
prediction starts at the base margin and adds each tree's float32 leaf in tree order, in float32
(`np.add.accumulate` is sequential, not pairwise); logistic objectives then apply XGBoost's own
float32 sigmoid, `1 / (expf(min(-x, 88.7)) + 1 + 1e-16)`, with the C library's `expf` (the one
XGBoost calls); the base margin of a logistic model is XGBoost's `-logf(1 / p - 1)` of the
clamped base score, also in float32. `ml.fastpredict` uses it only after checking it equals
XGBoost's own output bitwise on a probe that puts values exactly on, just below and just above
the model's split values.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from ml.errors import UnsupportedModelError
from ml.xgbtrees import BoosterTrees

F32 = np.float32
_RT_EPS = F32(1e-6)  # XGBoost's kRtEps: the logistic base score is clamped to [eps, 1 - eps]
_SIGMOID_CLAMP = F32(88.7)
_SIGMOID_EPS = F32(1e-16)


@dataclass(frozen=True)
class Forest:
    """Every node of every tree in flat arrays. A leaf tests an extra, always-missing feature
    (index n_features) and goes left, to itself, so walking `depth` levels from the roots
    lands every row on a leaf in every tree."""

    feature: np.ndarray  # intp, per node (n_features at leaves)
    split: np.ndarray  # float32 (NaN at leaves)
    default_left: np.ndarray  # bool
    left: np.ndarray  # intp, global node index; the right child is the next node
    value: np.ndarray  # float32 leaf value
    roots: np.ndarray  # intp, one per tree, in XGBoost's order
    depth: int
    base_margin: np.float32
    logistic: bool
    n_features: int


def build(trees: BoosterTrees) -> Forest:
    feature, split, default_left, left, value, roots = [], [], [], [], [], []
    depth, offset = 0, 0
    for tree in trees.trees:
        lc = np.asarray(tree["left_children"], dtype=np.intp)
        rc = np.asarray(tree["right_children"], dtype=np.intp)
        cond = np.asarray(tree["split_conditions"], dtype=np.float64).astype(F32)
        n = len(lc)
        own = np.arange(n, dtype=np.intp)
        leaf = lc == -1
        feature.append(
            np.where(leaf, trees.n_features, np.asarray(tree["split_indices"], dtype=np.intp))
        )
        split.append(np.where(leaf, F32(np.nan), cond))
        default_left.append(np.asarray(tree["default_left"], dtype=bool) | leaf)
        if np.any(rc[~leaf] != lc[~leaf] + 1):
            raise UnsupportedModelError("a tree whose right children do not follow their left")
        # a leaf is its own left child, and tests the always-missing column with default left
        left.append(np.where(leaf, own, lc) + offset)
        value.append(np.where(leaf, cond, F32(0)))
        roots.append(offset)
        depth = max(depth, _depth(lc, rc))
        offset += n
    return Forest(
        feature=np.concatenate(feature) if feature else np.zeros(0, np.intp),
        split=np.concatenate(split).astype(F32) if split else np.zeros(0, F32),
        default_left=np.concatenate(default_left) if default_left else np.zeros(0, bool),
        left=np.concatenate(left) if left else np.zeros(0, np.intp),
        value=np.concatenate(value).astype(F32) if value else np.zeros(0, F32),
        roots=np.asarray(roots, dtype=np.intp),
        depth=depth,
        base_margin=base_margin(trees),
        logistic=trees.logistic,
        n_features=trees.n_features,
    )


def predict(forest: Forest, X: np.ndarray) -> np.ndarray:
    """XGBoost's prediction (after the objective's transform) for the rows of X, float32."""
    n, width = X.shape
    if width != forest.n_features:
        raise ValueError(f"{width} features given, the model has {forest.n_features}")
    x = np.empty((n, width + 1), dtype=F32)
    x[:, :width] = X
    x[:, width] = np.nan  # what leaves test: missing, and a leaf's default is itself
    width += 1
    flat = x.ravel()
    # node ids per (row, tree); a row's features start at row * width in `flat`
    node = np.repeat(forest.roots[None, :], n, axis=0)
    start = (np.arange(n, dtype=np.intp) * width)[:, None]
    feature, split, default_left, left = (
        forest.feature,
        forest.split,
        forest.default_left,
        forest.left,
    )
    for _ in range(forest.depth):
        v = flat[start + feature[node]]
        go_right = ~((v < split[node]) | (np.isnan(v) & default_left[node]))
        node = left[node] + go_right  # XGBoost allocates a right child just after its left
    leaves = forest.value[node]
    margin = np.empty((n, leaves.shape[1] + 1), dtype=F32)
    margin[:, 0] = forest.base_margin
    margin[:, 1:] = leaves
    out = np.add.accumulate(margin, axis=1, dtype=F32)[:, -1]
    return _sigmoid(out) if forest.logistic else out


def probe(forest: Forest, rows: int, seed: int = 0) -> np.ndarray:
    """Rows whose values sit exactly on, just below and just above the forest's split values
    (and some missing): where a walk that compared differently from XGBoost would show."""
    inner = forest.feature < forest.n_features
    return probe_at(forest.feature[inner], forest.split[inner], forest.n_features, rows, seed)


def probe_at(
    features: np.ndarray,
    splits: np.ndarray,
    n_features: int,
    rows: int,
    seed: int = 0,
    missing: float = 0.1,
) -> np.ndarray:
    """`probe` for any split list: feature indices and their float32 split values."""
    rng = np.random.default_rng(seed)
    out = rng.normal(0.0, 3.0, size=(rows, n_features)).astype(F32)
    if len(splits):
        picks = rng.integers(0, len(splits), size=(rows, n_features))
        side = rng.integers(-1, 2, size=(rows, n_features))
        values = splits[picks]
        values = np.where(side < 0, np.nextafter(values, F32(-np.inf)), values)
        values = np.where(side > 0, np.nextafter(values, F32(np.inf)), values)
        out[np.arange(rows)[:, None], features[picks]] = values
    out[rng.random(out.shape) < missing] = np.nan
    return out


def _sigmoid(margin: np.ndarray) -> np.ndarray:
    """XGBoost's float32 `common::Sigmoid`."""
    expf = _libm().expf
    x = np.minimum(-margin, _SIGMOID_CLAMP)
    e = np.fromiter((expf(float(v)) for v in x), dtype=F32, count=len(x))
    denom = (e + F32(1.0)) + _SIGMOID_EPS
    return (F32(1.0) / denom).astype(F32)


def base_margin(trees: BoosterTrees) -> np.float32:
    """XGBoost's float32 starting margin: the base score, through its logit for logistic
    objectives."""
    base = F32(trees.base_score)
    if not trees.logistic:
        return base
    p = min(max(base, _RT_EPS), F32(1.0) - _RT_EPS)  # XGBoost's ProbToMargin clamp
    return F32(-F32(_libm().logf(float(F32(1.0) / p - F32(1.0)))))


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    deepest, level = 0, [0]
    while level:
        nxt = [c for i in level for c in (left[i], right[i]) if left[i] != -1]
        if nxt:
            deepest += 1
        level = nxt
    return deepest


@cache
def _libm() -> Any:
    """The C library's float functions, the ones XGBoost's sigmoid and logit call."""
    lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    for name in ("expf", "logf"):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return lib
