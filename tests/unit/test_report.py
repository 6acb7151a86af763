"""The run report: one self-contained, escaped HTML page; the net value curve and its figure.

tests/integration/test_report_browser.py renders the same page in a real browser.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from ml import plots
from ml.recipe import MAX_AMOUNT, MAX_POPULATION, MIN_CONTACT_COST
from ml.report import (
    ChampionComparison,
    PolicyRow,
    ReportData,
    interval,
    net_value,
    net_value_plot,
    number,
    render_report,
    share_percent,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[2]
HOSTILE = "<script>alert(\"x\")</script> & 'quotes'"


@pytest.fixture(scope="module")
def png() -> bytes:
    return plots.feature_importance_plot(["a", "b"], [1.0, 2.0])


def _data(png: bytes, **changes: object) -> ReportData:
    fields: dict[str, object] = {
        "title": "uplift v3",
        "task": "uplift",
        "run_id": "abc123",
        "metrics": {"qini_coefficient": (0.123456, 0.1, 0.15), "auuc": (0.5, None, None)},
        "plots": {"uplift_by_decile.png": png, "qini_curve.png": png, "zzz.png": png},
        "policy": [PolicyRow(0.3, 0.0213579, 0.0171, 0.0256, 0.00903)],
        "comparison": ChampionComparison(
            metric="qini_coefficient",
            champion=(0.1, 0.09, 0.11),
            challenger=(0.123456, 0.1, 0.15),
            difference=(0.023456, -0.001, 0.048),
            rule="superior",
            reason="not promoted to @champion: not better with 95% confidence",
            promoted=False,
        ),
    }
    fields.update(changes)
    return ReportData(**fields)  # type: ignore[arg-type]


def test_numbers_have_four_significant_digits():
    assert number(0.123456) == "0.1235"
    assert number(12345.678) == "1.235e+04"
    assert number(0.2) == "0.2"
    assert number(float("nan")) == "n/a"
    assert number(None) == "\u2014"
    assert interval(0.0171, 0.02561) == "[0.0171, 0.02561]"
    assert interval(None, 1.0) == "\u2014"
    assert share_percent(0.3) == "30%"
    assert share_percent(0.125) == "12.5%"


def test_report_is_one_document_with_every_image_inline(png):
    document = render_report(_data(png))

    assert document.startswith("<!DOCTYPE html>")
    sources = re.findall(r'<img src="([^"]*)"', document)
    assert len(sources) == 3
    for src in sources:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :]) == png
    # nothing to fetch and nothing to run
    assert "http" not in document.lower()
    assert "<script" not in document.lower()
    assert "<link" not in document.lower()


def test_report_shows_the_key_numbers_and_the_decision(png):
    document = render_report(_data(png))

    assert "<td>qini_coefficient</td><td>0.1235</td><td>[0.1, 0.15]</td>" in document
    assert "<td>auuc</td><td>0.5</td><td>\u2014</td>" in document
    assert "<td>30%</td><td>0.02136</td><td>[0.0171, 0.0256]</td><td>0.00903</td>" in document
    assert "<td>0.02346</td><td>[-0.001, 0.048]</td>" in document
    assert '<p class="decision kept" id="decision">Decision: not promoted</p>' in document
    assert "not promoted to @champion: not better with 95% confidence" in document
    assert "Rule: superior" in document
    assert "abc123" in document


def test_a_first_version_has_no_champion_to_compare_with(png):
    first = ChampionComparison(
        metric="qini_coefficient",
        challenger=(0.12, 0.1, 0.14),
        rule="non_inferior",
        reason="@champion had no holder: the first version takes it",
        promoted=True,
    )
    document = render_report(_data(png, comparison=first))

    table = document[document.index('<table id="comparison-table">') :]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == 2  # the header and this run
    assert "<td>this run</td><td>0.12</td><td>[0.1, 0.14]</td>" in table
    assert "Decision: promoted" in document


def test_known_figures_come_first_in_reading_order_then_the_rest_by_name(png):
    document = render_report(_data(png))

    order = re.findall(r'<figure id="([^"]*)"', document)
    assert order == ["qini_curve.png", "uplift_by_decile.png", "zzz.png"]
    assert "<figcaption>Qini curve</figcaption>" in document


def test_sections_without_data_are_left_out(png):
    document = render_report(
        ReportData(title="m", task="classification", metrics={"roc_auc": (0.8, 0.78, 0.82)})
    )

    assert 'id="metrics"' in document
    for absent in ('id="comparison"', 'id="policy"', 'id="figures"', "<img"):
        assert absent not in document


def test_every_text_is_escaped(png):
    comparison = ChampionComparison(
        metric=HOSTILE,
        champion=(1.0, None, None),
        challenger=(2.0, None, None),
        difference=(1.0, None, None),
        rule=HOSTILE,
        reason=HOSTILE,
        promoted=True,
        champion_name=HOSTILE,
        challenger_name=HOSTILE,
    )
    document = render_report(
        _data(
            png,
            title=HOSTILE,
            task=HOSTILE,
            run_id=HOSTILE,
            details={HOSTILE: HOSTILE},
            metrics={HOSTILE: (1.0, None, None)},
            plots={HOSTILE: png},
            comparison=comparison,
        )
    )

    assert "<script" not in document
    assert "'quotes'" not in document
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;quotes&#x27;" in document


def test_a_plot_that_is_not_a_png_is_refused(png):
    with pytest.raises(ValueError, match="'broken.png' is not a PNG"):
        render_report(_data(png, plots={"broken.png": b"<svg/>"}))


def test_net_value_is_value_of_incremental_conversions_minus_contact_costs():
    budget, value = net_value(
        [0.5, 1.0],
        [0.02, 0.03],
        population=1000,
        value_per_conversion=40.0,
        cost_per_contact=0.5,
    )

    np.testing.assert_allclose(budget, [250.0, 500.0])
    np.testing.assert_allclose(value, [1000 * (0.8 - 0.25), 1000 * (1.2 - 0.5)])


def test_net_value_plot_is_a_png_and_loads_matplotlib_lazily_without_pyplot():
    code = (
        "import sys; from ml.report import net_value_plot; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'; "
        "png = net_value_plot([0.1, 0.5, 1.0], [0.01, 0.02, 0.022], [0.005, 0.015, 0.017], "
        "[0.015, 0.025, 0.027], population=1000, value_per_conversion=40.0, "
        "cost_per_contact=0.5, random_gain=[0.0022, 0.011, 0.022]); "
        "assert png[:8] == b'\\x89PNG\\r\\n\\x1a\\n' and len(png) > 5000, len(png); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("value", [0.0, MAX_AMOUNT])
@pytest.mark.parametrize("cost", [MIN_CONTACT_COST, MAX_AMOUNT])
@pytest.mark.parametrize("population", [1, MAX_POPULATION])
def test_net_value_plot_draws_the_recipe_bounds_without_warnings(value, cost, population):
    """The corners of what a recipe's economics may be (ml/recipe.py) draw cleanly: beyond them
    the arithmetic overflowed and matplotlib failed on a singular transform."""
    shares = np.linspace(0.01, 1.0, 100)
    gain = np.sqrt(shares) * 0.03 - shares * 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for budget in (MIN_CONTACT_COST, MAX_AMOUNT):
            png = net_value_plot(
                shares, gain, gain - 0.01, gain + 0.01, population=population,
                value_per_conversion=value, cost_per_contact=cost,
                random_gain=shares * gain[-1], budget=budget,
            )  # fmt: skip
            assert png.startswith(PNG_SIGNATURE)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"gain_per_customer": [0.1]}, "gain_per_customer has 1 values, shares has 2"),
        ({"ci_low": [0.0, 0.1]}, "give both ci_low and ci_high"),
        ({"ci_low": [0.0], "ci_high": [0.1, 0.2]}, "ci_low has 1 values"),
        ({"random_gain": [0.0, float("nan")]}, "random_gain has NaN"),
        ({"shares": [0.5, 1.5]}, "fractions between 0 and 1"),
        ({"shares": []}, "non-empty"),
        ({"cost_per_contact": 0.0}, "cost_per_contact must be positive"),
        ({"population": 0}, "population must be at least 1"),
        ({"value_per_conversion": float("inf")}, "value_per_conversion must be finite"),
        ({"budget": 0.0}, "budget must be positive"),
        ({"budget": float("nan")}, "budget must be positive"),
    ],
)
def test_net_value_plot_refuses_inconsistent_inputs(changes, message):
    arguments: dict[str, object] = {
        "shares": [0.5, 1.0],
        "gain_per_customer": [0.02, 0.03],
        "population": 1000,
        "value_per_conversion": 40.0,
        "cost_per_contact": 0.5,
    }
    arguments.update(changes)
    with pytest.raises(ValueError, match=message):
        net_value_plot(**arguments)  # type: ignore[arg-type]


def test_evaluation_draws_net_value_only_for_a_recipe_with_economics():
    from ml.evaluate import evaluate
    from ml.recipe import Economics, EvaluationSpec

    rng = np.random.default_rng(3)
    n = 1200
    x = rng.uniform(-1, 1, n)
    t = rng.integers(0, 2, n).astype(float)
    y = (rng.uniform(size=n) < 0.2 + t * (0.1 + 0.1 * x)).astype(float)
    score = 0.1 + 0.1 * x + rng.normal(0, 0.05, n)
    spec = EvaluationSpec(bootstrap_replicates=50)
    without = evaluate("uplift", y, score, t, spec=spec, population=n)
    with_money = evaluate(
        "uplift",
        y,
        score,
        t,
        spec=spec.model_copy(
            update={"economics": Economics(value_per_conversion=40, cost_per_contact=0.5)}
        ),
        population=n,
    )

    assert "net_value_vs_budget.png" not in without.plots
    png = with_money.plots["net_value_vs_budget.png"]
    assert png.startswith(PNG_SIGNATURE) and len(png) > 5000
    assert with_money.metrics == without.metrics
