"""Plots return real PNGs and leave no figures behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml import metrics, plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def trial() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    n = 600
    x = rng.uniform(-1, 1, n)
    tau = 0.2 + 0.3 * x
    t = rng.integers(0, 2, n)
    y = 0.5 * x + t * tau + rng.normal(0, 0.3, n)
    score = tau + rng.normal(0, 0.1, n)
    return y, t, score, tau


def _assert_png(data: bytes) -> None:
    import matplotlib.pyplot as plt

    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5_000
    assert plt.get_fignums() == []


def test_plots_stay_off_pyplot_and_import_matplotlib_lazily():
    # A fresh interpreter: importing must not load matplotlib, plotting must not load pyplot.
    code = (
        "import sys; from ml import plots; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'; "
        "plots.feature_importance_plot(['a', 'b'], [1.0, 2.0]); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_qini_plot(trial):
    y, t, score, _ = trial
    _assert_png(plots.qini_plot(y, t, score, title="test"))


def test_qini_plot_with_oracle(trial):
    y, t, score, tau = trial
    without = plots.qini_plot(y, t, score)
    with_oracle = plots.qini_plot(y, t, score, oracle_score=tau)
    _assert_png(with_oracle)
    assert with_oracle != without


def test_uplift_by_decile_plot(trial):
    y, t, score, _ = trial
    deciles = metrics.uplift_by_decile(y, t, score)
    deciles[3]["observed_uplift"] = None  # an empty arm must still plot
    _assert_png(plots.uplift_by_decile_plot(deciles))


def test_uplift_by_decile_plot_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        plots.uplift_by_decile_plot([])


def test_feature_importance_plot():
    names = [f"feature_{i}" for i in range(30)]
    importances = list(np.random.default_rng(1).uniform(size=30))
    _assert_png(plots.feature_importance_plot(names, importances, top=10))


def test_feature_importance_plot_length_mismatch():
    with pytest.raises(ValueError, match="differ in length"):
        plots.feature_importance_plot(["a", "b"], [1.0])


def test_qini_plot_with_band(trial):
    y, t, score, _ = trial
    band = metrics.qini_band(y, t, score, metrics.bootstrap_counts(t, 50, seed=0))
    with_band = plots.qini_plot(y, t, score, band=band)
    _assert_png(with_band)
    assert with_band != plots.qini_plot(y, t, score)


def test_uplift_by_decile_plot_with_intervals(trial):
    y, t, score, _ = trial
    deciles = metrics.uplift_by_decile(y, t, score)
    counts = metrics.bootstrap_counts(t, 50, seed=0)
    for row, (low, high) in zip(
        deciles, metrics.decile_intervals(y, t, score, counts), strict=True
    ):
        row["observed_ci_low"], row["observed_ci_high"] = low, high
    _assert_png(plots.uplift_by_decile_plot(deciles))


def test_policy_gain_plot(trial):
    from ml import policy

    y, t, score, _ = trial
    curve = policy.policy_curve(y, t, np.full(len(y), 0.5), score, replicates=50)
    treat_all = {
        "gain": curve.treat_all,
        "ci_low": curve.treat_all_ci_low,
        "ci_high": curve.treat_all_ci_high,
    }
    _assert_png(plots.policy_gain_plot(curve.table(), treat_all))
    with pytest.raises(ValueError, match="empty"):
        plots.policy_gain_plot([], treat_all)
