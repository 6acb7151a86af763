"""Policy value on held-out randomized rows: what targeting the top q by score would earn.

The policy pi_q treats the top ceil(q N) held-out rows by score (stable: score descending, then
row order; uplift_at_k's convention). With p_i the KNOWN probability that row i's campaign
assigned treatment (the randomization's treated share, not a fitted propensity), each row carries
the inverse-propensity-weighted effect

    z_i = T_i Y_i / p_i - (1 - T_i) Y_i / (1 - p_i),    E[z_i | x_i] = tau(x_i),

so, per customer of the held-out population and against treating nobody:

- policy gain(q) = mean_i[pi_q(x_i) z_i]
- random targeting of share q = q mean_i[z_i]   (q times the IPW ATE)
- treating everyone = mean_i[z_i]               (the IPW ATE; equals gain(1))

Intervals are percentile bootstraps over `ml.metrics.bootstrap_counts` resamples of whole rows,
NOT stratified by arm: this estimator divides by the known p, not by the observed arm sizes, so
the chance variation of how many rows landed in each arm (the campaigns assigned each customer
by a coin with probability p, and the held-out split is random) is part of its error. Holding
the arm sizes fixed drops that part: in simulation the arm-stratified intervals covered the truth
89% of the time, whole-row resampling 94-95%. The ranking is made ONCE on the full held-out set and held fixed while rows
are resampled: the estimand is the value of that fixed policy (treat the customers whose score
clears the held-out top-q cut), E[pi_q(X) tau(X)] over the population the rows were drawn from.
Given the policy, gain(q) is a plain mean of independent terms, which is what the row bootstrap
is valid for; re-ranking inside each resample would instead add the noise of re-estimating the
cut, a different (and for a deployment decision, irrelevant) question. The same resamples serve
every share and both policies of a paired comparison, so differences are paired.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.metrics import (
    CI_LEVEL,
    _binary,
    _vectors,
    bootstrap_counts,
    percentile_interval,
    replicate_blocks,
    top_count,
)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

FINE_SHARES: tuple[float, ...] = tuple(round(i / 100, 2) for i in range(1, 101))


@dataclass(frozen=True)
class PolicyPoint:
    """Gain per customer at one share, with the random-targeting baseline of the same share."""

    share: float
    n_targeted: int
    gain: float
    gain_ci_low: float
    gain_ci_high: float
    random_gain: float
    random_ci_low: float
    random_ci_high: float


@dataclass(frozen=True)
class PolicyCurve:
    points: list[PolicyPoint]
    treat_all: float
    treat_all_ci_low: float
    treat_all_ci_high: float

    def table(self) -> list[dict[str, Any]]:
        """JSON-ready rows, one per share."""
        return [vars(point).copy() for point in self.points]


@dataclass(frozen=True)
class Comparison:
    """Policy A against policy B at one share, on the same rows and the same resamples.

    diff = a - b. p_a_better is the share of resamples where A earns more than B (a bootstrap
    probability, not a p-value)."""

    share: float
    a: float
    a_ci: tuple[float, float]
    b: float
    b_ci: tuple[float, float]
    diff: float
    diff_ci_low: float
    diff_ci_high: float
    p_a_better: float

    def a_is_better(self, margin: float = 0.0) -> bool:
        """A beats B by more than `margin` with the interval's confidence (its low end clears)."""
        return self.diff_ci_low > margin

    def b_is_better(self, margin: float = 0.0) -> bool:
        return self.diff_ci_high < -margin


def share_label(share: float) -> str:
    """30 for 0.3, 12_5 for 0.125: the `<pct>` of `policy_gain_at_<pct>`."""
    text = f"{share * 100:.2f}".rstrip("0").rstrip(".")
    return text.replace(".", "_")


