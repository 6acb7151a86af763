"""The numpy tree walk gives XGBoost's own floats, bit for bit, and the fast predict path uses
it for small batches only when it does."""

from __future__ import annotations

import numpy as np
import pytest
from xgboost import XGBClassifier, XGBRegressor

from ml import fastpredict, forestkernel, treewalk
from ml.errors import UnsupportedModelError
from ml.xgbtrees import read_trees


@pytest.fixture(autouse=True)
def _no_vector_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The numpy walk serves small batches where the AVX-512 walk does not run (it serves every
    batch where it does: tests/unit/test_forestkernel.py)."""
    monkeypatch.setattr(forestkernel, "available", lambda: False)


N_FEATURES = 8


def _data(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * rng.normal(size=n) > 0.3).astype(int)
    return X, y


def _forest(model: XGBRegressor | XGBClassifier) -> treewalk.Forest:
    booster = model.get_booster()
    return treewalk.build(read_trees(booster, model._get_iteration_range(None), "model"))


def _walked(forest: treewalk.Forest, Q: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate(
        [treewalk.predict(forest, Q[i : i + size]) for i in range(0, len(Q), size)]
    )


MODELS = [
    pytest.param(lambda: XGBRegressor(n_estimators=60, max_depth=6), id="regressor"),
    pytest.param(lambda: XGBClassifier(n_estimators=60, max_depth=5), id="binary-logistic"),
    pytest.param(
        lambda: XGBClassifier(n_estimators=40, max_depth=4, base_score=0.9999999),
        id="logistic-base-score-clamped",
    ),
    pytest.param(
        lambda: XGBRegressor(n_estimators=30, objective="reg:logistic", base_score=0.2),
        id="reg-logistic",
    ),
    pytest.param(
        lambda: XGBRegressor(n_estimators=50, max_depth=8, learning_rate=0.9),
        id="deep-large-leaves",
    ),
    pytest.param(lambda: XGBRegressor(n_estimators=5, gamma=1e9), id="single-leaf-trees"),
]


@pytest.mark.parametrize("make", MODELS)
def test_walk_equals_xgboost_bitwise_on_splits_and_missing(make) -> None:
    X, y = _data()
    model = make().fit(X, y)
    forest = _forest(model)
    own = model.get_booster().inplace_predict
    at_splits = treewalk.probe(forest, 600, seed=3)
    for Q in (at_splits, X[:600], at_splits.astype(np.float64)):
        expected = own(Q)
        for size in (1, 3, 32):
            got = _walked(forest, Q, size)
            assert got.dtype == np.float32
            assert np.array_equal(got, expected), f"batch size {size}"


def test_probe_puts_values_on_and_beside_the_splits() -> None:
    X, y = _data()
    forest = _forest(XGBRegressor(n_estimators=20, max_depth=4).fit(X, y))
    probe = treewalk.probe(forest, 200)
    splits = set(forest.split[forest.feature < N_FEATURES].tolist())
    on = sum(v in splits for v in probe.ravel().tolist())
    below = sum(float(np.nextafter(v, np.float32(np.inf))) in splits for v in probe.ravel())
    assert on > 100 and below > 100
    assert np.isnan(probe).any()


def test_best_iteration_range_is_walked() -> None:
    X, y = _data()
    model = XGBRegressor(n_estimators=300, max_depth=3, early_stopping_rounds=3)
    model.fit(X[:2000], y[:2000], eval_set=[(X[2000:], y[2000:])], verbose=False)
    assert model.best_iteration < 299
    forest = _forest(model)
    assert len(forest.roots) == model.best_iteration + 1
    Q = treewalk.probe(forest, 100)
    assert np.array_equal(_walked(forest, Q, 4), model.predict(Q))


def test_small_batches_are_walked_and_large_ones_go_to_xgboost(monkeypatch) -> None:
    X, y = _data()
    model = XGBClassifier(n_estimators=30, max_depth=4).fit(X, y)
    assert fastpredict.accelerate(model, N_FEATURES) == 1
    dense = model.predict_proba.fast
    assert dense.forest is not None
    walks: list[int] = []
    real = treewalk.predict
    monkeypatch.setattr(treewalk, "predict", lambda f, Q: walks.append(len(Q)) or real(f, Q))
    for rows in (1, fastpredict.SMALL_ROWS, fastpredict.SMALL_ROWS + 1, 500):
        Q = X[:rows]
        assert np.array_equal(model.predict_proba(Q), XGBClassifier.predict_proba(model, Q))
    assert walks == [1, fastpredict.SMALL_ROWS]


def test_a_walk_that_disagrees_is_dropped_and_xgboost_answers(monkeypatch) -> None:
    X, y = _data()
    model = XGBRegressor(n_estimators=30, max_depth=4).fit(X, y)
    real_build = treewalk.build

    def off_by_one_ulp(trees):
        forest = real_build(trees)
        forest.value[forest.value != 0] = np.nextafter(
            forest.value[forest.value != 0], np.float32(np.inf)
        )
        return forest

    monkeypatch.setattr(treewalk, "build", off_by_one_ulp)
    assert fastpredict.accelerate(model, N_FEATURES) == 1
    assert model.predict.forest is None
    assert np.array_equal(model.predict(X[:1]), XGBRegressor.predict(model, X[:1]))


def test_what_the_walk_does_not_reproduce_keeps_xgboost() -> None:
    X, y = _data()
    not_nan = XGBRegressor(n_estimators=5, missing=-999.0).fit(np.nan_to_num(X, nan=-999.0), y)
    assert fastpredict.accelerate(not_nan, N_FEATURES) == 1
    assert not_nan.predict.forest is None
    poisson = XGBRegressor(n_estimators=5, objective="count:poisson").fit(X, y)
    with pytest.raises(UnsupportedModelError, match="objective 'count:poisson'"):
        read_trees(poisson.get_booster(), (0, 0), "model")
    with pytest.raises(ValueError, match="features"):
        treewalk.predict(_forest(XGBRegressor(n_estimators=2).fit(X, y)), X[:1, :3])


def test_a_pickled_copy_keeps_the_walk_on_or_off(monkeypatch) -> None:
    import pickle

    X, y = _data()
    on = XGBRegressor(n_estimators=10).fit(X, y)
    fastpredict.accelerate(on, N_FEATURES)
    assert pickle.loads(pickle.dumps(on)).predict.forest is not None
    off = XGBRegressor(n_estimators=10).fit(X, y)
    fastpredict.accelerate(off, N_FEATURES)
    off.predict.drop_walk()  # as when the check found it disagreeing
    copy = pickle.loads(pickle.dumps(off))
    assert copy.predict.forest is None
    assert np.array_equal(copy.predict(X[:1]), XGBRegressor.predict(off, X[:1]))


def test_batch_loading_skips_the_walk_and_small_batches_still_match(monkeypatch) -> None:
    """Batch scoring (`accelerate(..., walk=False)`) neither builds nor checks the walk; a final
    batch of a few rows goes through XGBoost's C call and gives its floats."""
    X, y = _data()
    model = XGBClassifier(n_estimators=30, max_depth=4).fit(X, y)
    own = model.predict_proba(X[:5])
    monkeypatch.setattr(treewalk, "build", lambda *a: pytest.fail("the walk was built"))
    assert fastpredict.accelerate(model, N_FEATURES, walk=False) == 1
    assert model.predict_proba.fast.forest is None
    assert np.array_equal(model.predict_proba(X[:5]), own)
