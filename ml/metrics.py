"""Every model metric, defined once, as pure functions over numpy arrays.

Training, scoring reports, benchmarks and plots all call these, so a number means the same thing
everywhere. Inputs must be 1-D, equally long, non-empty and finite; labels and treatments must be
0/1. Anything else raises ValueError with a one-line message.

Classification (``y`` in {0, 1}, ``p`` = predicted probability of 1):
- roc_auc = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg), R_pos the sum of the ranks of ``p``
  over the positives, tied ``p`` sharing their average rank (Mann-Whitney U; equals sklearn).
  Undefined, so ValueError, when only one class is present.
- log_loss = -mean(y log p + (1 - y) log(1 - p)), ``p`` clipped to [1e-15, 1 - 1e-15].
- accuracy = mean(1[p >= 0.5] == y).

Regression: rmse = sqrt(mean((y - yhat)^2)); mae = mean(|y - yhat|);
r2 = 1 - SS_res / SS_tot, and, when ``y`` is constant (SS_tot = 0), 1.0 for a perfect fit and
0.0 otherwise (sklearn's ``force_finite`` convention).

Uplift (``t`` in {0, 1}; ``y`` binary or continuous; ``s`` the predicted uplift, higher = treat
first; N rows; both arms must be present). Rows are ranked by ``s`` descending; "top k" counts
rows from the top. Y_t(k), Y_c(k) are the sums of ``y`` and N_t(k), N_c(k) the counts of treated
and control rows in the top k.
- Qini curve: q(k) = (Y_t(k) - Y_c(k) N_t(k) / N_c(k)) / N at x = k / N, the control term
  taken as 0 while N_c(k) = 0 (then Y_c(k) = 0 too; scikit-uplift's convention). It is evaluated
  only at the end of each group of tied scores (tied rows enter together, so row order never
  matters) and starts at (0, 0). Units: incremental outcomes per row of the whole population.
- Random line: from (0, 0) to (1, q(N)); its area is q(N) / 2.
- qini_coefficient = trapezoid area under the Qini curve on x in [0, 1] minus q(N) / 2.
  0 for a constant score, > 0 for a useful ranking, < 0 for a reversed one. To compare with an
  oracle, call it again with the true effect as the score.
- Uplift curve: u(k) = (Y_t(k) / N_t(k) - Y_c(k) / N_c(k)) k / N, an empty arm's mean taken as
  0, on the same grid and tie groups (scikit-uplift's ``uplift_curve``, divided by N).
- auuc_normalized = (A(s) - u(N) / 2) / (A(s*) - u(N) / 2), A the trapezoid area under the
  uplift curve and s* = y for treated rows, -y for control rows: the observed-outcome oracle
  (treated responders first, control responders last). Random ~ 0, the oracle = 1; a model can
  exceed 1 on noise. ValueError when the oracle is no better than random (e.g. constant ``y``).
  Shaped like scikit-uplift's ``uplift_auc_score``, whose perfect curve is binary-only; this
  oracle also covers continuous outcomes.
- uplift_at_k = mean(y | t=1) - mean(y | t=0) over the top ceil(k N) rows (``top_count``); ties
  at the cut are broken by row order (stable sort). ValueError if an arm is empty there.
- uplift_by_decile: rows in stable score order split into ``n_bins`` near-equal bins (the first
  N mod n_bins bins get one extra row; tied scores may straddle a bin edge); bin 1 = highest.
- ate_estimated = mean(s); ate_observed = mean(y | t=1) - mean(y | t=0) over all rows.

Bootstrap intervals (percentile method, 95% by default). A resample is a row of a count matrix
(replicates x N): how often each held-out row was drawn. For these metrics rows are drawn with
replacement within each treatment arm, so every resample keeps the arms' sizes: they compare arm
means, whose sampling error is that of each arm given its size.
A metric on a resample equals the metric on the materialised rows ``np.repeat(arange(N), counts)``
(duplicates adjacent, in row order): scores are fixed per row, so the ranking of a resample is the
full ranking with rows repeated, and cumulative count-weighted sums along that one order give
every replicate's curve at once, with no Python loop per replicate. uplift@k, the Qini curve and
the AUUC re-rank within each resample that way; by-decile bins are fixed on the full ranking.
Replicates where a metric is undefined (an empty arm) are left out of its percentiles.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

_EPS = 1e-15


def _vector(name: str, values: ArrayLike) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _binary(name: str, arr: np.ndarray) -> np.ndarray:
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must contain only 0 and 1")
    return arr


def _vectors(**named: ArrayLike) -> list[np.ndarray]:
    arrays = [_vector(name, values) for name, values in named.items()]
    lengths = {name: len(a) for name, a in zip(named, arrays, strict=True)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs differ in length: {lengths}")
    return arrays


def _uplift_inputs(y: ArrayLike, t: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, ...]:
    y_arr, t_arr, s_arr = _vectors(y=y, t=t, score=score)
    _binary("t", t_arr)
    if t_arr.all() or not t_arr.any():
        raise ValueError("uplift metrics need both treated (t=1) and control (t=0) rows")
    return y_arr, t_arr, s_arr


def _rank_average(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank, without importing scipy."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def roc_auc(y_true: ArrayLike, proba: ArrayLike) -> float:
    """Area under the ROC curve as the Mann-Whitney U statistic, ties counted as half."""
    y, p = _vectors(y_true=y_true, proba=proba)
    _binary("y_true", y)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC is undefined when y_true contains only one class")
    rank_sum = _rank_average(p)[y == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(y_true: ArrayLike, proba: ArrayLike) -> dict[str, float]:
    """ROC AUC, log loss and accuracy at 0.5 for a binary classifier's probabilities."""
    y, p = _vectors(y_true=y_true, proba=proba)
    _binary("y_true", y)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("proba must lie in [0, 1]")
    clipped = np.clip(p, _EPS, 1 - _EPS)
    log_loss = -np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
    return {
        "roc_auc": roc_auc(y, p),
        "log_loss": float(log_loss),
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))),
    }


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """RMSE, MAE and R^2; R^2 follows sklearn when y_true is constant."""
    y, yhat = _vectors(y_true=y_true, y_pred=y_pred)
    residual = y - yhat
    ss_res = float(np.sum(residual**2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    # A constant target has no variance to explain: perfect fit 1.0, anything else 0.0.
    r2 = (1.0 if ss_res == 0 else 0.0) if ss_tot == 0 else 1.0 - ss_res / ss_tot
    return {
        "rmse": math.sqrt(ss_res / len(y)),
        "mae": float(np.mean(np.abs(residual))),
        "r2": r2,
    }


def _cumulative_by_threshold(
    y: np.ndarray, t: np.ndarray, score: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Cumulative arm sums and counts at the end of each group of tied scores, best first."""
    order = np.argsort(-score, kind="stable")
    s, y_sorted, t_sorted = score[order], y[order], t[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    n_t = np.cumsum(t_sorted)[ends]
    n_c = (ends + 1) - n_t
    y_t = np.cumsum(y_sorted * t_sorted)[ends]
    y_c = np.cumsum(y_sorted * (1 - t_sorted))[ends]
    return (ends + 1).astype(float), n_t, n_c, y_t, y_c


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def qini_curve(y: ArrayLike, t: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Qini points (x, q) at every distinct score threshold, per row of the population."""
    y_arr, t_arr, s_arr = _uplift_inputs(y, t, score)
    k, n_t, n_c, y_t, y_c = _cumulative_by_threshold(y_arr, t_arr, s_arr)
    n = len(y_arr)
    q = (y_t - y_c * _safe_div(n_t, n_c)) / n
    return np.r_[0.0, k / n], np.r_[0.0, q]


def _uplift_curve(y: np.ndarray, t: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, ...]:
    k, n_t, n_c, y_t, y_c = _cumulative_by_threshold(y, t, score)
    n = len(y)
    u = (_safe_div(y_t, n_t) - _safe_div(y_c, n_c)) * k / n
    return np.r_[0.0, k / n], np.r_[0.0, u]


def _area_above_random(x: np.ndarray, curve: np.ndarray) -> float:
    # Trapezoids by hand: np.trapezoid needs numpy 2 and np.trapz is gone from it.
    # The curves end at x = 1, so the random line's area is curve[-1] / 2.
    area = np.sum(np.diff(x) * (curve[1:] + curve[:-1]) / 2.0)
    return float(area - curve[-1] / 2.0)


def qini_coefficient(y: ArrayLike, t: ArrayLike, score: ArrayLike) -> float:
    """Area between the Qini curve and the random line; 0 means no better than random."""
    return _area_above_random(*qini_curve(y, t, score))


def auuc_normalized(y: ArrayLike, t: ArrayLike, score: ArrayLike) -> float:
    """Uplift-curve area above random, as a share of the observed-outcome oracle's."""
    y_arr, t_arr, s_arr = _uplift_inputs(y, t, score)
    oracle = np.where(t_arr == 1, y_arr, -y_arr)
    best = _area_above_random(*_uplift_curve(y_arr, t_arr, oracle))
    if best <= 0:
        raise ValueError("AUUC is undefined: the observed-outcome oracle is no better than random")
    return _area_above_random(*_uplift_curve(y_arr, t_arr, s_arr)) / best


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else value


def _arm_difference(y: np.ndarray, t: np.ndarray) -> float | None:
    treated, control = t == 1, t == 0
    if not treated.any() or not control.any():
        return None
    return float(y[treated].mean() - y[control].mean())


def top_count(k: float, n: int) -> int:
    """ceil(k n), the size of the top k of n rows; k n within 1e-9 of an integer counts as it
    (0.1 * 30 is 3.0000000000000004 in floating point, and means 3 rows)."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be a fraction in (0, 1], got {k}")
    return math.ceil(k * n - 1e-9)


def uplift_at_k(y: ArrayLike, t: ArrayLike, score: ArrayLike, k: float) -> float:
    """Observed uplift among the ceil(k N) highest-scored rows, i.e. if we treated only those."""
    y_arr, t_arr, s_arr = _uplift_inputs(y, t, score)
    top = np.argsort(-s_arr, kind="stable")[: top_count(k, len(y_arr))]
    diff = _arm_difference(y_arr[top], t_arr[top])
    if diff is None:
        raise ValueError(f"uplift_at_k is undefined: an arm is empty in the top {k:.0%}")
    return diff


def uplift_by_decile(y: ArrayLike, t: ArrayLike, score: ArrayLike, n_bins: int = 10) -> list[dict]:
    """Observed uplift per score bin, best first: a well-ranked model shows a falling staircase."""
    y_arr, t_arr, s_arr = _uplift_inputs(y, t, score)
    if not 1 <= n_bins <= len(y_arr):
        raise ValueError(f"n_bins must be between 1 and the number of rows, got {n_bins}")
    order = np.argsort(-s_arr, kind="stable")
    rows = []
    for i, idx in enumerate(np.array_split(order, n_bins), start=1):
        n_treated = int(t_arr[idx].sum())
        rows.append(
            {
                "bin": i,
                "n": len(idx),
                "n_treated": n_treated,
                "n_control": len(idx) - n_treated,
                "mean_score": float(s_arr[idx].mean()),
                "observed_uplift": _arm_difference(y_arr[idx], t_arr[idx]),
            }
        )
    return rows


def uplift_metrics(y: ArrayLike, t: ArrayLike, score: ArrayLike) -> dict[str, float]:
    """The uplift summary recorded with every run."""
    y_arr, t_arr, s_arr = _uplift_inputs(y, t, score)
    return {
        "qini_coefficient": qini_coefficient(y_arr, t_arr, s_arr),
        "auuc_normalized": auuc_normalized(y_arr, t_arr, s_arr),
        "uplift_at_10": uplift_at_k(y_arr, t_arr, s_arr, 0.1),
        "uplift_at_20": uplift_at_k(y_arr, t_arr, s_arr, 0.2),
        "uplift_at_30": uplift_at_k(y_arr, t_arr, s_arr, 0.3),
        "ate_estimated": float(s_arr.mean()),
        "ate_observed": _nan_if_none(_arm_difference(y_arr, t_arr)),
    }


# ---------------------------------------------------------------- bootstrap intervals

CI_LEVEL = 0.95
_BLOCK_CELLS = 2_000_000  # replicates x rows per block: ~16 MB per float matrix


def replicate_blocks(replicates: int, n: int) -> list[slice]:
    """Replicates in blocks small enough to keep memory flat for any N; one block for the
    demo's 200 x 8,500."""
    size = max(1, _BLOCK_CELLS // max(n, 1))
    return [slice(start, min(start + size, replicates)) for start in range(0, replicates, size)]


def bootstrap_counts(strata: ArrayLike, replicates: int, seed: int) -> np.ndarray:
    """Counts (replicates x N, int32) of rows drawn with replacement within each stratum, so
    every resample keeps each stratum's size: pass the treatment for arm-stratified resamples,
    a constant for plain ones. The same (strata, replicates, seed) give the same counts."""
    labels = _vector("strata", strata)
    if replicates < 1:
        raise ValueError(f"replicates must be at least 1, got {replicates}")
    rng = np.random.default_rng(seed)
    n = len(labels)
    groups = [np.flatnonzero(labels == value) for value in np.unique(labels)]
    counts = np.zeros((replicates, n), dtype=np.int32)
    for block in replicate_blocks(replicates, n):
        size = block.stop - block.start
        offsets = (np.arange(size) * n)[:, None]
        for rows in groups:  # one draw per stratum and block, not one per replicate
            drawn = rows[rng.integers(0, rows.size, size=(size, rows.size))]
            flat = np.bincount((drawn + offsets).ravel(), minlength=size * n)
            counts[block] += flat.reshape(size, n).astype(np.int32)
    return counts


def percentile_interval(values: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """The central `level` interval of bootstrap replicates, NaN replicates left out."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _check_counts(counts: np.ndarray, n: int) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != n:
        raise ValueError(f"counts must have shape (replicates, {n}), got {counts.shape}")
    return counts


class _Sums:
    """Count-weighted cumulative sums along one fixed row order, for every resample at once
    (arrays replicates x positions): rows, treated rows, outcomes, treated outcomes."""

    def __init__(self, y: np.ndarray, t: np.ndarray, w: np.ndarray, starts: np.ndarray | None):
        wt = w * t
        parts = (w, wt, w * y, wt * y)
        if starts is None:  # every position: needed to cut the top k anywhere
            self.w, self.wt, self.wy, self.wty = (np.cumsum(x, axis=1) for x in parts)
        else:  # only group ends: sum each tie group first (cheap when groups are few)
            self.w, self.wt, self.wy, self.wty = (
                np.cumsum(np.add.reduceat(x, starts, axis=1), axis=1) for x in parts
            )

    def curves(self, ends: np.ndarray | slice) -> tuple[np.ndarray, ...]:
        """x, Qini and uplift curves at the given positions, each starting at the origin."""
        k, n_t, y_all, y_t = self.w[:, ends], self.wt[:, ends], self.wy[:, ends], self.wty[:, ends]
        n_c, y_c = k - n_t, y_all - y_t
        n = self.w[:, -1:]
        q = (y_t - y_c * _safe_div(n_t, n_c)) / n
        u = (_safe_div(y_t, n_t) - _safe_div(y_c, n_c)) * k / n
        return _with_origin(k / n), _with_origin(q), _with_origin(u)

    def top_difference(self, y: np.ndarray, t: np.ndarray, k: float) -> np.ndarray:
        """uplift_at_k per resample: the top ceil(k N) copies, the cut row counted in part."""
        cut = np.ceil(k * self.w[:, -1] - 1e-9)  # top_count for every resample
        j = np.minimum((self.w < cut[:, None]).sum(axis=1), self.w.shape[1] - 1)
        rows = np.arange(len(j))
        excess = self.w[rows, j] - cut  # copies of the cut row beyond the top
        n_t = self.wt[rows, j] - excess * t[j]
        y_t = self.wty[rows, j] - excess * t[j] * y[j]
        y_c = self.wy[rows, j] - excess * y[j] - y_t
        n_c = cut - n_t
        with np.errstate(invalid="ignore", divide="ignore"):
            diff = y_t / n_t - y_c / n_c
        return np.where((n_t > 0) & (n_c > 0), diff, np.nan)


def _group_ends(sorted_score: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.r_[sorted_score[1:] != sorted_score[:-1], True])


def _with_origin(values: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((values.shape[0], 1)), values], axis=1)


def _areas_above_random(x: np.ndarray, curve: np.ndarray) -> np.ndarray:
    area = np.sum(np.diff(x, axis=1) * (curve[:, 1:] + curve[:, :-1]) / 2.0, axis=1)
    return area - curve[:, -1] / 2.0


def _weighted_arm_difference(y: np.ndarray, t: np.ndarray, w: np.ndarray) -> np.ndarray:
    """mean(y | t=1) - mean(y | t=0) per resample; NaN where an arm is empty."""
    wt = w * t
    wc = w - wt
    n_t, n_c = wt.sum(axis=1), wc.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = (wt @ y) / n_t - (wc @ y) / n_c
    return np.where((n_t > 0) & (n_c > 0), diff, np.nan)


def _uplift_block(
    y: np.ndarray, t: np.ndarray, s: np.ndarray, w: np.ndarray, grid: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every uplift metric per resample, and the Qini curves interpolated on `grid`."""
    order = np.argsort(-s, kind="stable")
    y_s, t_s = y[order], t[order]
    model = _Sums(y_s, t_s, w[:, order], None)
    x, q, u = model.curves(_group_ends(s[order]))
    oracle = np.where(t == 1, y, -y)
    o_order = np.argsort(-oracle, kind="stable")
    o_ends = _group_ends(oracle[o_order])
    o_starts = np.r_[0, o_ends[:-1] + 1]
    best = _Sums(y[o_order], t[o_order], w[:, o_order], o_starts)
    o_x, _, o_u = best.curves(slice(None))
    best_area = _areas_above_random(o_x, o_u)
    with np.errstate(invalid="ignore", divide="ignore"):
        auuc = np.where(best_area > 0, _areas_above_random(x, u) / best_area, np.nan)
    values = {"qini_coefficient": _areas_above_random(x, q), "auuc_normalized": auuc}
    for k in (10, 20, 30):
        values[f"uplift_at_{k}"] = model.top_difference(y_s, t_s, k / 100)
    values["ate_estimated"] = (w @ s) / w.sum(axis=1)
    values["ate_observed"] = _weighted_arm_difference(y, t, w)
    return values, _interpolate_rows(x, q, grid)


def _uplift_blocks(
    y: ArrayLike, t: ArrayLike, score: ArrayLike, counts: np.ndarray, grid: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    y_arr, t_arr, s_arr = _uplift_inputs(y, t, score)
    counts = _check_counts(counts, len(y_arr))
    blocks = [
        _uplift_block(y_arr, t_arr, s_arr, counts[b].astype(float), grid)
        for b in replicate_blocks(len(counts), len(y_arr))
    ]
    values = {name: np.concatenate([v[name] for v, _ in blocks]) for name in blocks[0][0]}
    return values, np.concatenate([curves for _, curves in blocks])


def uplift_replicates(
    y: ArrayLike, t: ArrayLike, score: ArrayLike, counts: np.ndarray
) -> dict[str, np.ndarray]:
    """Every `uplift_metrics` value on every resample (one array of replicates per metric)."""
    return _uplift_blocks(y, t, score, counts, np.zeros(0))[0]


def uplift_at_k_replicates(
    y: ArrayLike, t: ArrayLike, score: ArrayLike, counts: np.ndarray, k: float
) -> np.ndarray:
    """`uplift_at_k` on every resample (NaN where an arm is empty in its top k), alone."""
    y_arr, t_arr, s_arr = _uplift_inputs(y, t, score)
    counts = _check_counts(counts, len(y_arr))
    top_count(k, len(y_arr))  # checks k
    order = np.argsort(-s_arr, kind="stable")
    y_s, t_s = y_arr[order], t_arr[order]
    return np.concatenate(
        [
            _Sums(y_s, t_s, counts[b][:, order].astype(float), None).top_difference(y_s, t_s, k)
            for b in replicate_blocks(len(counts), len(y_arr))
        ]
    )


def uplift_intervals(
    y: ArrayLike, t: ArrayLike, score: ArrayLike, counts: np.ndarray, level: float = CI_LEVEL
) -> dict[str, float]:
    """`<metric>_ci_low` and `<metric>_ci_high` for every `uplift_metrics` value."""
    return uplift_bootstrap(y, t, score, counts, level)[0]


def uplift_bootstrap(
    y: ArrayLike,
    t: ArrayLike,
    score: ArrayLike,
    counts: np.ndarray,
    level: float = CI_LEVEL,
    grid: ArrayLike | None = None,
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The intervals of `uplift_intervals` and the band of `qini_band` from one pass."""
    g = np.linspace(0.0, 1.0, 101) if grid is None else np.asarray(grid, dtype=float)
    values, curves = _uplift_blocks(y, t, score, counts, g)
    out: dict[str, float] = {}
    for name, replicates in values.items():
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = percentile_interval(replicates, level)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(curves, [tail, 100 - tail], axis=0)
    return out, (g, low, high)


def _interpolate_rows(x: np.ndarray, q: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """np.interp of every row of (x, q) at `grid` in one call: row b is shifted by 2b, which
    keeps the rows' x (all in [0, 1]) apart in one sorted array."""
    rows, points = x.shape
    shift = 2.0 * np.arange(rows)[:, None]
    flat_x = (x + shift).ravel()
    wanted = (grid[None, :] + shift).ravel()
    base = np.repeat(np.arange(rows) * points, len(grid))
    right = np.clip(np.searchsorted(flat_x, wanted, side="left"), base + 1, base + points - 1)
    x0, x1 = flat_x[right - 1], flat_x[right]
    q0, q1 = q.ravel()[right - 1], q.ravel()[right]
    frac = np.divide(wanted - x0, x1 - x0, out=np.zeros_like(wanted), where=x1 > x0)
    return (q0 + np.clip(frac, 0.0, 1.0) * (q1 - q0)).reshape(rows, len(grid))


def qini_band(
    y: ArrayLike,
    t: ArrayLike,
    score: ArrayLike,
    counts: np.ndarray,
    grid: ArrayLike | None = None,
    level: float = CI_LEVEL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise bootstrap band of the Qini curve: (x grid, low, high)."""
    return uplift_bootstrap(y, t, score, counts, level, grid)[1]


def decile_intervals(
    y: ArrayLike,
    t: ArrayLike,
    score: ArrayLike,
    counts: np.ndarray,
    n_bins: int = 10,
    level: float = CI_LEVEL,
) -> list[tuple[float, float]]:
    """(low, high) of the observed uplift per `uplift_by_decile` bin. Bins stay fixed on the
    full ranking: a bin is a set of customers, and the resample asks how well we measured it."""
    y_arr, t_arr, s_arr = _uplift_inputs(y, t, score)
    counts = _check_counts(counts, len(y_arr))
    if not 1 <= n_bins <= len(y_arr):
        raise ValueError(f"n_bins must be between 1 and the number of rows, got {n_bins}")
    order = np.argsort(-s_arr, kind="stable")
    out = []
    for idx in np.array_split(order, n_bins):
        diff = _weighted_arm_difference(y_arr[idx], t_arr[idx], counts[:, idx].astype(float))
        out.append(percentile_interval(diff, level))
    return out