def _inputs(y: ArrayLike, t: ArrayLike, propensity: ArrayLike, **scores: ArrayLike) -> list:
    arrays = _vectors(y=y, t=t, propensity=propensity, **scores)
    _binary("t", arrays[1])
    p = arrays[2]
    if np.any((p <= 0) | (p >= 1)):
        raise ValueError("propensity must lie strictly between 0 and 1")
    if arrays[1].all() or not arrays[1].any():
        raise ValueError("policy value needs both treated (t=1) and control (t=0) rows")
    return arrays


def ipw_effects(y: ArrayLike, t: ArrayLike, propensity: ArrayLike) -> np.ndarray:
    """z_i = T Y / p - (1 - T) Y / (1 - p): unbiased for each row's effect under randomization."""
    y_arr, t_arr, p = _inputs(y, t, propensity)
    return t_arr * y_arr / p - (1 - t_arr) * y_arr / (1 - p)


def _targeted(n: int, share: float) -> int:
    return top_count(share, n)


def policy_gain(
    y: ArrayLike, t: ArrayLike, propensity: ArrayLike, score: ArrayLike, share: float
) -> float:
    """IPW gain per customer of treating the top `share` by score, against treating nobody."""
    y_arr, t_arr, p, s = _inputs(y, t, propensity, score=score)
    z = ipw_effects(y_arr, t_arr, p)
    top = np.argsort(-s, kind="stable")[: _targeted(len(z), share)]
    return float(z[top].sum() / len(z))


def policy_counts(n: int, replicates: int, seed: int) -> np.ndarray:
    """Whole-row resamples (see the module docstring for why not stratified by arm)."""
    return bootstrap_counts(np.zeros(n), replicates, seed)


