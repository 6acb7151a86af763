"""The run report in a real headless browser: every figure decodes, the key numbers are on the page.

The report has no script; the test's own copy gets one that writes each image's decoded size into
the title, so the dumped DOM says what the browser made of every `data:` image.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from pathlib import Path

import browser  # tests/integration/browser.py
import numpy as np
import pytest

from ml import metrics, plots
from ml.report import (
    FIGURES,
    ChampionComparison,
    PolicyRow,
    ReportData,
    net_value_plot,
    render_report,
)

# Counts the images the browser decoded, after load, into the title: [[width, height], ...].
IMAGE_PROBE = """<script>
window.addEventListener("load", function () {
  document.title = JSON.stringify(Array.from(document.images, function (img) {
    return img.complete ? [img.naturalWidth, img.naturalHeight] : [0, 0];
  }));
});
</script>
"""
SHARES = [0.1, 0.2, 0.3, 0.5, 1.0]
GAINS = [0.0121, 0.0183, 0.0213579, 0.0262, 0.0301]
LOWS = [0.0087, 0.0142, 0.0171, 0.0214, 0.0248]
HIGHS = [0.0155, 0.0224, 0.0256, 0.0310, 0.0354]
RANDOM = [0.00301, 0.00602, 0.00903, 0.01505, 0.0301]


def _png_size(png: bytes) -> list[int]:
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    return [width, height]


def _policy_gain_png(color: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.plot(SHARES, GAINS, color=color, marker="o", label="model")
    ax.fill_between(SHARES, LOWS, HIGHS, color=color, alpha=0.2, label="95% CI")
    ax.plot(SHARES, RANDOM, color="grey", linestyle=":", label="random")
    ax.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def report() -> ReportData:
    rng = np.random.default_rng(0)
    n = 2000
    x = rng.uniform(-1, 1, n)
    tau = 0.2 + 0.3 * x
    t = rng.integers(0, 2, n)
    y = 0.5 * x + t * tau + rng.normal(0, 0.3, n)
    score = tau + rng.normal(0, 0.1, n)
    # Each figure draws in a colour of its own, for the screenshot test to find.
    figures = {
        # a name the report does not know: shown last, under its file name
        "extra_diagnostics.png": _policy_gain_png("tab:cyan"),
        "uplift_by_decile.png": plots.uplift_by_decile_plot(metrics.uplift_by_decile(y, t, score)),
        "qini_curve.png": plots.qini_plot(y, t, score),
        "policy_gain.png": _policy_gain_png("tab:purple"),
        "net_value_vs_budget.png": net_value_plot(
            SHARES,
            GAINS,
            LOWS,
            HIGHS,
            population=50_000,
            value_per_conversion=40.0,
            cost_per_contact=0.5,
            random_gain=RANDOM,
        ),
    }
    return ReportData(
        title="xgboost_x_learner v7 <b>&",
        task="uplift",
        run_id="0123456789abcdef",
        details={"recipe": "recipes/xgboost_x_learner.yaml", "held-out rows": "10000"},
        metrics={
            "qini_coefficient": (0.123456, 0.101234, 0.145678),
            "uplift_at_30": (0.0421987, 0.0312, 0.0533),
            "ate_estimated": (0.2, None, None),
        },
        plots=figures,
        policy=[
            PolicyRow(share, gain, low, high, rand)
            for share, gain, low, high, rand in zip(SHARES, GAINS, LOWS, HIGHS, RANDOM, strict=True)
        ],
        comparison=ChampionComparison(
            metric="qini_coefficient",
            champion=(0.101, 0.0903, 0.112),
            challenger=(0.123456, 0.101234, 0.145678),
            difference=(0.022456, 0.00513, 0.0399),
            rule="superior",
            reason="promoted to @champion: better with 95% confidence",
            promoted=True,
            champion_name="champion v6",
        ),
    )


def test_report_renders_in_chromium_with_every_figure_and_the_key_numbers(
    report: ReportData, tmp_path: Path
) -> None:
    document = render_report(report)
    probed = tmp_path / "probed.html"
    probed.write_text(document.replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")

    page = browser.parse(browser.dump_dom(probed, tmp_path / "profile-dom"))

    # every figure is inline and the browser decoded it at its own size
    assert len(page.images) == len(report.plots)
    assert all(img["src"].startswith("data:image/png;base64,") for img in page.images)
    assert json.loads(page.title) == [_png_size(png) for png in _ordered(report.plots)]
    assert page.scripts == 1, "the report must carry no script of its own"

    # the key numbers, as people read them
    assert "xgboost_x_learner v7 <b>&" in page.text  # escaped, so shown as typed
    assert "0123456789abcdef" in page.text
    assert "qini_coefficient 0.1235 [0.1012, 0.1457]" in page.by_id["metrics-table"]
    assert "ate_estimated 0.2 \u2014" in page.by_id["metrics-table"]
    assert "30% 0.02136 [0.0171, 0.0256] 0.00903 0.01233" in page.by_id["policy-table"]
    assert "0.02246 [0.00513, 0.0399]" in page.by_id["comparison-table"]
    assert page.by_id["decision"] == "Decision: promoted"
    assert page.by_id["reason"] == "promoted to @champion: better with 95% confidence"
    for name in report.plots:
        assert name in page.by_id  # each figure in its own <figure id=...>


def test_report_screenshot_shows_the_figures(report: ReportData, tmp_path: Path) -> None:
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(render_report(report), encoding="utf-8")
    shot = browser.screenshot(
        page, tmp_path / "shot.png", tmp_path / "profile-shot", width=1200, height=3000
    )

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape == (3000, 1200, 3)
    not_white = (pixels < 245).any(axis=2).mean()
    assert not_white > 0.05, f"the page looks blank ({not_white:.1%} of pixels drawn)"
    # The page's own CSS uses none of these: pixels in them come from the figures themselves.
    for name, rgb in {
        "qini (tab:blue)": (31, 119, 180),
        "uplift by decile (tab:orange)": (255, 127, 14),
        "policy gain (tab:purple)": (148, 103, 189),
        "net value (tab:green)": (44, 160, 44),
        "extra_diagnostics.png (tab:cyan)": (23, 190, 207),
    }.items():
        close = (np.abs(pixels - np.array(rgb)).max(axis=2) <= 30).sum()
        assert close > 200, f"{name}: only {close} pixels of that colour, the figure did not draw"


def _ordered(plots_by_name: Mapping[str, bytes]) -> list[bytes]:
    """The figures in the report's order: the known ones as FIGURES lists them, then by name."""
    names = [name for name in FIGURES if name in plots_by_name]
    names += sorted(name for name in plots_by_name if name not in FIGURES)
    return [plots_by_name[name] for name in names]


