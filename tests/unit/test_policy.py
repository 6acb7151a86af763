"""Policy value by IPW with the known assignment probability: by hand, determinism, paired
comparisons, and the coverage of the bootstrap intervals on simulated randomized experiments."""

from __future__ import annotations

import numpy as np
import pytest

from ml import metrics, policy
from ml.errors import RecipeError, TrainingError
from ml.evaluate import evaluate, logged_metrics
from ml.recipe import EvaluationSpec

# Six rows in score order, two campaigns (p = 0.5 and p = 0.25):
#   row score t y  p     z = t y / p - (1 - t) y / (1 - p)
#   1   0.9   1 1  0.5   2
#   2   0.8   0 1  0.25  -1 / 0.75 = -4/3
#   3   0.7   1 0  0.25  0
#   4   0.6   0 0  0.5   0
#   5   0.5   1 1  0.25  4
#   6   0.4   0 1  0.5   -2
SCORE = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
T = [1, 0, 1, 0, 1, 0]
Y = [1, 1, 0, 0, 1, 1]
P = [0.5, 0.25, 0.25, 0.5, 0.25, 0.5]


def _experiment(
    n: int, seed: int, a: float = 0.02, b: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A randomized campaign pair: x ~ U(0, 1), tau(x) = a + b x, binary outcome, each row's
    campaign assigning treatment with a known probability of 0.5 or 0.3. Returns y, t, p, x."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, n)
    p = np.where(rng.uniform(size=n) < 0.5, 0.5, 0.3)
    t = (rng.uniform(size=n) < p).astype(float)
    base = 0.1 + 0.2 * x
    y = (rng.uniform(size=n) < base + t * (a + b * x)).astype(float)
    return y, t, p, x


# ---------------------------------------------------------------- by hand


def test_ipw_effects_and_gain_by_hand():
    np.testing.assert_allclose(policy.ipw_effects(Y, T, P), [2, -4 / 3, 0, 0, 4, -2])
    # top ceil(0.5 * 6) = 3 rows: (2 - 4/3 + 0) / 6 = 1/9
    assert policy.policy_gain(Y, T, P, SCORE, 0.5) == pytest.approx(1 / 9)
    # top ceil(0.1 * 6) = 1 row: 2 / 6
    assert policy.policy_gain(Y, T, P, SCORE, 0.1) == pytest.approx(1 / 3)
    # everyone: (2 - 4/3 + 4 - 2) / 6 = 4/9, the IPW ATE
    assert policy.policy_gain(Y, T, P, SCORE, 1.0) == pytest.approx(4 / 9)


def test_curve_by_hand_random_and_treat_all():
    curve = policy.policy_curve(Y, T, P, SCORE, [0.5, 1.0], replicates=50, seed=1)
    half, everyone = curve.points
    assert half.n_targeted == 3
    assert half.gain == pytest.approx(1 / 9)
    assert half.random_gain == pytest.approx(0.5 * 4 / 9)  # q times the IPW ATE
    assert curve.treat_all == pytest.approx(4 / 9)
    assert everyone.gain == pytest.approx(curve.treat_all)
    # random targeting's interval is q times treat-all's
    assert half.random_ci_low == pytest.approx(0.5 * curve.treat_all_ci_low)
    assert half.random_ci_high == pytest.approx(0.5 * curve.treat_all_ci_high)


def test_ties_follow_row_order_like_uplift_at_k():
    # rows 1 and 2 tied at the top: ceil(1/6 * 6) = 1 row -> row 1 (z = 2) -> 2/6
    tied = [0.9, 0.9, 0.7, 0.6, 0.5, 0.4]
    assert policy.policy_gain(Y, T, P, tied, 1 / 6) == pytest.approx(1 / 3)
    swapped = [1, 0, 2, 3, 4, 5]
    y, t, p, s = (np.asarray(a)[swapped] for a in (Y, T, P, tied))
    assert policy.policy_gain(y, t, p, s, 1 / 6) == pytest.approx(-4 / 3 / 6)


def test_resampled_gain_is_the_gain_on_the_materialised_resample_with_the_ranking_fixed():
    y, t, p, x = _experiment(400, seed=3)
    score = np.round(x, 1)  # many ties
    counts = metrics.bootstrap_counts(t, 60, seed=9)
    curve = policy.policy_curve(y, t, p, score, [0.3], counts=counts)
    z = policy.ipw_effects(y, t, p)
    top = np.zeros(len(y), dtype=bool)
    top[np.argsort(-score, kind="stable")[: metrics.top_count(0.3, len(y))]] = True
    gains = counts @ (z * top) / len(y)
    low, high = metrics.percentile_interval(gains)
    assert curve.points[0].gain_ci_low == pytest.approx(low)
    assert curve.points[0].gain_ci_high == pytest.approx(high)


def test_metric_names():
    curve = policy.policy_curve(Y, T, P, SCORE, [0.125, 0.3, 1.0], replicates=50)
    names = policy.policy_metrics(curve)
    for pct in ("12_5", "30", "100"):
        for stem in ("policy_gain_at_", "random_gain_at_"):
            for suffix in ("", "_ci_low", "_ci_high"):
                assert f"{stem}{pct}{suffix}" in names
    assert {"treat_all_gain", "treat_all_gain_ci_low", "treat_all_gain_ci_high"} <= set(names)
    assert policy.share_label(0.1) == "10" and policy.share_label(0.01) == "1"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: policy.policy_gain(Y, T, [0.5] * 5 + [1.0], SCORE, 0.3), "strictly between"),
        (lambda: policy.policy_gain(Y, T, [0.5] * 5, SCORE, 0.3), "differ in length"),
        (lambda: policy.policy_gain(Y, [1] * 6, P, SCORE, 0.3), "both treated"),
        (lambda: policy.policy_gain(Y, T, P, SCORE, 0.0), r"\(0, 1\]"),
    ],
)
def test_invalid_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- determinism and strata


