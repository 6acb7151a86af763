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
- uplift_at_k = mean(y | t=1) - mean(y | t=0) over the top ceil(k N) rows; ties at the cut are
  broken by row order (stable sort). ValueError if an arm is empty there.
- uplift_by_decile: rows in stable score order split into ``n_bins`` near-equal bins (the first
  N mod n_bins bins get one extra row; tied scores may straddle a bin edge); bin 1 = highest.
- ate_estimated = mean(s); ate_observed = mean(y | t=1) - mean(y | t=0) over all rows.
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


def uplift_at_k(y: ArrayLike, t: ArrayLike, score: ArrayLike, k: float) -> float:
    """Observed uplift among the ceil(k N) highest-scored rows, i.e. if we treated only those."""
    y_arr, t_arr, s_arr = _uplift_inputs(y, t, score)
    if not 0 < k <= 1:
        raise ValueError(f"k must be a fraction in (0, 1], got {k}")
    top = np.argsort(-s_arr, kind="stable")[: math.ceil(k * len(y_arr))]
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
