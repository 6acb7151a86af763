"""XGBoost's prediction for large batches, walked 16 rows at a time with AVX-512; the C source
beside this file, `forestkernel.c`, is compiled once per machine by `ml.nativelib`.

XGBoost's CPU predictor walks one row at a time through each tree's nodes. Padding every tree
to a complete tree of its forest's depth lets 16 rows walk in one vector register: the split
features and values of a tree's first six levels are picked from registers by permutes, and
each level costs one gather of the rows' feature values. On the bench model (100 depth-6 trees,
20 features) that is about a third of XGBoost's CPU time on one thread, with the same floats.

Exactness is XGBoost's own: float32 `x < split`, the default side for NaN (in the vector walk
too, so missing values cost nothing extra), the base margin plus each tree's float32 leaf in tree
order, and XGBoost's float32 sigmoid with the C library's `expf`. `ml.fastpredict` still uses
it only after checking it equals XGBoost's output bitwise on a probe at the model's split
values. A CPU without AVX-512 (an AVX2 version of the walk measured no faster than XGBoost on
this bench), a model too deep to pad, or no C compiler: `build` returns None and XGBoost
predicts.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ml import nativelib, treewalk
from ml.xgbtrees import BoosterTrees

F32 = np.float32
SOURCE = Path(__file__).with_name("forestkernel.c")
MAX_DEPTH = 12  # a complete tree of depth 12 has 4,095 inner nodes and 4,096 leaves
MAX_BYTES = 256 << 20  # the padded forest's arrays, all trees together
_SPARE = 64  # entries past the end, for whole-level loads from small trees
# a node's feature code: its column, and the sign bit where a missing value goes left
_DEFAULT_LEFT, _COLUMN = -(2**31), 0x7FFFFFFF
# below this many rows per thread, one thread does the whole batch
_ROWS_PER_THREAD = 16_384


@dataclass(frozen=True)
class PaddedForest:
    """Every tree padded to a complete tree of `depth` levels, in flat arrays (see the C file)."""

    feature: np.ndarray  # int32 column, sign bit set where missing goes left; 2^depth - 1 a tree
    split: np.ndarray  # float32
    leaf: np.ndarray  # float32, 2^depth per tree
    trees: int
    depth: int
    base_margin: np.float32
    logistic: bool
    n_features: int


def available() -> bool:
    """The kernel compiled and loaded, and this CPU runs its vector walk (AVX-512F)."""
    lib = _library()
    return lib is not None and bool(lib.forest_vector_walk())


def build(trees: BoosterTrees) -> PaddedForest | None:
    """The padded forest, or None where the vector walk would not pay or cannot run."""
    if not available():
        return None
    depth = max((_depth(t) for t in trees.trees), default=0)
    count = len(trees.trees)
    if depth > MAX_DEPTH or count * (2**depth) * 12 > MAX_BYTES:  # 3 arrays of 4-byte cells
        return None
    inner, leaves = 2**depth - 1, 2**depth
    feature = np.zeros(count * inner + _SPARE, np.int32)
    split = np.zeros(count * inner + _SPARE, F32)
    leaf = np.zeros(count * leaves + _SPARE, F32)
    for t, tree in enumerate(trees.trees):
        _pad(
            tree,
            depth,
            feature[t * inner :],
            split[t * inner :],
            leaf[t * leaves : (t + 1) * leaves],
        )
    return PaddedForest(
        feature=feature,
        split=split,
        leaf=leaf,
        trees=count,
        depth=depth,
        base_margin=treewalk.base_margin(trees),
        logistic=trees.logistic,
        n_features=trees.n_features,
    )


def split_points(forest: PaddedForest) -> tuple[np.ndarray, np.ndarray]:
    """Every inner node's feature column and split value (padding nodes included: column 0,
    split 0), for probes placed on and beside the splits."""
    inner = forest.trees * (2**forest.depth - 1)
    return forest.feature[:inner] & _COLUMN, forest.split[:inner]


def predict(
    forest: PaddedForest, X: np.ndarray, threads: int = 1, vector: bool = True
) -> np.ndarray:
    """XGBoost's prediction (after the objective's transform) for the rows of X, float32; the
    rows split over up to `threads` threads (the C call releases the GIL). `vector=False` walks
    every row alone, as the rows past a batch's last whole 64-row block always are."""
    lib = _library()
    if lib is None:
        raise RuntimeError("the forest kernel is not loaded")
    X = np.ascontiguousarray(X, dtype=F32)
    n, width = X.shape
    if width != forest.n_features:
        raise ValueError(f"{width} features given, the model has {forest.n_features}")
    out = np.empty(n, dtype=F32)
    parts = max(1, min(threads, n // _ROWS_PER_THREAD))
    step = -(-n // parts)
    spans = [(start, min(n, start + step)) for start in range(0, n, step)] if n else []

    def run(span: tuple[int, int]) -> None:
        start, stop = span
        lib.forest_margin(
            X[start:].ctypes.data, stop - start, width, forest.trees, forest.depth,
            forest.feature.ctypes.data, forest.split.ctypes.data, forest.leaf.ctypes.data,
            forest.base_margin, out[start:].ctypes.data, int(vector),
        )  # fmt: skip

    if len(spans) > 1:
        list(_pool().map(run, spans))
    elif spans:
        run(spans[0])
    if forest.logistic:
        lib.forest_sigmoid(out.ctypes.data, n)
    return out


def _pad(
    tree: dict[str, Any],
    depth: int,
    feature: np.ndarray,
    split: np.ndarray,
    leaf: np.ndarray,
) -> None:
    """One tree into its complete layout, level by level: a node at level-order position p has
    its children at 2p+1 and 2p+2; a leaf above the last level fills every leaf below it."""
    left = np.asarray(tree["left_children"], dtype=np.int64)
    right = np.asarray(tree["right_children"], dtype=np.int64)
    cond = np.asarray(tree["split_conditions"], dtype=np.float64).astype(F32)
    # the column, and the sign bit where a missing value goes left
    code = np.asarray(tree["split_indices"], dtype=np.int64) | np.where(
        np.asarray(tree["default_left"], dtype=bool), _DEFAULT_LEFT, 0
    )
    nodes, positions = np.zeros(1, np.int64), np.zeros(1, np.int64)
    inner = 2**depth - 1
    for level in range(depth + 1):
        is_leaf = left[nodes] == -1
        if is_leaf.any():
            span = 2 ** (depth - level)
            first = (positions[is_leaf] + 1) * span - 1 - inner  # its leftmost leaf below
            cells = first[:, None] + np.arange(span)[None, :]
            leaf[cells] = cond[nodes[is_leaf]][:, None]
        nodes, positions = nodes[~is_leaf], positions[~is_leaf]
        if not len(nodes):
            break
        feature[positions] = code[nodes]
        split[positions] = cond[nodes]
        nodes = np.concatenate([left[nodes], right[nodes]])
        positions = np.concatenate([2 * positions + 1, 2 * positions + 2])


def _depth(tree: dict[str, Any]) -> int:
    left = np.asarray(tree["left_children"], dtype=np.int64)
    right = np.asarray(tree["right_children"], dtype=np.int64)
    nodes, depth = np.zeros(1, np.int64), 0
    while True:
        nodes = nodes[left[nodes] != -1]
        if not len(nodes):
            return depth
        nodes = np.concatenate([left[nodes], right[nodes]])
        depth += 1


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(thread_name_prefix="ml-forest")


# a forked child has none of the parent's pool threads: it starts a pool of its own
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.cache_clear)


@cache
def _library() -> Any:
    lib = nativelib.load(SOURCE)
    if lib is None:
        return None
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
    lib.forest_vector_walk.restype, lib.forest_vector_walk.argtypes = i32, []
    lib.forest_margin.restype = None
    lib.forest_margin.argtypes = [p, i64, i64, i32, i32, p, p, p, ctypes.c_float, p, i32]
    lib.forest_sigmoid.restype, lib.forest_sigmoid.argtypes = None, [p, i64]
    return lib