def test_stratified_resampling_keeps_arm_counts():
    _, t, _, _ = _experiment(999, seed=0)
    counts = metrics.bootstrap_counts(t, 80, seed=5)
    assert counts.shape == (80, 999)
    assert np.all(counts[:, t == 1].sum(axis=1) == (t == 1).sum())
    assert np.all(counts[:, t == 0].sum(axis=1) == (t == 0).sum())


def test_deterministic_with_a_seed():
    y, t, p, x = _experiment(1000, seed=1)
    first = policy.policy_curve(y, t, p, x, [0.3], replicates=100, seed=7)
    again = policy.policy_curve(y, t, p, x, [0.3], replicates=100, seed=7)
    other = policy.policy_curve(y, t, p, x, [0.3], replicates=100, seed=8)
    assert first == again
    assert first.points[0].gain == other.points[0].gain
    assert first.points[0].gain_ci_low != other.points[0].gain_ci_low


# ---------------------------------------------------------------- paired comparison


def test_identical_scores_differ_by_exactly_zero():
    y, t, p, x = _experiment(2000, seed=2)
    c = policy.compare_policies(y, t, p, x, x.copy(), 0.3, replicates=100, seed=0)
    assert c.diff == 0.0
    assert c.diff_ci_low <= 0.0 <= c.diff_ci_high
    assert c.a == c.b and c.a_ci == c.b_ci
    assert c.p_a_better == 0.0
    assert not c.a_is_better() and not c.b_is_better()


def test_random_score_loses_to_the_true_effect():
    # harmful for low x: tau = -0.1 + 0.3 x, so targeting by x matters
    y, t, p, x = _experiment(20_000, seed=4, a=-0.1, b=0.3)
    noise = np.random.default_rng(5).uniform(size=len(y))
    c = policy.compare_policies(y, t, p, noise, x, 0.3, replicates=200, seed=0)
    assert c.diff < 0
    assert c.diff_ci_high < 0
    assert c.b_is_better() and not c.a_is_better()
    assert c.p_a_better < 0.025
    assert c.b == pytest.approx(policy.policy_gain(y, t, p, x, 0.3))


# ---------------------------------------------------------------- coverage


def test_intervals_cover_the_truth_between_90_and_99_percent():
    """200 simulated experiments of 2,000 rows with tau(x) = a + b x and score = x, treatment
    assigned by a coin per customer as in the demo's campaigns.

    Estimands (the population the rows are drawn from, x ~ U(0, 1)):
    - uplift@30 re-ranks inside each resample, so its target is the effect among the top 30%
      of the population: E[tau | x >= 0.7] = a + b (1 + 0.7) / 2.
    - policy gain ranks once: the policy is "treat x >= c", c the held-out top-30% cut; its
      population value is the integral of tau over [c, 1] = a (1 - c) + b (1 - c^2) / 2.
    """
    a, b, n, share = 0.02, 0.1, 2000, 0.3
    experiments = 200
    cover_uplift = cover_gain = 0
    for seed in range(experiments):
        y, t, p, x = _experiment(n, seed=1000 + seed, a=a, b=b)
        counts = metrics.bootstrap_counts(t, 200, seed=seed)
        low, high = metrics.percentile_interval(
            metrics.uplift_at_k_replicates(y, t, x, counts, share)
        )
        cover_uplift += low <= a + b * (1 + (1 - share)) / 2 <= high
        point = policy.policy_curve(y, t, p, x, [share], replicates=200, seed=seed).points[0]
        cut = np.sort(x)[::-1][point.n_targeted - 1]
        truth = a * (1 - cut) + b * (1 - cut**2) / 2
        cover_gain += point.gain_ci_low <= truth <= point.gain_ci_high
    assert 0.90 <= cover_uplift / experiments <= 0.99
    assert 0.90 <= cover_gain / experiments <= 0.99


# ---------------------------------------------------------------- in the evaluation


