from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ml.preprocess import MISSING, OTHER, Preprocessor
from ml.recipe import PreprocessingSpec

TRAIN = {"amount": [1.0, np.nan, 3.0, 5.0], "region": ["north", "south", None, "north"]}
KINDS = {"amount": "float", "region": "string"}


def test_onehot_with_median_imputation_and_unseen_category() -> None:
    pre = Preprocessor.fit(TRAIN, KINDS, PreprocessingSpec())
    assert pre.feature_names == [
        "amount",
        f"region={MISSING}",
        "region=north",
        "region=south",
        f"region={OTHER}",
    ]
    out = pre.transform({"amount": [np.nan, 2.0], "region": ["west", None]})
    # median of [1, 3, 5] = 3 fills the NaN; "west" was never seen: it lands in the OTHER slot
    np.testing.assert_array_equal(out, [[3, 0, 0, 0, 1], [2, 1, 0, 0, 0]])
    assert out.dtype == np.float32


def test_arrow_and_python_inputs_encode_identically() -> None:
    rng = np.random.default_rng(0)
    values = rng.choice(["a", "b", "c", "d", None], size=500).tolist()
    train = {"s": values, "x": rng.normal(size=500)}
    test = ["a", "zzz", None, "d", "b"]
    for spec in (
        PreprocessingSpec(),
        PreprocessingSpec(impute_categorical="most_frequent", max_categories=3),
        PreprocessingSpec(encoding="ordinal", scale=True),
    ):
        pre = Preprocessor.fit(train, {"s": "string", "x": "float"}, spec)
        as_list = pre.transform({"s": test, "x": np.zeros(5)})
        as_arrow = pre.transform({"s": pa.chunked_array([pa.array(test)]), "x": np.zeros(5)})
        np.testing.assert_array_equal(as_list, as_arrow)


def test_max_categories_folds_rare_values_into_other() -> None:
    pre = Preprocessor.fit(
        {"c": ["a"] * 5 + ["b"] * 3 + ["c"]}, {"c": "string"}, PreprocessingSpec(max_categories=3)
    )
    assert pre.feature_names == ["c=a", "c=b", f"c={OTHER}"]
    np.testing.assert_array_equal(pre.transform({"c": ["c", "a"]}), [[0, 0, 1], [1, 0, 0]])


def test_ordinal_unseen_is_minus_one_and_scaling_uses_training_stats() -> None:
    pre = Preprocessor.fit(
        {"x": [0.0, 2.0], "c": ["a", "b"]},
        {"x": "float", "c": "string"},
        PreprocessingSpec(encoding="ordinal", scale=True),
    )
    np.testing.assert_allclose(
        pre.transform({"x": [1.0, 3.0], "c": ["b", "q"]}), [[0.0, 1.0], [2.0, -1.0]]
    )


@pytest.mark.parametrize(("strategy", "expected"), [("mean", 3.0), ("zero", 0.0), ("median", 3.0)])
def test_numeric_imputation_strategies(strategy: str, expected: float) -> None:
    pre = Preprocessor.fit(
        {"x": [1.0, np.nan, 5.0]}, {"x": "float"}, PreprocessingSpec(impute_numeric=strategy)
    )
    assert pre.transform({"x": [np.nan]})[0, 0] == expected


def test_no_imputation_keeps_nan_for_the_estimator() -> None:
    pre = Preprocessor.fit(
        {"x": [1.0, np.nan]}, {"x": "float"}, PreprocessingSpec(impute_numeric="none")
    )
    assert np.isnan(pre.transform({"x": [None]})[0, 0])


@pytest.mark.parametrize(
    "spec",
    [
        PreprocessingSpec(),
        PreprocessingSpec(impute_numeric="none"),
        PreprocessingSpec(impute_numeric="mean", scale=True),
        PreprocessingSpec(encoding="ordinal", impute_categorical="most_frequent"),
    ],
)
def test_output_is_column_major_and_equals_a_column_by_column_reference(
    spec: PreprocessingSpec,
) -> None:
    """The matrix is built column by column (Fortran order, so estimators read it without a
    copy) and holds exactly the values of the plain per-column arithmetic."""
    rng = np.random.default_rng(3)
    n = 1_000
    x = rng.normal(10.0, 4.0, size=n)
    x[::9] = np.nan
    y = rng.integers(0, 5, size=n).astype(np.float64)
    s = rng.choice(["a", "b", "c", None], size=n).tolist()
    kinds = {"x": "float", "s": "string", "y": "int"}
    pre = Preprocessor.fit({"x": x, "s": s, "y": y}, kinds, spec)
    z = rng.normal(10.0, 4.0, size=n)
    z[::4] = np.nan
    cols = {"x": z, "s": rng.choice(["a", "b", "q", None], size=n).tolist(), "y": y[::-1]}
    out = pre.transform(cols)
    assert out.dtype == np.float32 and out.flags.f_contiguous and out.shape == (n, pre.width)
    assert pre.width == len(pre.feature_names)
    expected = []
    for num in pre.numeric:
        v = np.asarray(cols[num.name], dtype=np.float64)
        if num.fill is not None:
            v = np.where(np.isnan(v), num.fill, v)
        expected.append(((v - num.center) / num.scale).astype(np.float32))
    for cat in pre.categorical:
        strings = [cat.fill if v is None else v for v in cols[cat.name]]
        codes = np.array([cat.categories.index(v) if v in cat.categories else -1 for v in strings])
        if spec.encoding == "onehot":
            slots = np.where(codes < 0, len(cat.categories), codes)
            expected += [(slots == k).astype(np.float32) for k in range(len(cat.categories) + 1)]
        else:
            expected.append(codes.astype(np.float32))
    np.testing.assert_array_equal(out, np.column_stack(expected))
