"""One self-contained HTML page per training run: the figures inline, the key numbers in tables.

People open it from the MLflow UI's artifact view, save it, or mail it: a single file with every
image as a `data:` URI, the CSS inline and no script has nothing to fetch, so it renders the same
everywhere, offline included. Every piece of text goes through `html.escape`, since recipe names,
metric names and rules are user input.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING

import numpy as np

from ml.plots import _new_figure, _png

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

REPORT_FILE = "report.html"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# value, lower and upper bound of its 95% confidence interval (None when there is no interval)
Estimate = tuple[float, float | None, float | None]


@dataclass(frozen=True)
class PolicyRow:
    """Contacting the best-scored `share` of the population, against picking as many at random
    (one row of `ml.policy.PolicyCurve`: share, gain, gain_ci_low/high, random_gain)."""

    share: float  # fraction of the population contacted, in (0, 1]
    gain: float  # incremental outcomes per customer of the whole population
    ci_low: float | None
    ci_high: float | None
    random: float  # the same share picked at random


@dataclass(frozen=True)
class ChampionComparison:
    """The promotion decision and the numbers it rests on (`ml.promotion.Decision`'s fields).

    With no champion yet (the first version takes the alias), `champion` and `difference` are None.
    """

    metric: str
    challenger: Estimate
    rule: str  # e.g. "non_inferior"
    reason: str  # one line, e.g. "promoted to @champion: not worse with 95% confidence (...)"
    promoted: bool
    champion: Estimate | None = None
    difference: Estimate | None = None  # challenger minus champion
    champion_name: str = "champion"
    challenger_name: str = "this run"


@dataclass(frozen=True)
class ReportData:
    """Everything one run's report shows; a section with no data is left out."""

    title: str  # recipe or registered model name, and version
    task: str
    run_id: str = ""
    details: Mapping[str, str] = field(default_factory=dict)  # recipe, data, split sizes, ...
    metrics: Mapping[str, Estimate] = field(default_factory=dict)
    plots: Mapping[str, bytes] = field(default_factory=dict)  # artifact file name -> PNG
    policy: Sequence[PolicyRow] = ()  # a handful of shares, e.g. 10%, 20%, 30%, 50%, 100%
    comparison: ChampionComparison | None = None


# Known figures in the order they are shown: title and how to read it. Others follow by name.
FIGURES: dict[str, tuple[str, str]] = {
    "qini_curve.png": (
        "Qini curve",
        "Customers ranked by predicted uplift, best first. The x axis is the share contacted, the "
        "y axis the incremental outcomes gained per customer. The dotted line is random targeting; "
        "the higher the model's curve above it, the better the ranking. A shaded band is the 95% "
        "confidence interval.",
    ),
    "policy_gain.png": (
        "Policy gain by share contacted",
        "What contacting the best-scored share would gain, with its 95% confidence interval, "
        "against contacting the same number of customers at random. Where the band clears the "
        "random line, the model's targeting is better than chance at that share.",
    ),
    "net_value_vs_budget.png": (
        "Net value against budget",
        "Value of the incremental conversions minus the cost of the contacts, for each budget "
        "(contacts times cost per contact), with its 95% band. The marked point is the budget "
        "with the highest net value; past it each extra contact costs more than it returns. The "
        "dashed line, when drawn, is the campaign's budget (the recipe's evaluation.economics).",
    ),
    "uplift_by_decile.png": (
        "Predicted against observed uplift by decile (held-out data)",
        "Held-out customers in ten equal bins by predicted uplift, best first. Bars are the "
        "observed uplift (treated minus control), markers the mean prediction. A good ranking "
        "falls from left to right; a calibrated model's markers sit on the bars, within their "
        "intervals where drawn.",
    ),
    "feature_importance.png": (
        "Feature importance",
        "The features the model leans on most. Importance is not effect: it says nothing about "
        "the direction or the cause.",
    ),
}

_HOW_TO_READ_METRICS = (
    "Measured on the held-out test split, which the model never saw while training. The interval "
    "is a 95% confidence interval; a dash means none was computed."
)
_HOW_TO_READ_POLICY = (
    "Gain is the number of incremental outcomes per customer of the whole population when the "
    "best-scored share is contacted; random is the same share picked at random."
)
_HOW_TO_READ_COMPARISON = (
    "The decision applies the rule to the 95% interval of the difference, not to the point "
    "estimates: an interval that spans zero means the data cannot tell the two models apart."
)

_CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; color: #222; margin: 24px auto;
       max-width: 1200px; padding: 0 16px; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 4px; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 28px; }
