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
    title: str = "Qini curve",
) -> bytes:
    """The model's Qini curve against the random line and, if given, an oracle ranking."""
    figure = _new_figure()
    ax = figure.add_subplot()
    x, q = qini_curve(y, t, score)
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


def uplift_by_decile_plot(deciles: list[dict[str, Any]]) -> bytes:
    """Observed uplift per score bin as bars, the mean predicted uplift as markers."""
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
