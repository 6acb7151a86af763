"""Metrics against hand-computed cases, sklearn, and the properties a ranking metric must have."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml import metrics
from ml.metrics import (
    auuc_normalized,
    classification_metrics,
    qini_coefficient,
    qini_curve,
    regression_metrics,
    uplift_at_k,
    uplift_by_decile,
    uplift_metrics,
)

# Six rows, already in score order (row, score, t, y):
#   1  0.9  T  1
#   2  0.8  C  0
#   3  0.7  T  1
#   4  0.6  C  1
#   5  0.5  T  0
#   6  0.4  C  1
SCORE = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
T = [1, 0, 1, 0, 1, 0]
Y = [1, 0, 1, 1, 0, 1]


def _synthetic(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Randomised trial where the true effect tau is known: y = base + t * tau + noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    tau = 0.2 + 0.3 * x
    t = rng.integers(0, 2, n)
    y = 0.5 * x + t * tau + rng.normal(0, 0.3, n)
    return y, t, tau


# ---------------------------------------------------------------- classification / regression


def test_classification_metrics_by_hand():
    # y = [0, 0, 1, 1], p = [0.1, 0.4, 0.35, 0.8]
    # ranks of p: 0.1->1, 0.35->2, 0.4->3, 0.8->4; positives have ranks 2 and 4, sum 6
    # AUC = (6 - 2*3/2) / (2*2) = 3/4
    # log loss = -(ln 0.9 + ln 0.6 + ln 0.35 + ln 0.8) / 4
    # accuracy: predictions [0, 0, 0, 1] -> 3 of 4 right
    result = classification_metrics([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert result["roc_auc"] == pytest.approx(0.75)
    expected = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert result["log_loss"] == pytest.approx(expected)
    assert result["accuracy"] == pytest.approx(0.75)


def test_roc_auc_ties_count_half():
    # p all tied: every positive/negative pair counts 1/2 -> AUC 0.5.
    # y = [0, 1, 0, 1], p = [0.2, 0.2, 0.7, 0.7]: pairs (pos, neg) = (0.2,0.2) tie 1/2,
    # (0.2,0.7) lose 0, (0.7,0.2) win 1, (0.7,0.7) tie 1/2 -> 2/4 = 0.5.
    assert metrics.roc_auc([0, 1, 0, 1], [0.5] * 4) == pytest.approx(0.5)
    assert metrics.roc_auc([0, 1, 0, 1], [0.2, 0.2, 0.7, 0.7]) == pytest.approx(0.5)
    # y = [0, 1, 1], p = [0.3, 0.3, 0.9]: pairs (0.3 vs 0.3) = 1/2, (0.9 vs 0.3) = 1 -> 0.75
    assert metrics.roc_auc([0, 1, 1], [0.3, 0.3, 0.9]) == pytest.approx(0.75)


def test_classification_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.uniform(0.01, 0.99, 500), 2)  # rounded so there are ties
    result = classification_metrics(y, p)
    assert result["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert result["log_loss"] == pytest.approx(log_loss(y, p))
    assert result["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5))


def test_log_loss_clips_certain_mistakes():
    # p = 0 for a positive: clipped to 1e-15, loss = -ln(1e-15) / 2 over two rows.
    result = classification_metrics([1, 0], [0.0, 0.0])
    assert result["log_loss"] == pytest.approx(-math.log(1e-15) / 2)


def test_classification_one_class_raises():
    with pytest.raises(ValueError, match="only one class"):
        classification_metrics([1, 1, 1], [0.2, 0.5, 0.9])


def test_regression_metrics_by_hand():
    # y = [1, 2, 3, 4], yhat = [1, 3, 2, 4]: residuals [0, -1, 1, 0]
    # rmse = sqrt(2/4); mae = 2/4; SS_tot = 2.25+0.25+0.25+2.25 = 5 -> r2 = 1 - 2/5 = 0.6
    result = regression_metrics([1, 2, 3, 4], [1, 3, 2, 4])
    assert result == pytest.approx({"rmse": math.sqrt(0.5), "mae": 0.5, "r2": 0.6})


def test_regression_metrics_match_sklearn():
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(2)
    y = rng.normal(size=300)
    yhat = y + rng.normal(scale=0.5, size=300)
    result = regression_metrics(y, yhat)
    assert result["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, yhat)))
    assert result["mae"] == pytest.approx(mean_absolute_error(y, yhat))
    assert result["r2"] == pytest.approx(r2_score(y, yhat))


def test_r2_constant_target_follows_sklearn():
    assert regression_metrics([2, 2, 2], [2, 2, 2])["r2"] == 1.0
    assert regression_metrics([2, 2, 2], [1, 2, 3])["r2"] == 0.0


# ---------------------------------------------------------------- uplift, by hand


def test_qini_curve_by_hand():
    # k  N_t Y_t N_c Y_c  Y_t - Y_c * N_t / N_c      / N=6
    # 1   1   1   0   0   1 - 0 (no control yet) = 1  1/6
    # 2   1   1   1   0   1 - 0 * 1/1        = 1      1/6
    # 3   2   2   1   0   2 - 0 * 2/1        = 2      2/6
    # 4   2   2   2   1   2 - 1 * 2/2        = 1      1/6
    # 5   3   2   2   1   2 - 1 * 3/2        = 0.5    1/12
    # 6   3   2   3   2   2 - 2 * 3/3        = 0      0
    x, q = qini_curve(Y, T, SCORE)
    np.testing.assert_allclose(x, [0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1])
    np.testing.assert_allclose(q, [0, 1 / 6, 1 / 6, 2 / 6, 1 / 6, 1 / 12, 0])


def test_qini_coefficient_by_hand():
    # Trapezoids with dx = 1/6 and zero end points: area = 1/6 * (1/6 + 1/6 + 2/6 + 1/6 + 1/12)
    # = 1/6 * 11/12 = 11/72. Random line ends at q(1) = 0, so its area is 0.
    assert qini_coefficient(Y, T, SCORE) == pytest.approx(11 / 72)


def test_qini_ties_enter_together():
    # Scores tied in pairs: {1, 2}, {3, 4}, {5, 6} (rows as in the table above).
    # k=2: N_t=1 Y_t=1 N_c=1 Y_c=0 -> 1 -> 1/6;  k=4: 2 - 1 * 2/2 = 1 -> 1/6;  k=6: 0
    # x = [0, 1/3, 2/3, 1], q = [0, 1/6, 1/6, 0]
    # area = 1/3 * (1/12 + 1/6 + 1/12) = 1/9
    tied = [0.9, 0.9, 0.5, 0.5, 0.1, 0.1]
    x, q = qini_curve(Y, T, tied)
    np.testing.assert_allclose(x, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(q, [0, 1 / 6, 1 / 6, 0])
    assert qini_coefficient(Y, T, tied) == pytest.approx(1 / 9)
    # Row order inside a tie group must not matter.
    swap = [1, 0, 3, 2, 5, 4]
    y, t, s = (np.asarray(a)[swap] for a in (Y, T, tied))
    assert qini_coefficient(y, t, s) == pytest.approx(1 / 9)


def test_auuc_normalized_by_hand():
    # Uplift curve u(k) = (Y_t/N_t - Y_c/N_c) * k/6, an empty arm's mean taken as 0:
    # k=1: (1 - 0) * 1/6 = 6/36    k=2: (1 - 0) * 2/6 = 12/36   k=3: (1 - 0) * 3/6 = 18/36
    # k=4: (1 - 1/2) * 4/6 = 12/36  k=5: (2/3 - 1/2) * 5/6 = 5/36  k=6: (2/3 - 2/3) = 0
    # model area = 1/6 * 53/36 = 53/216 (end points 0; random line area u(N)/2 = 0)
    # Oracle s* = y if treated else -y = [1, 0, 1, -1, 0, -1]; tie groups {1,3}, {2,5}, {4,6}:
    # k=2: N_t=2 Y_t=2 N_c=0 -> (1 - 0) * 2/6 = 1/3; k=4: N_t=3 Y_t=2 N_c=1 Y_c=0 -> 2/3 * 4/6
    # = 4/9; k=6: 0. Area = 1/3 * (1/6 + (1/3 + 4/9)/2 + 2/9) = 7/27.
    # auuc = (53/216) / (7/27) = 53/56
    assert auuc_normalized(Y, T, SCORE) == pytest.approx(53 / 56)
    assert auuc_normalized(Y, T, [1, 0, 1, -1, 0, -1]) == pytest.approx(1.0)


def test_uplift_at_k_by_hand():
    # top ceil(0.5 * 6) = 3 rows: treated y = [1, 1], control y = [0] -> 1 - 0 = 1
    assert uplift_at_k(Y, T, SCORE, 0.5) == pytest.approx(1.0)
    # top ceil(0.7 * 6) = 5 rows: treated [1, 1, 0] mean 2/3, control [0, 1] mean 1/2 -> 1/6
    assert uplift_at_k(Y, T, SCORE, 0.7) == pytest.approx(1 / 6)
    # all rows: 2/3 - 2/3 = 0
    assert uplift_at_k(Y, T, SCORE, 1.0) == pytest.approx(0.0)


def test_uplift_at_k_empty_arm_raises():
    # top ceil(0.1 * 6) = 1 row, treated only
    with pytest.raises(ValueError, match="arm is empty"):
        uplift_at_k(Y, T, SCORE, 0.1)
    with pytest.raises(ValueError, match="k must be"):
        uplift_at_k(Y, T, SCORE, 0.0)


def test_uplift_by_decile_by_hand():
    # 3 bins of 2 rows: {1, 2}, {3, 4}, {5, 6}
    # bin 1: T y=1, C y=0 -> 1;  bin 2: T y=1, C y=1 -> 0;  bin 3: T y=0, C y=1 -> -1
    rows = uplift_by_decile(Y, T, SCORE, n_bins=3)
    assert rows == [
        {"bin": 1, "n": 2, "n_treated": 1, "n_control": 1, "mean_score": pytest.approx(0.85),
         "observed_uplift": pytest.approx(1.0)},
        {"bin": 2, "n": 2, "n_treated": 1, "n_control": 1, "mean_score": pytest.approx(0.65),
         "observed_uplift": pytest.approx(0.0)},
        {"bin": 3, "n": 2, "n_treated": 1, "n_control": 1, "mean_score": pytest.approx(0.45),
         "observed_uplift": pytest.approx(-1.0)},
    ]  # fmt: skip


def test_uplift_by_decile_empty_arm_is_none_and_sizes_split():
    # 6 rows in 4 bins: sizes 2, 2, 1, 1; bin 3 is row 5 (treated only) -> None
    rows = uplift_by_decile(Y, T, SCORE, n_bins=4)
    assert [r["n"] for r in rows] == [2, 2, 1, 1]
    assert rows[2]["observed_uplift"] is None
    assert rows[3]["observed_uplift"] is None
    with pytest.raises(ValueError, match="n_bins"):
        uplift_by_decile(Y, T, SCORE, n_bins=7)


def test_uplift_metrics_keys_and_ates():
    y, t, tau = _synthetic()
    result = uplift_metrics(y, t, tau)
    assert set(result) == {
        "qini_coefficient", "auuc_normalized", "uplift_at_10", "uplift_at_20", "uplift_at_30",
        "ate_estimated", "ate_observed",
    }  # fmt: skip
    assert result["ate_estimated"] == pytest.approx(tau.mean())
    assert result["ate_observed"] == pytest.approx(y[t == 1].mean() - y[t == 0].mean())
    assert all(isinstance(v, float) for v in result.values())


# ---------------------------------------------------------------- uplift, properties


def test_true_effect_ranking_beats_random_and_reversal_is_negative():
    y, t, tau = _synthetic()
    rng = np.random.default_rng(3)
    noise = rng.normal(size=len(y))
    good = qini_coefficient(y, t, tau)
    random = qini_coefficient(y, t, noise)
    reversed_ = qini_coefficient(y, t, -tau)
    assert good > 0
    assert good > abs(random) * 3
    assert reversed_ < 0
    assert auuc_normalized(y, t, tau) > auuc_normalized(y, t, noise)
    assert auuc_normalized(y, t, -tau) < 0
    assert uplift_at_k(y, t, tau, 0.1) > uplift_at_k(y, t, -tau, 0.1)


def test_constant_score_is_exactly_random():
    y, t, _ = _synthetic(n=500)
    const = np.full(len(y), 0.3)
    x, q = qini_curve(y, t, const)
    assert len(x) == 2  # one tie group: (0, 0) and (1, q(1))
    assert qini_coefficient(y, t, const) == pytest.approx(0.0, abs=1e-12)
    assert auuc_normalized(y, t, const) == pytest.approx(0.0, abs=1e-12)


def test_qini_curve_shape_and_end_point():
    y, t, tau = _synthetic(n=1000)
    x, q = qini_curve(y, t, tau)
    assert x[0] == 0 and q[0] == 0 and x[-1] == 1
    assert np.all(np.diff(x) > 0)
    # q(1) = (Y_t - Y_c * N_t/N_c) / N = share treated * observed ATE
    expected = (t.mean()) * (y[t == 1].mean() - y[t == 0].mean())
    assert q[-1] == pytest.approx(expected)


def test_auuc_undefined_for_constant_outcome():
    with pytest.raises(ValueError, match="oracle"):
        auuc_normalized([0, 0, 0, 0], [1, 0, 1, 0], [0.1, 0.2, 0.3, 0.4])


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: qini_curve([1, 0], [1, 0], [0.1]), "differ in length"),
        (lambda: qini_curve([1, 0], [1, 2], [0.1, 0.2]), "only 0 and 1"),
        (lambda: qini_curve([1, float("nan")], [1, 0], [0.1, 0.2]), "NaN"),
        (lambda: qini_curve([1, 0], [1, 1], [0.1, 0.2]), "both treated"),
        (lambda: qini_curve([], [], []), "empty"),
        (lambda: qini_curve([[1, 0]], [[1, 0]], [[0.1, 0.2]]), "1-D"),
        (lambda: classification_metrics([0, 1], [0.2, 1.5]), r"\[0, 1\]"),
        (lambda: classification_metrics([0, 2], [0.2, 0.5]), "only 0 and 1"),
        (lambda: regression_metrics([1.0, 2.0], [1.0, float("inf")]), "NaN"),
    ],
)
def test_invalid_inputs_raise_one_line(call, message):
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- bootstrap intervals


def _materialised(counts_row: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """A resample as rows: each row repeated as often as it was drawn, in row order."""
    rows = np.repeat(np.arange(len(counts_row)), counts_row)
    return [a[rows] for a in arrays]


def test_bootstrap_counts_keep_arms_and_are_deterministic():
    _, t, _ = _synthetic(n=501)
    counts = metrics.bootstrap_counts(t, 70, seed=3)
    assert counts.shape == (70, 501)
    assert np.all(counts[:, t == 1].sum(axis=1) == t.sum())
    assert np.all(counts.sum(axis=1) == 501)
    np.testing.assert_array_equal(counts, metrics.bootstrap_counts(t, 70, seed=3))
    assert not np.array_equal(counts, metrics.bootstrap_counts(t, 70, seed=4))


def test_replicates_equal_the_metrics_on_materialised_resamples():
    # Rounded scores tie, so tie groups, cut rows and duplicates all come into play.
    y, t, tau = _synthetic(n=700, seed=5)
    score = np.round(tau + np.random.default_rng(6).normal(0, 0.05, len(y)), 2)
    counts = metrics.bootstrap_counts(t, 12, seed=1)
    replicates = metrics.uplift_replicates(y, t, score, counts)
    assert set(replicates) == set(uplift_metrics(y, t, score))
    for b in range(len(counts)):
        expected = uplift_metrics(*_materialised(counts[b], y, t, score))
        for name, value in expected.items():
            assert replicates[name][b] == pytest.approx(value, abs=1e-12), name
    alone = metrics.uplift_at_k_replicates(y, t, score, counts, 0.2)
    np.testing.assert_allclose(alone, replicates["uplift_at_20"], rtol=0, atol=1e-12)


def test_uplift_intervals_bracket_the_estimates():
    y, t, tau = _synthetic(n=3000, seed=7)
    counts = metrics.bootstrap_counts(t, 200, seed=0)
    intervals = metrics.uplift_intervals(y, t, tau, counts)
    for name, value in uplift_metrics(y, t, tau).items():
        assert intervals[f"{name}_ci_low"] <= value <= intervals[f"{name}_ci_high"], name


def test_percentile_interval_drops_undefined_replicates():
    values = np.r_[np.arange(101.0), np.nan]
    assert metrics.percentile_interval(values) == pytest.approx((2.5, 97.5))
    low, high = metrics.percentile_interval(np.array([np.nan]))
    assert math.isnan(low) and math.isnan(high)


def test_qini_band_brackets_the_curve():
    y, t, tau = _synthetic(n=2000, seed=8)
    counts = metrics.bootstrap_counts(t, 100, seed=0)
    grid, low, high = metrics.qini_band(y, t, tau, counts)
    assert grid.shape == low.shape == high.shape == (101,)
    assert low[0] == high[0] == 0.0
    assert np.all(low <= high)
    x, q = qini_curve(y, t, tau)
    inside = (np.interp(grid, x, q) >= low - 1e-12) & (np.interp(grid, x, q) <= high + 1e-12)
    assert inside.mean() > 0.9


def test_decile_intervals_bracket_the_observed_uplift():
    y, t, tau = _synthetic(n=3000, seed=9)
    counts = metrics.bootstrap_counts(t, 200, seed=0)
    rows = uplift_by_decile(y, t, tau)
    intervals = metrics.decile_intervals(y, t, tau, counts)
    assert len(intervals) == 10
    for row, (low, high) in zip(rows, intervals, strict=True):
        assert low <= row["observed_uplift"] <= high


def test_top_count_is_robust_to_floating_point():
    assert metrics.top_count(0.1, 30) == 3  # 0.1 * 30 = 3.0000000000000004
    assert metrics.top_count(0.7, 6) == 5
    assert metrics.top_count(1.0, 7) == 7