.meta { color: #555; margin: 0 0 8px; }
.how { color: #555; font-size: 0.92em; max-width: 70em; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f4; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 8px 0; }
dt { color: #555; } dd { margin: 0; font-family: "DejaVu Sans Mono", monospace; }
.decision { padding: 8px 12px; border-radius: 4px; display: inline-block; font-weight: bold; }
.promoted { background: #e3f4e8; color: #14532d; }
.kept { background: #f7eaea; color: #7f1d1d; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 16px; }
figure { margin: 0; border: 1px solid #ddd; padding: 8px; }
figure img { width: 100%; height: auto; }
figcaption { font-weight: bold; margin-bottom: 4px; }
"""


def number(value: float | None) -> str:
    """Four significant digits, as everywhere in the report; a dash for a missing value."""
    if value is None:
        return "\u2014"
    if math.isnan(value):
        return "n/a"
    return f"{value:.4g}"


def interval(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "\u2014"
    return f"[{number(low)}, {number(high)}]"


def _amount(value: float) -> str:
    """Money: whole units with thousands separators once large, else four significant digits."""
    return f"{value:,.0f}" if abs(value) >= 1000 else number(value)


def share_percent(share: float) -> str:
    return f"{share * 100:.4g}%"


def render_report(data: ReportData) -> str:
    """The whole report as one HTML document, to log as `REPORT_FILE` (`mlflow.log_text`)."""
    sections = [
        _header(data),
        _comparison(data.comparison) if data.comparison else "",
        _metrics(data.metrics) if data.metrics else "",
        _policy(data.policy) if data.policy else "",
        _figures(data.plots) if data.plots else "",
    ]
    title = escape(f"{data.title} ({data.task})")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(section for section in sections if section)
        + "\n</body>\n</html>\n"
    )


def _header(data: ReportData) -> str:
    meta = f"{data.task} model" + (f" \u00b7 run {data.run_id}" if data.run_id else "")
    details = "".join(
        f"<dt>{escape(key)}</dt><dd>{escape(value)}</dd>" for key, value in data.details.items()
    )
    return f'<h1>{escape(data.title)}</h1>\n<p class="meta">{escape(meta)}</p>\n' + (
        f"<dl>{details}</dl>" if details else ""
    )


def _row(cells: Sequence[str], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{escape(cell)}</{tag}>" for cell in cells) + "</tr>"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], table_id: str) -> str:
    body = "\n".join(_row(row) for row in rows)
    return (
        f'<table id="{table_id}">\n<thead>{_row(head, "th")}</thead>\n'
        f"<tbody>\n{body}\n</tbody>\n</table>"
    )


def _section(section_id: str, heading: str, how_to_read: str, body: str) -> str:
    return (
        f'<section id="{section_id}">\n<h2>{escape(heading)}</h2>\n'
        f'<p class="how">{escape(how_to_read)}</p>\n{body}\n</section>'
    )


def _comparison(c: ChampionComparison) -> str:
    def row(label: str, estimate: Estimate) -> list[str]:
        value, low, high = estimate
        return [label, number(value), interval(low, high)]

    rows = [row(c.challenger_name, c.challenger)]
    if c.champion is not None:
        rows.insert(0, row(c.champion_name, c.champion))
    if c.difference is not None:
        rows.append(row(f"difference ({c.challenger_name} \u2212 {c.champion_name})", c.difference))
    table = _table([c.metric, "value", "95% CI"], rows, "comparison-table")
    verdict, style = ("promoted", "promoted") if c.promoted else ("not promoted", "kept")
    body = (
        f'<p class="decision {style}" id="decision">Decision: {verdict}</p>\n'
        f'<p id="reason">{escape(c.reason)}</p>\n<p id="rule">Rule: {escape(c.rule)}</p>\n{table}'
    )
    return _section("comparison", "Champion comparison", _HOW_TO_READ_COMPARISON, body)


def _metrics(metrics: Mapping[str, Estimate]) -> str:
    rows = [
        [name, number(value), interval(low, high)] for name, (value, low, high) in metrics.items()
    ]
    table = _table(["metric", "value", "95% CI"], rows, "metrics-table")
    return _section("metrics", "Headline metrics", _HOW_TO_READ_METRICS, table)


def _policy(points: Sequence[PolicyRow]) -> str:
    rows = [
        [
            share_percent(p.share),
            number(p.gain),
            interval(p.ci_low, p.ci_high),
            number(p.random),
            number(p.gain - p.random),
        ]
        for p in points
    ]
    head = ["share contacted", "gain per customer", "95% CI", "random", "gain over random"]
    table = _table(head, rows, "policy-table")
    return _section("policy", "Policy gain by share contacted", _HOW_TO_READ_POLICY, table)


def _figures(plots: Mapping[str, bytes]) -> str:
    known = [name for name in FIGURES if name in plots]
    names = known + sorted(name for name in plots if name not in FIGURES)
    figures = []
    for name in names:
        png = plots[name]
        if not png.startswith(PNG_SIGNATURE):
            raise ValueError(f"plot '{name}' is not a PNG image")
        title, how_to_read = FIGURES.get(name, (name, ""))
        src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        figures.append(
            f'<figure id="{escape(name)}">\n<figcaption>{escape(title)}</figcaption>\n'
            f'<img src="{src}" alt="{escape(title)}">\n'
            + (f'<p class="how">{escape(how_to_read)}</p>\n' if how_to_read else "")
            + "</figure>"
        )
    body = '<div class="figures">\n' + "\n".join(figures) + "\n</div>"
    return f'<section id="figures">\n<h2>Figures</h2>\n{body}\n</section>'


def _checked_shares(shares: ArrayLike) -> np.ndarray:
    s = np.asarray(shares, dtype=float)
    if s.ndim != 1 or s.size == 0:
        raise ValueError("shares must be a non-empty 1-D sequence")
    if not np.all((s >= 0) & (s <= 1)):
        raise ValueError("shares must be fractions between 0 and 1")
    return s


def _checked_curve(name: str, values: ArrayLike, shares: np.ndarray) -> np.ndarray:
    curve = np.asarray(values, dtype=float)
    if curve.shape != shares.shape:
        raise ValueError(f"{name} has {curve.size} values, shares has {shares.size}")
    if not np.all(np.isfinite(curve)):
        raise ValueError(f"{name} has NaN or infinite values")
    return curve


def net_value(
    shares: ArrayLike,
    gain_per_customer: ArrayLike,
    *,
    population: int,
    value_per_conversion: float,
    cost_per_contact: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Budget and net value of contacting each best-scored share of the population.

    `gain_per_customer` is the policy-gain curve: incremental conversions per customer of the whole
    population (the Qini curve's y axis), not per contacted customer. Contacting share s of N
    customers costs s N c and returns N v gain(s), so the net value is N (v gain(s) - c s).
    """
    s = _checked_shares(shares)
    gain = _checked_curve("gain_per_customer", gain_per_customer, s)
    if population < 1:
        raise ValueError(f"population must be at least 1, got {population}")
    if not (math.isfinite(cost_per_contact) and cost_per_contact > 0):
        raise ValueError(f"cost_per_contact must be positive, got {cost_per_contact}")
    if not math.isfinite(value_per_conversion):
        raise ValueError(f"value_per_conversion must be finite, got {value_per_conversion}")
    budget = s * population * cost_per_contact
    return budget, population * (value_per_conversion * gain - cost_per_contact * s)


def _at(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
    """`ys` at `x` on the piecewise-linear curve through (xs, ys) from (0, 0); past the last
    point the curve stays flat (no more customers to contact)."""
    return float(np.interp(x, np.concatenate([[0.0], xs]), np.concatenate([[0.0], ys])))


def net_value_plot(
    shares: ArrayLike,
    gain_per_customer: ArrayLike,
    ci_low: ArrayLike | None = None,
    ci_high: ArrayLike | None = None,
    *,
    population: int,
    value_per_conversion: float,
    cost_per_contact: float,
    random_gain: ArrayLike | None = None,
    budget: float | None = None,
) -> bytes:
    """Net value against budget (see `net_value`), its 95% band from the gain's interval (the costs
    are known exactly), random targeting if `random_gain` is given, the best budget marked, and
    `budget` (the campaign's money) as a vertical line when given."""
    if (ci_low is None) != (ci_high is None):
        raise ValueError("give both ci_low and ci_high, or neither")
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"budget must be positive, got {budget}")
    s = _checked_shares(shares)

    def net(name: str, curve: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        gain = _checked_curve(name, curve, s)
        return net_value(
            s,
            gain,
            population=population,
            value_per_conversion=value_per_conversion,
            cost_per_contact=cost_per_contact,
        )

    spend, value = net("gain_per_customer", gain_per_customer)
    figure = _new_figure()
    ax = figure.add_subplot()
    ax.plot(spend, value, color="tab:green", label="model targeting")
    if ci_low is not None and ci_high is not None:
        low, high = net("ci_low", ci_low)[1], net("ci_high", ci_high)[1]
        ax.fill_between(spend, low, high, color="tab:green", alpha=0.2, label="95% CI")
    if random_gain is not None:
        random = net("random_gain", random_gain)[1]
        ax.plot(spend, random, color="grey", linestyle=":", label="random targeting")
    best = int(np.argmax(value))
    ax.scatter(
        [spend[best]],
        [value[best]],
        color="black",
        zorder=3,
        label=f"best: budget {_amount(float(spend[best]))}, net {_amount(float(value[best]))}"
        f" ({share_percent(float(s[best]))} contacted)",
    )
    if budget is not None:
        ax.axvline(
            budget,
            color="tab:red",
            linestyle="--",
            label=f"campaign budget {_amount(budget)}: net {_amount(_at(budget, spend, value))}",
        )
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel(f"budget (contacts \u00d7 {number(cost_per_contact)} per contact)")
    ax.set_ylabel(f"net value (conversions \u00d7 {number(value_per_conversion)} \u2212 cost)")
    ax.set_title("Net value against budget")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return _png(figure)
