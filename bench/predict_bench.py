"""Per-call cost of predicting a few rows with one XGBoost model: XGBoost's `inplace_predict`,
the direct C call `ml.fastpredict` makes where it has no walk, the numpy tree walk it uses up to
`SMALL_ROWS` rows without AVX-512 (`ml.treewalk`), and the AVX-512 walk it uses for every batch
where it can (`ml.forestkernel`), side by side in one run, as CPU microseconds per call (this
process's CPU time, so other load on the machine does not count).

Usage: .venv/bin/python bench/predict_bench.py [--trees 150] [--depth 6] [--features 30]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _per_call_us(fn, reps: int) -> float:
    for _ in range(min(reps, 50)):
        fn()
    start = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - start) / reps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", type=int, default=150)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--reps", type=int, default=2000)
    args = parser.parse_args()

    from xgboost import XGBRegressor

    from ml import fastpredict, forestkernel, treewalk
    from ml.xgbtrees import read_trees

    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, args.features)).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = np.nan
    y = np.nan_to_num(X[:, 0]) + rng.normal(size=len(X))
    model = XGBRegressor(n_estimators=args.trees, max_depth=args.depth, n_jobs=1).fit(X, y)
    booster = model.get_booster()
    dense = fastpredict._DensePredictor(booster, (0, 0), np.nan, walk=False, vector_walk=False)
    trees = read_trees(booster, (0, 0), "model")
    forest = treewalk.build(trees)
    padded = forestkernel.build(trees)
    if padded is None:
        raise SystemExit("the AVX-512 walk cannot run here (no AVX-512F or no C compiler)")
    print(f"{args.trees} trees, depth {args.depth}, {args.features} features: CPU us per call")
    print(
        "| rows | inplace_predict | C call | numpy walk | AVX-512 walk | walk / C call | AVX-512 / C call |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    results = []
    for rows in (1, 2, 4, 8, 16, 32, 64, 1000):
        Q = X[:rows].copy()
        reps = max(200, args.reps // rows)
        own = _per_call_us(lambda Q=Q: booster.inplace_predict(Q), reps)
        c_call = _per_call_us(lambda Q=Q: dense(Q), reps)
        walk = _per_call_us(lambda Q=Q: treewalk.predict(forest, Q), reps)
        vector = _per_call_us(lambda Q=Q: forestkernel.predict(padded, Q), reps)
        assert np.array_equal(treewalk.predict(forest, Q), dense(Q))
        assert np.array_equal(forestkernel.predict(padded, Q), dense(Q))
        results.append(
            {"rows": rows, "inplace_us": own, "c_call_us": c_call, "walk_us": walk,
             "avx512_us": vector}
        )  # fmt: skip
        print(
            f"| {rows} | {own:.0f} | {c_call:.0f} | {walk:.0f} | {vector:.0f} | "
            f"{walk / c_call:.2f} | {vector / c_call:.2f} |"
        )
    print(json.dumps({"small_rows": fastpredict.SMALL_ROWS, "results": results}))


if __name__ == "__main__":
    main()
