"""Report figures as PNG bytes, ready to log as MLflow artifacts or serve over HTTP.

Figures are built on matplotlib's object API with the Agg canvas, never through pyplot: pyplot
keeps global state, is not thread-safe under a web server, and would switch the backend of a
notebook that imports us. matplotlib itself is imported inside each function so `ml --help` stays
fast.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from ml.metrics import qini_coefficient, qini_curve

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike


def _new_figure(width: float = 6.4, height: float = 4.8) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", bbox_inches="tight")
    finally:
        # Drop the artists now rather than waiting for the garbage collector.
        figure.clear()
    return buffer.getvalue()


def qini_plot(
    y: ArrayLike,
    t: ArrayLike,
    score: ArrayLike,
    *,
    oracle_score: ArrayLike | None = None,
    band: tuple[ArrayLike, ...] | None = None,
    title: str = "Qini curve",
) -> bytes:
    """The model's Qini curve against the random line and, if given, an oracle ranking and a
    pointwise confidence band (x, low, high), e.g. `ml.metrics.qini_band`'s."""
    figure = _new_figure()
    ax = figure.add_subplot()
    x, q = qini_curve(y, t, score)
    if band is not None:
        band_x, low, high = band
        ax.fill_between(band_x, low, high, alpha=0.2, linewidth=0, label="95% bootstrap band")
    ax.plot(x, q, label=f"model (Qini coefficient {qini_coefficient(y, t, score):.4f})")
    if oracle_score is not None:
        x_o, q_o = qini_curve(y, t, oracle_score)
        coefficient = qini_coefficient(y, t, oracle_score)
        ax.plot(x_o, q_o, linestyle="--", label=f"oracle (Qini coefficient {coefficient:.4f})")
    ax.plot([0.0, 1.0], [0.0, q[-1]], color="grey", linestyle=":", label="random")
    ax.set_xlabel("fraction of population targeted")
    ax.set_ylabel("incremental outcomes per row")
    ax.set_xlim(0.0, 1.0)
    ax.set_title(title)
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return _png(figure)


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def uplift_by_decile_plot(deciles: list[dict[str, Any]]) -> bytes:
    """Observed uplift per score bin as bars (with their intervals when the rows carry
    `observed_ci_low/high`), the mean predicted uplift as markers."""
    if not deciles:
        raise ValueError("deciles is empty")
    bins = [int(row["bin"]) for row in deciles]
    observed = [
        float("nan") if row["observed_uplift"] is None else float(row["observed_uplift"])
        for row in deciles
    ]
    predicted = [float(row["mean_score"]) for row in deciles]
    figure = _new_figure()
    ax = figure.add_subplot()
    ax.bar(bins, observed, color="tab:blue", alpha=0.7, label="observed uplift")
    if all("observed_ci_low" in row for row in deciles):
        low = [_number(row["observed_ci_low"]) for row in deciles]
        high = [_number(row["observed_ci_high"]) for row in deciles]
        centre = [(lo + hi) / 2 for lo, hi in zip(low, high, strict=True)]
        half = [(hi - lo) / 2 for lo, hi in zip(low, high, strict=True)]
        ax.errorbar(
            bins,
            centre,
            yerr=half,
            fmt="none",
            ecolor="black",
            capsize=3,
            label="95% bootstrap interval",
        )
    ax.plot(bins, predicted, color="tab:orange", marker="o", label="mean predicted uplift")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xticks(bins)
    ax.set_xlabel("score bin (1 = highest predicted uplift)")
    ax.set_ylabel("uplift")
    ax.set_title("Uplift by score bin")
    ax.legend(loc="best")
    return _png(figure)


def feature_importance_plot(names: list[str], importances: list[float], top: int = 20) -> bytes:
    """The `top` most important features as horizontal bars, largest at the top."""
    if len(names) != len(importances):
        raise ValueError(
            f"names and importances differ in length: {len(names)} != {len(importances)}"
        )
    if not names:
        raise ValueError("no features to plot")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    ranked = sorted(zip(names, importances, strict=True), key=lambda pair: pair[1], reverse=True)
    ranked = ranked[:top][::-1]  # barh draws bottom-up; keep the largest at the top
    figure = _new_figure(height=max(2.0, 0.3 * len(ranked) + 1.0))
    ax = figure.add_subplot()
    ax.barh([name for name, _ in ranked], [float(value) for _, value in ranked])
    ax.set_xlabel("importance")
    ax.set_title(f"Feature importance (top {len(ranked)})")
    return _png(figure)


def policy_gain_plot(curve: list[dict[str, Any]], treat_all: dict[str, float]) -> bytes:
    """Gain per customer of targeting the top share by score, with its band, against random
    targeting of the same share and treating everyone (rows of `PolicyCurve.table()`)."""
    if not curve:
        raise ValueError("curve is empty")
    share = [float(row["share"]) for row in curve]
    figure = _new_figure()
    ax = figure.add_subplot()
    ax.fill_between(
        share,
        [float(row["gain_ci_low"]) for row in curve],
        [float(row["gain_ci_high"]) for row in curve],
        alpha=0.2,
        linewidth=0,
        label="model: 95% bootstrap band",
    )
    ax.plot(share, [float(row["gain"]) for row in curve], label="target top share by score")
    ax.plot(
        share,
        [float(row["random_gain"]) for row in curve],
        color="grey",
        linestyle=":",
        label="random targeting",
    )
    low, high = float(treat_all["ci_low"]), float(treat_all["ci_high"])
    gain = float(treat_all["gain"])
    ax.errorbar(
        [1.0],
        [gain],
        yerr=[[gain - low], [high - gain]],
        fmt="o",
        color="black",
        capsize=4,
        label="treat everyone",
    )
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlim(0.0, 1.02)
    ax.set_xlabel("share of customers treated (highest scores first)")
    ax.set_ylabel("incremental outcome per customer vs treating nobody")
    ax.set_title("Policy value on held-out randomized rows (IPW)")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return _png(figure)


def optimization_history_plot(
    numbers: list[int], values: list[float], metric: str, maximize: bool
) -> bytes:
    """`ml tune`'s study: each completed trial's cross-validated value, and the best so far."""
    if not numbers:
        raise ValueError("no completed trial to plot")
    best: list[float] = []
    for value in values:
        prior = best[-1] if best else value
        best.append(max(prior, value) if maximize else min(prior, value))
    figure = _new_figure()
    ax = figure.add_subplot()
    ax.scatter(numbers, values, color="tab:blue", label="trial (mean over folds)")
    ax.step(numbers, best, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"Optimization history ({'maximize' if maximize else 'minimize'} {metric})")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return _png(figure)