def _gain_replicates(
    z: np.ndarray, score: np.ndarray, w: np.ndarray, shares: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gain at each share on the full rows (shares,) and per resample (replicates x shares)."""
    n = len(z)
    order = np.argsort(-score, kind="stable")
    z_sorted = z[order]
    cuts = np.array([_targeted(n, q) for q in shares]) - 1
    point = np.cumsum(z_sorted)[cuts] / n
    resampled = np.concatenate(
        [
            np.cumsum(w[block][:, order] * z_sorted, axis=1)[:, cuts] / n
            for block in replicate_blocks(len(w), n)
        ]
    )
    return point, resampled


def policy_curve(
    y: ArrayLike,
    t: ArrayLike,
    propensity: ArrayLike,
    score: ArrayLike,
    shares: ArrayLike = FINE_SHARES,
    *,
    replicates: int = 200,
    seed: int = 0,
    level: float = CI_LEVEL,
    counts: np.ndarray | None = None,
) -> PolicyCurve:
    """Gain, random-targeting gain and treat-all gain with bootstrap intervals at each share.

    `counts` reuses resamples drawn elsewhere (`policy_counts`); otherwise they are drawn
    from `replicates` and `seed`."""
    y_arr, t_arr, p, s = _inputs(y, t, propensity, score=score)
    q = np.asarray(shares, dtype=float)
    if q.ndim != 1 or q.size == 0:
        raise ValueError("shares must be a non-empty list of fractions")
    w = policy_counts(len(y_arr), replicates, seed) if counts is None else counts
    if w.shape[1:] != (len(y_arr),):
        raise ValueError(f"counts must have shape (replicates, {len(y_arr)}), got {w.shape}")
    z = ipw_effects(y_arr, t_arr, p)
    point, resampled = _gain_replicates(z, s, w, q)
    ate = float(z.mean())
    ate_b = (w @ z) / len(z)
    ate_low, ate_high = percentile_interval(ate_b, level)
    points = []
    for j, share in enumerate(q):
        low, high = percentile_interval(resampled[:, j], level)
        points.append(
            PolicyPoint(
                share=float(share),
                n_targeted=_targeted(len(z), float(share)),
                gain=float(point[j]),
                gain_ci_low=low,
                gain_ci_high=high,
                random_gain=float(share) * ate,
                random_ci_low=float(share) * ate_low,
                random_ci_high=float(share) * ate_high,
            )
        )
    return PolicyCurve(points, ate, ate_low, ate_high)


def policy_metrics(curve: PolicyCurve) -> dict[str, float]:
    """`policy_gain_at_<pct>`, `random_gain_at_<pct>` and `treat_all_gain`, each with CIs."""
    out: dict[str, float] = {}
    for point in curve.points:
        pct = share_label(point.share)
        out[f"policy_gain_at_{pct}"] = point.gain
        out[f"policy_gain_at_{pct}_ci_low"] = point.gain_ci_low
        out[f"policy_gain_at_{pct}_ci_high"] = point.gain_ci_high
        out[f"random_gain_at_{pct}"] = point.random_gain
        out[f"random_gain_at_{pct}_ci_low"] = point.random_ci_low
        out[f"random_gain_at_{pct}_ci_high"] = point.random_ci_high
    out["treat_all_gain"] = curve.treat_all
    out["treat_all_gain_ci_low"] = curve.treat_all_ci_low
    out["treat_all_gain_ci_high"] = curve.treat_all_ci_high
    return out


def compare_policies(
    y: ArrayLike,
    t: ArrayLike,
    propensity: ArrayLike,
    score_a: ArrayLike,
    score_b: ArrayLike,
    share: float,
    replicates: int = 200,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> Comparison:
    """Paired comparison of two rankings of the same rows (e.g. challenger vs champion)."""
    y_arr, t_arr, p, s_a, s_b = _inputs(y, t, propensity, score_a=score_a, score_b=score_b)
    w = policy_counts(len(y_arr), replicates, seed)
    z = ipw_effects(y_arr, t_arr, p)
    q = np.array([share], dtype=float)
    a, a_b = _gain_replicates(z, s_a, w, q)
    b, b_b = _gain_replicates(z, s_b, w, q)
    diff_b = a_b[:, 0] - b_b[:, 0]
    low, high = percentile_interval(diff_b, level)
    return Comparison(
        share=float(share),
        a=float(a[0]),
        a_ci=percentile_interval(a_b[:, 0], level),
        b=float(b[0]),
        b_ci=percentile_interval(b_b[:, 0], level),
        diff=float(a[0] - b[0]),
        diff_ci_low=low,
        diff_ci_high=high,
        p_a_better=float(np.mean(diff_b > 0)),
    )


def blp_slope(
    y: ArrayLike,
    t: ArrayLike,
    propensity: ArrayLike,
    score: ArrayLike,
    counts: np.ndarray,
    level: float = CI_LEVEL,
) -> tuple[float, float, float]:
    """Calibration of the score's heterogeneity: the slope of the IPW effects z on the score,
    with its bootstrap interval (low, high).

    This is the best-linear-predictor test of Chernozhukov, Demirer, Duflo and Fernandez-Val
    with the Horvitz-Thompson transformed outcome, which needs no outcome or propensity model
    when p is known: slope 1 means the predicted differences between customers are right on
    average, 0 means the score finds no heterogeneity, and an interval above 0 means it does.
    NaN when the score is constant."""
    y_arr, t_arr, p, s = _inputs(y, t, propensity, score=score)
    z = ipw_effects(y_arr, t_arr, p)
    n = len(z)
    if counts.shape[1:] != (n,):
        raise ValueError(f"counts must have shape (replicates, {n}), got {counts.shape}")

    def slope(w: np.ndarray) -> np.ndarray:  # w (replicates x N): weighted OLS of z on (1, s)
        mean_s = (w @ s) / n
        sxz = (w @ (s * z)) - mean_s * (w @ z)
        sxx = (w @ (s * s)) - n * mean_s**2
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(sxx > 0, sxz / sxx, np.nan)

    if np.ptp(s) == 0:  # a constant score has no spread to regress on
        return float("nan"), float("nan"), float("nan")
    point = float(slope(np.ones((1, n)))[0])
    low, high = percentile_interval(slope(counts), level)
    return point, low, high
