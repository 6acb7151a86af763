"""The low-overhead XGBoost predict path gives the same floats as XGBoost's own methods."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from xgboost import XGBClassifier, XGBRegressor

from ml.fastpredict import accelerate
from ml.model import predict_matrix

N_FEATURES = 6


def _data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    X[::11, 2] = np.nan
    t = rng.integers(0, 2, size=n)
    y = (X[:, 0] + t * (X[:, 1] > 0) + rng.normal(0, 0.5, size=n) > 0.5).astype(int)
    return X, y, t


def _queries() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    Q = rng.normal(0, 2, size=(257, N_FEATURES))
    Q[::5, 0] = np.nan
    # float64, float32, one row, a non-contiguous view, and column-major float32 (what
    # Preprocessor.transform returns), read through its strides without a copy
    Q32 = Q.astype(np.float32)
    return [Q, Q32, Q[:1], Q[:, ::1][::2], np.asfortranarray(Q32), np.asfortranarray(Q)[::3]]


def test_regressor_predict_is_replaced_and_identical() -> None:
    X, y, _ = _data()
    model = XGBRegressor(n_estimators=30, max_depth=4).fit(X, y.astype(float))
    assert accelerate(model, N_FEATURES) == 1
    assert "predict" in vars(model)
    for Q in _queries():
        assert np.array_equal(model.predict(Q), XGBRegressor.predict(model, Q))


def test_binary_classifier_predict_proba_is_replaced_and_identical() -> None:
    X, y, _ = _data()
    model = XGBClassifier(n_estimators=30, max_depth=4).fit(X, y)
    assert accelerate(model, N_FEATURES) == 1
    for Q in _queries():
        fast, own = model.predict_proba(Q), XGBClassifier.predict_proba(model, Q)
        assert fast.dtype == own.dtype and fast.shape == own.shape
        assert np.array_equal(fast, own)


def test_best_iteration_is_respected() -> None:
    X, y, _ = _data()
    model = XGBRegressor(n_estimators=200, max_depth=3, early_stopping_rounds=3)
    model.fit(X[:400], y[:400].astype(float), eval_set=[(X[400:], y[400:].astype(float))])
    assert model.best_iteration < 199
    assert accelerate(model, N_FEATURES) == 1
    Q = _queries()[0]
    assert np.array_equal(model.predict(Q), XGBRegressor.predict(model, Q))


def test_multiclass_and_other_estimators_keep_their_own_methods() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, N_FEATURES))
    multi = XGBClassifier(n_estimators=5).fit(X, rng.integers(0, 3, size=300))
    assert accelerate(multi, N_FEATURES) == 0
    assert "predict_proba" not in vars(multi)

    from sklearn.linear_model import LogisticRegression

    assert accelerate(LogisticRegression().fit(X, X[:, 0] > 0), N_FEATURES) == 0


def test_wrong_width_is_not_accelerated() -> None:
    X, y, _ = _data()
    model = XGBRegressor(n_estimators=5).fit(X, y.astype(float))
    assert accelerate(model, N_FEATURES + 1) == 0


def test_x_learner_models_are_accelerated_and_effects_identical() -> None:
    from econml.metalearners import XLearner

    X, y, t = _data(1200)
    X = np.nan_to_num(X)  # EconML refuses NaN; the preprocessor imputes before it
    est = XLearner(
        models=XGBRegressor(n_estimators=20, max_depth=3),
        propensity_model=XGBClassifier(n_estimators=20, max_depth=3),
    ).fit(y.astype(float), t, X=X)
    plain = pickle.loads(pickle.dumps(est))
    assert accelerate(est, N_FEATURES) >= 3  # and the first-stage outcome models
    assert "predict_proba" in vars(est.propensity_models[0])
    assert "predict" in vars(est.cate_controls_models[0])
    assert "predict" in vars(est.cate_treated_models[0])
    for Q in _queries():
        Q = np.nan_to_num(Q).astype(np.float32)
        assert np.array_equal(predict_matrix(est, "uplift", Q), predict_matrix(plain, "uplift", Q))


def test_accelerated_model_pickles_and_still_agrees() -> None:
    X, y, _ = _data()
    model = XGBClassifier(n_estimators=10).fit(X, y)
    accelerate(model, N_FEATURES)
    copy = pickle.loads(pickle.dumps(model))
    Q = _queries()[1]
    assert np.array_equal(copy.predict_proba(Q), XGBClassifier.predict_proba(model, Q))


def test_fast_path_rejects_what_it_does_not_handle() -> None:
    X, y, _ = _data()
    model = XGBRegressor(n_estimators=5).fit(X, y.astype(float))
    accelerate(model, N_FEATURES)
    with pytest.raises(TypeError):
        model.predict(np.nan_to_num(X).astype(np.int64))


def _nthread(model) -> int:
    import json

    config = json.loads(model.get_booster().save_config())
    return int(config["learner"]["generic_param"]["nthread"])


@pytest.mark.parametrize(("own", "limit", "inside"), [(4, 1, 1), (1, 3, 1), (0, 1, 1), (3, 2, 2)])
def test_threads_at_most_caps_every_xgboost_model_and_restores_them(own, limit, inside) -> None:
    from econml.metalearners import XLearner

    from ml.fastpredict import threads_at_most

    X, y, t = _data(400)
    X = np.nan_to_num(X)
    est = XLearner(
        models=XGBRegressor(n_estimators=5, max_depth=2, n_jobs=own),
        propensity_model=XGBClassifier(n_estimators=5, max_depth=2, n_jobs=own),
    ).fit(y.astype(float), t, X=X)
    models = [*est.cate_controls_models, *est.cate_treated_models, *est.propensity_models]
    before = predict_matrix(est, "uplift", X)
    with threads_at_most(est, limit):
        assert [_nthread(m) for m in models] == [inside] * len(models)
        assert np.array_equal(predict_matrix(est, "uplift", X), before)
    assert [_nthread(m) for m in models] == [own] * len(models)
    with pytest.raises(RuntimeError), threads_at_most(est, limit):
        raise RuntimeError("restored on the way out of a failure too")
    assert [_nthread(m) for m in models] == [own] * len(models)
