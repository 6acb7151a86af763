"""The AVX-512 forest walk gives XGBoost's own floats, bit for bit, for any tree shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from xgboost import XGBClassifier, XGBRegressor

from ml import fastpredict, forestkernel
from ml.xgbtrees import read_trees

N_FEATURES = 9


def _avx512() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and " avx512f" in cpuinfo.read_text()


# The kernel's vector walk needs AVX-512F; elsewhere XGBoost predicts (tested below as well).
pytestmark = pytest.mark.skipif(not _avx512(), reason="this CPU has no AVX-512F")


def _data(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    X[::13, 4] = np.nan
    y = X[:, 0] + np.sin(3 * X[:, 1]) * (X[:, 2] > 0) + rng.normal(0, 0.3, size=n)
    return X, y


def _rows(n: int, seed: int, missing: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1.5, size=(n, N_FEATURES)).astype(np.float32)
    X[rng.random(X.shape) < missing] = np.nan
    X[rng.random(X.shape) < 0.01] = np.inf
    X[rng.random(X.shape) < 0.01] = -np.inf
    return X


def _padded(booster: object) -> forestkernel.PaddedForest:
    padded = forestkernel.build(read_trees(booster, (0, 0), "model"))
    assert padded is not None
    return padded


def _own(booster: object, X: np.ndarray) -> np.ndarray:
    return booster.inplace_predict(X)  # type: ignore[attr-defined,no-any-return]


def test_the_kernel_builds_and_runs_on_this_machine() -> None:
    assert forestkernel.available()


# depths 1-4 pick split values from one register, 5 from two, 6+ gather; leaves likewise
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 6, 7, 9])
@pytest.mark.parametrize("classifier", [False, True])
def test_margins_and_probabilities_equal_xgboost_bitwise(depth: int, classifier: bool) -> None:
    X, y = _data()
    params = {"n_estimators": 25, "max_depth": depth, "learning_rate": 0.3}
    if classifier:
        model = XGBClassifier(**params).fit(X, (y > 0.4).astype(int))
    else:
        model = XGBRegressor(**params).fit(X, y)
    booster = model.get_booster()
    padded = _padded(booster)
    assert padded.depth == depth
    for rows, missing in [(64 * 40, 0.0), (1000, 0.0), (777, 0.03), (63, 0.0), (5, 0.0)]:
        Q = _rows(rows, seed=rows + depth, missing=missing)
        own = _own(booster, Q)
        assert np.array_equal(forestkernel.predict(padded, Q), own)
        assert np.array_equal(forestkernel.predict(padded, Q, vector=False), own)  # row by row


def test_missing_values_go_to_each_node_s_default_side() -> None:
    """In the vector walk too: a NaN at a node whose default is left, and at one whose default
    is right (its feature code's sign bit), in every block."""
    X, y = _data(seed=5)
    X[np.random.default_rng(5).random(X.shape) < 0.2] = np.nan
    model = XGBRegressor(n_estimators=40, max_depth=6).fit(X, y)
    booster = model.get_booster()
    padded = _padded(booster)
    trees = read_trees(booster, (0, 0), "model").trees
    defaults = {
        bool(side)
        for t in trees
        for side, left in zip(t["default_left"], t["left_children"], strict=True)
        if left != -1
    }
    assert defaults == {True, False}
    for missing in (0.3, 0.9, 1.0):
        Q = _rows(64 * 30 + 5, seed=int(missing * 10), missing=missing)
        assert np.array_equal(forestkernel.predict(padded, Q), _own(booster, Q))


def test_unbalanced_trees_of_varying_depth() -> None:
    """Leaves above the last level (lossguide grows trees leaf by leaf) fill what is below."""
    X, y = _data(seed=1)
    model = XGBRegressor(
        n_estimators=40, grow_policy="lossguide", max_leaves=11, max_depth=0, tree_method="hist"
    ).fit(X, y)
    booster = model.get_booster()
    trees = read_trees(booster, (0, 0), "model")
    padded = forestkernel.build(trees)
    assert padded is not None
    depths = {forestkernel._depth(t) for t in trees.trees}
    assert len(depths) > 1 and padded.depth == max(depths)
    Q = _rows(64 * 50 + 17, seed=4, missing=0.0)
    assert np.array_equal(forestkernel.predict(padded, Q), _own(booster, Q))


def test_single_leaf_trees_and_a_base_score() -> None:
    X, y = _data(seed=2)
    model = XGBRegressor(n_estimators=5, max_depth=3, gamma=1e9, base_score=0.25).fit(X, y)
    booster = model.get_booster()
    padded = _padded(booster)
    assert padded.depth == 0
    Q = _rows(200, seed=5, missing=0.0)
    assert np.array_equal(forestkernel.predict(padded, Q), _own(booster, Q))


def test_threads_split_the_rows_and_agree() -> None:
    X, y = _data(seed=3)
    model = XGBClassifier(n_estimators=30, max_depth=6).fit(X, (y > 0).astype(int))
    booster = model.get_booster()
    padded = _padded(booster)
    Q = _rows(100_003, seed=6, missing=0.001)
    one = forestkernel.predict(padded, Q, threads=1)
    assert np.array_equal(forestkernel.predict(padded, Q, threads=3), one)
    assert np.array_equal(one, _own(booster, Q))


def test_inputs_are_read_as_xgboost_reads_them() -> None:
    """float64 rounds to float32 as XGBoost rounds it; strided and column-major views."""
    X, y = _data(seed=4)
    model = XGBRegressor(n_estimators=20, max_depth=6).fit(X, y)
    booster = model.get_booster()
    padded = _padded(booster)
    Q = np.random.default_rng(7).normal(0, 1.5, size=(2000, N_FEATURES))
    for view in (Q, np.asfortranarray(Q), Q[::3], np.asfortranarray(Q.astype(np.float32))):
        assert np.array_equal(forestkernel.predict(padded, view), _own(booster, view))
    with pytest.raises(ValueError, match="8 features given, the model has 9"):
        forestkernel.predict(padded, Q[:, :8])


def test_too_deep_a_forest_is_left_to_xgboost(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _data()
    model = XGBRegressor(n_estimators=5, max_depth=5).fit(X, y)
    trees = read_trees(model.get_booster(), (0, 0), "model")
    monkeypatch.setattr(forestkernel, "MAX_DEPTH", 4)
    assert forestkernel.build(trees) is None


def test_accelerate_uses_the_kernel_for_every_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _data()
    model = XGBClassifier(n_estimators=30, max_depth=6, n_jobs=2).fit(X, (y > 0).astype(int))
    assert fastpredict.accelerate(model, N_FEATURES) == 1
    fast = fastpredict._installed(model)
    assert fast is not None and fast.padded is not None and fast.threads == 2
    assert fast.forest is None  # the numpy walk, checked and then let go: never used
    calls: list[int] = []
    real = forestkernel.predict

    def counting(padded: forestkernel.PaddedForest, Q: np.ndarray, threads: int = 1) -> np.ndarray:
        calls.append(threads)
        return real(padded, Q, threads)

    monkeypatch.setattr(forestkernel, "predict", counting)
    for rows in (1, 3, 16, 17, 5000):
        Q = _rows(rows, seed=8, missing=0.01)
        assert np.array_equal(model.predict_proba(Q), XGBClassifier.predict_proba(model, Q))
    with fastpredict.threads_at_most(model, 1):
        assert fast.threads == 1
        model.predict_proba(Q)
    assert fast.threads == 2
    assert calls == [2, 2, 2, 2, 2, 1]


def test_a_pickled_copy_keeps_the_kernel() -> None:
    import pickle

    X, y = _data()
    model = XGBRegressor(n_estimators=10, max_depth=5).fit(X, y)
    assert fastpredict.accelerate(model, N_FEATURES) == 1
    copy = pickle.loads(pickle.dumps(model))
    fast = fastpredict._installed(copy)
    assert fast is not None and fast.padded is not None and fast.forest is None
    Q = _rows(300, seed=10, missing=0.02)
    assert np.array_equal(copy.predict(Q), XGBRegressor.predict(model, Q))


def test_a_copy_unpickled_without_the_kernel_walks_in_numpy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The numpy walk is not built while the vector walk serves every batch, but a copy loaded
    where the kernel cannot run (no compiler, another CPU) still gets it."""
    import pickle

    X, y = _data()
    model = XGBRegressor(n_estimators=10, max_depth=5).fit(X, y)
    assert fastpredict.accelerate(model, N_FEATURES) == 1
    blob = pickle.dumps(model)
    monkeypatch.setattr(forestkernel, "available", lambda: False)
    fast = fastpredict._installed(pickle.loads(blob))
    assert fast is not None and fast.padded is None and fast.forest is not None


def test_a_kernel_that_disagrees_is_dropped_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked bitwise when installed: a wrong vector walk leaves XGBoost's C call in place."""
    real = forestkernel.predict

    def off_by_one_ulp(padded: forestkernel.PaddedForest, Q: np.ndarray, threads: int = 1):  # type: ignore[no-untyped-def]
        out = real(padded, Q, threads)
        return np.nextafter(out, np.float32(np.inf)) if len(Q) > 400 else out

    monkeypatch.setattr(forestkernel, "predict", off_by_one_ulp)
    X, y = _data()
    model = XGBRegressor(n_estimators=10, max_depth=4).fit(X, y)
    assert fastpredict.accelerate(model, N_FEATURES) == 1
    fast = fastpredict._installed(model)
    assert fast is not None and fast.padded is None and fast.forest is not None
    Q = _rows(1000, seed=9, missing=0.0)
    assert np.array_equal(model.predict(Q), XGBRegressor.predict(model, Q))


def test_turned_off_xgboost_predicts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forestkernel, "available", lambda: False)
    X, y = _data()
    model = XGBRegressor(n_estimators=10, max_depth=4).fit(X, y)
    assert fastpredict.accelerate(model, N_FEATURES) == 1
    fast = fastpredict._installed(model)
    assert fast is not None and fast.padded is None


def test_a_forked_child_predicts_on_threads_of_its_own() -> None:
    """The parent's pool threads do not exist in a forked child (a pre-forking server)."""
    import os
    import select
    import signal

    X, y = _data(seed=6)
    model = XGBRegressor(n_estimators=20, max_depth=6).fit(X, y)
    booster = model.get_booster()
    padded = _padded(booster)
    Q = _rows(70_000, seed=11, missing=0.01)
    expected = forestkernel.predict(padded, Q, threads=2)  # the parent's pool now has threads
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if two threads give the same floats
        ok = np.array_equal(forestkernel.predict(padded, Q, threads=2), expected)
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 60)
    if not ready:  # the child waits for threads that do not exist
        os.kill(pid, signal.SIGKILL)
    answer = os.read(read, 1) if ready else b""
    _, status = os.waitpid(pid, 0)
    assert answer == b"1" and status == 0
