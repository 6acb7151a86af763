"""CPU cost of an uplift run's held-out evaluation, part by part.

`ml train`'s "evaluating" step does, on the held-out rows: the point metrics (Qini, AUUC,
uplift@k, ATE), their bootstrap intervals (`evaluation.bootstrap_replicates` resamples within
arms, plus the Qini band), the per-decile intervals, the IPW policy value at the recipe's shares
and on the fine 1% grid (whole-row resamples), the calibration slope, and the plots. This times
each part on the same synthetic held-out rows (a randomized 50/50 assignment, a score that
carries the effect), as process CPU seconds, median of `--repeat` runs, so the machine's other
load does not count. `evaluate()` as a whole is timed too, with and without plots.

Usage: .venv/bin/python bench/evaluate_bench.py [--rows 8556] [--replicates 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _cpu(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return round(statistics.median(times), 3)


def measure(n: int, reps: int, repeat: int) -> dict[str, float]:
    """Median process CPU seconds of each part, on `n` synthetic held-out rows."""
    from ml import metrics as m
    from ml import plots, policy
    from ml.evaluate import evaluate
    from ml.recipe import Economics, EvaluationSpec

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, n)
    t = rng.integers(0, 2, n).astype(float)
    y = (rng.uniform(size=n) < 0.15 + t * (0.03 + 0.03 * x)).astype(float)
    score = 0.03 + 0.03 * x + rng.normal(0, 0.02, n)
    p = np.full(n, 0.5)
    spec = EvaluationSpec(bootstrap_replicates=reps)
    shares = sorted({*spec.policy_shares, spec.decision_share})
    counts = m.bootstrap_counts(t, reps, 0)
    rows = policy.policy_counts(n, reps, 0)
    curve = policy.policy_curve(y, t, p, score, policy.FINE_SHARES, counts=rows).table()
    with_money = spec.model_copy(
        update={"economics": Economics(value_per_conversion=40, cost_per_contact=0.05)}
    )
    # warm: imports and first-call costs are not what is being measured
    evaluate("uplift", y, score, t, propensity=p, spec=with_money, population=n)

    parts = {
        "point metrics": lambda: m.uplift_metrics(y, t, score),
        "bootstrap intervals + Qini band": lambda: m.uplift_bootstrap(y, t, score, counts),
        "decile intervals": lambda: m.decile_intervals(y, t, score, counts),
        "policy value at the recipe's shares": lambda: policy.policy_curve(
            y, t, p, score, shares, counts=rows
        ),
        "policy value on the 1% grid": lambda: policy.policy_curve(
            y, t, p, score, policy.FINE_SHARES, counts=rows
        ),
        "calibration slope": lambda: policy.blp_slope(y, t, p, score, rows),
        "Qini plot with band": lambda: plots.qini_plot(
            y, t, score, band=m.uplift_bootstrap(y, t, score, counts)[1]
        ),
        "policy gain plot": lambda: plots.policy_gain_plot(
            curve, {"gain": 0.045, "ci_low": 0.04, "ci_high": 0.05}
        ),
        "evaluate(), no plots": lambda: evaluate(
            "uplift", y, score, t, propensity=p, spec=spec, plots=False
        ),
        "evaluate(), all plots incl. net value": lambda: evaluate(
            "uplift", y, score, t, propensity=p, spec=with_money, population=n
        ),
    }
    return {name: _cpu(fn, repeat) for name, fn in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8556)  # the demo's test split
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n, reps = args.rows, args.replicates
    result = measure(n, reps, args.repeat)
    print(
        json.dumps(
            {"rows": n, "replicates": reps, "repeat": args.repeat, "cpu_s_median": result},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
