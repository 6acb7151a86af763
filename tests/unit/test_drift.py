from __future__ import annotations

import numpy as np
import pyarrow as pa

from ml.drift import DriftAccumulator, psi, reference_profile


def test_psi_by_hand() -> None:
    # (0.5-0.25)ln(0.5/0.25) + (0.5-0.75)ln(0.5/0.75) = 0.25 ln 2 + 0.25 ln 1.5
    assert (
        abs(
            psi(np.array([0.25, 0.75]), np.array([0.5, 0.5]))
            - (0.25 * np.log(2) + 0.25 * np.log(1.5))
        )
        < 1e-12
    )
    assert psi(np.array([0.3, 0.7]), np.array([0.3, 0.7])) == 0.0


def test_same_distribution_no_drift_shifted_distribution_flagged() -> None:
    rng = np.random.default_rng(1)
    profile = reference_profile(
        {"x": rng.normal(size=20_000), "c": ["a", "b"] * 10_000}, {"x": "float", "c": "string"}
    )
    same = DriftAccumulator(profile)
    for _ in range(4):  # batch by batch, as scoring streams
        same.add({"x": rng.normal(size=2_500), "c": ["a", "b"] * 1_250})
    report = same.report()
    assert report["x"]["psi"] < 0.02 and not report["x"]["drifted"] and report["c"]["psi"] < 1e-9

    shifted = DriftAccumulator(profile)
    shifted.add(
        {
            "x": rng.normal(loc=1.0, size=5_000),
            "c": pa.chunked_array([pa.array(["a", "zzz"] * 2_500)]),
        }
    )
    report = shifted.report()
    assert report["x"]["drifted"] and report["c"]["drifted"]  # unseen category counts as drift


def test_nulls_have_their_own_bin() -> None:
    profile = reference_profile({"x": np.array([1.0, 2.0, np.nan, np.nan])}, {"x": "float"})
    acc = DriftAccumulator(profile)
    acc.add({"x": np.array([np.nan] * 4)})
    assert acc.report()["x"]["drifted"]


def test_sampling_every_kth_row_counts_a_systematic_sample() -> None:
    profile = reference_profile(
        {"x": np.arange(100.0), "c": ["a"] * 50 + ["b"] * 50}, {"x": "float", "c": "string"}
    )
    acc = DriftAccumulator(profile, sample_every=10)
    acc.add({"x": np.arange(100.0), "c": pa.chunked_array([pa.array(["a"] * 50 + ["b"] * 50)])})
    assert acc.counts["x"].sum() == 10 and acc.counts["c"].sum() == 10
    assert acc.report()["x"]["psi"] < 0.05


def test_bin_counts_equal_searchsorted_on_edges_nulls_and_infinities() -> None:
    from ml.drift import _numeric_counts

    rng = np.random.default_rng(3)
    edges = np.unique(np.round(rng.normal(size=9), 2))
    x = np.concatenate(
        [
            rng.normal(size=5_000),
            edges,
            np.nextafter(edges, -np.inf),
            [np.nan] * 7,
            [np.inf, -np.inf],
        ]
    )
    finite = x[~np.isnan(x)]
    expected = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
    assert _numeric_counts(x, edges).tolist() == [*expected.tolist(), 7.0]
    assert _numeric_counts(x, np.array([])).tolist() == [float(finite.size), 7.0]
    assert _numeric_counts(np.array([np.nan, np.nan]), edges).sum() == 2.0