def test_evaluate_reports_intervals_policy_value_and_tables():
    y, t, p, x = _experiment(3000, seed=6, a=-0.05, b=0.3)
    spec = EvaluationSpec(bootstrap_replicates=60, policy_shares=[0.2, 0.5], decision_share=0.3)
    ev = evaluate("uplift", y, x, t, propensity=p, spec=spec, plots=True)
    for name in ("qini_coefficient", "auuc_normalized", "uplift_at_10", "ate_observed"):
        assert ev.metrics[f"{name}_ci_low"] <= ev.metrics[f"{name}_ci_high"]
    for pct in ("20", "30", "50"):  # the decision share is always evaluated
        assert f"policy_gain_at_{pct}_ci_high" in ev.metrics
        assert f"random_gain_at_{pct}" in ev.metrics
    assert ev.metrics["policy_gain_at_30"] == pytest.approx(policy.policy_gain(y, t, p, x, 0.3))
    assert len(ev.tables["policy_curve"]) == 100
    assert ev.tables["policy_curve"][-1]["gain"] == pytest.approx(ev.metrics["treat_all_gain"])
    assert {"observed_ci_low", "observed_ci_high"} <= set(ev.tables["uplift_by_decile"][0])
    assert {"qini_curve.png", "uplift_by_decile.png", "policy_gain.png"} <= set(ev.plots)
    # the paired comparison draws the same resamples: its A interval is the logged one
    c = policy.compare_policies(y, t, p, x, -x, 0.3, replicates=60, seed=0)
    assert c.a_ci == (
        ev.metrics["policy_gain_at_30_ci_low"],
        ev.metrics["policy_gain_at_30_ci_high"],
    )


def test_evaluate_without_propensity_uses_the_treated_share():
    y, t, _, x = _experiment(1000, seed=7)
    ev = evaluate("uplift", y, x, t, plots=False, spec=EvaluationSpec(bootstrap_replicates=50))
    # one probability for every row: treat-all gain is the difference in arm means
    assert ev.metrics["treat_all_gain"] == pytest.approx(ev.metrics["ate_observed"])


def test_wanted_metrics_keep_their_intervals():
    y, t, p, x = _experiment(1000, seed=8)
    spec = EvaluationSpec(bootstrap_replicates=50)
    ev = evaluate(
        "uplift", y, x, t, propensity=p, spec=spec, plots=False,
        wanted=["qini_coefficient", "policy_gain_at_30"],
    )  # fmt: skip
    assert set(ev.metrics) == {
        "qini_coefficient", "qini_coefficient_ci_low", "qini_coefficient_ci_high",
        "policy_gain_at_30", "policy_gain_at_30_ci_low", "policy_gain_at_30_ci_high",
    }  # fmt: skip
    with pytest.raises(RecipeError, match="unknown metric 'qini'") as info:
        evaluate("uplift", y, x, t, propensity=p, spec=spec, plots=False, wanted=["qini"])
    assert "_ci_low" not in str(info.value)


@pytest.mark.parametrize(
    "spec",
    [
        EvaluationSpec(bootstrap_replicates=50),
        EvaluationSpec(bootstrap_replicates=50, policy_shares=[0.125, 0.5], decision_share=0.25),
    ],
)
def test_logged_metrics_are_the_names_evaluate_logs(spec):
    """What `ml validate` lets `evaluation.metrics` name, known before any data is read."""
    y, t, p, x = _experiment(600, seed=11)
    uplift = evaluate("uplift", y, x, t, propensity=p, spec=spec, plots=False)
    assert sorted(logged_metrics("uplift", spec)) == sorted(uplift.metrics)
    y01 = (x > 0.5).astype(float)
    classification = evaluate("classification", y01, x, plots=False)
    assert sorted(logged_metrics("classification", spec)) == sorted(classification.metrics)
    assert sorted(logged_metrics("regression", spec)) == sorted(
        evaluate("regression", y, x).metrics
    )


def test_evaluate_refuses_a_bad_propensity():
    y, t, _, x = _experiment(500, seed=9)
    with pytest.raises(TrainingError, match="propensity"):
        evaluate("uplift", y, x, t, propensity=np.ones(500), plots=False)


def test_blp_slope_is_one_for_the_true_effect_and_zero_for_noise():
    y, t, p, x = _experiment(20_000, seed=10, a=-0.05, b=0.3)
    counts = metrics.bootstrap_counts(t, 200, seed=0)
    tau = -0.05 + 0.3 * x
    # standard errors here: ~0.1 for the true effect's slope, ~0.01 for the noise's
    slope, low, high = policy.blp_slope(y, t, p, tau, counts)
    assert abs(slope - 1) < 0.35 and low < slope < high and low > 0.3
    noise = np.random.default_rng(11).normal(size=len(y))
    slope, low, high = policy.blp_slope(y, t, p, noise, counts)
    assert abs(slope) < 0.04 and low < slope < high
    constant = policy.blp_slope(y, t, p, np.zeros(len(y)), counts)
    assert all(np.isnan(v) for v in constant)