def test_the_trained_runs_own_report_shows_its_figures_and_numbers(
    trained_x_learner, settings, tmp_path: Path
) -> None:
    """The report the demo's training run logged, as MLflow serves it: every figure it names
    decodes, net value against the campaign's budget among them, and its metrics are shown."""
    import mlflow

    run_dir = Path(
        mlflow.artifacts.download_artifacts(
            run_id=trained_x_learner.run_id,
            artifact_path="report",
            dst_path=str(tmp_path / "run"),
            tracking_uri=settings.mlflow.tracking_uri,
        )
    )
    document = (run_dir / "report.html").read_text(encoding="utf-8")
    probed = tmp_path / "probed.html"
    probed.write_text(document.replace("</body>", IMAGE_PROBE + "</body>"), encoding="utf-8")

    page = browser.parse(browser.dump_dom(probed, tmp_path / "profile-run"))

    for name in (
        "qini_curve.png",
        "policy_gain.png",
        "net_value_vs_budget.png",
        "uplift_by_decile.png",
    ):
        assert name in page.by_id, name
    sizes = json.loads(page.title)
    assert len(sizes) == len(page.images) >= 5
    assert all(width > 300 and height > 200 for width, height in sizes), sizes
    metrics = (
        mlflow.MlflowClient(settings.mlflow.tracking_uri)
        .get_run(trained_x_learner.run_id)
        .data.metrics
    )
    gain = metrics["policy_gain_at_30"]
    assert f"policy_gain_at_30 {gain:.4g}" in page.by_id["metrics-table"]
    assert "40.00 per conversion, 0.05 per contact, budget 300.00" in page.text
