"""One policy for numeric feature values: what training and batch scoring refuse is what the
API refuses with a 422, and what they accept the API accepts."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
from pydantic import ValidationError

from ml.contract import check_feature_values
from ml.errors import ContractError
from ml.kinds import FLOAT32_MAX, INT_EXACT_MAX
from ml.model import TrainingSchema
from ml.serving.schema import build_schemas

SCHEMA = TrainingSchema(
    recipe="r", task="regression", entity_keys=["id"], features={"x": "float", "n": "int"},
    context={},
)  # fmt: skip

FLOATS = [
    (0.5, True),
    (None, True),
    (-FLOAT32_MAX, True),
    (FLOAT32_MAX, True),
    (float("nan"), False),
    (float("inf"), False),
    (float("-inf"), False),
    (FLOAT32_MAX * 1.0001, False),
    (-1e300, False),
]
INTS = [(0, True), (None, True), (INT_EXACT_MAX, True), (-INT_EXACT_MAX, True),
        (INT_EXACT_MAX + 1, False), (-(2**62), False)]  # fmt: skip


def _batch_verdict(x: float | None, n: int | None) -> bool:
    table = pa.table({"x": pa.array([x], pa.float64()), "n": pa.array([n], pa.int64())})
    try:
        check_feature_values(table, SCHEMA.features, "population")
    except ContractError:
        return False
    return True


def _api_verdict(x: float | None, n: int | None) -> bool:
    record = build_schemas(SCHEMA, 10).request.__pydantic_fields__["records"]
    model = record.annotation.__args__[0]  # list[Record] -> Record
    try:
        model.model_validate({"x": x, "n": n})
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(("x", "ok"), FLOATS, ids=repr)
def test_a_float_gets_the_same_verdict_in_batch_and_in_the_api(x, ok) -> None:
    assert _batch_verdict(x, 1) is ok
    if x is None or math.isfinite(x):  # JSON has no NaN or infinity: the API refuses at parsing
        assert _api_verdict(x, 1) is ok


@pytest.mark.parametrize(("n", "ok"), INTS, ids=repr)
def test_an_int_gets_the_same_verdict_in_batch_and_in_the_api(n, ok) -> None:
    assert _batch_verdict(0.0, n) is ok
    assert _api_verdict(0.0, n) is ok


def test_the_error_names_the_column_and_counts() -> None:
    table = pa.table({"x": pa.array([1.0, float("nan"), float("nan")]), "n": pa.array([1, 2, 3])})
    with pytest.raises(ContractError) as exc:
        check_feature_values(table, SCHEMA.features, "loaders.train")
    assert str(exc.value).startswith("loaders.train: feature column 'x' has 2 NaN value(s)")


def test_decimal_and_string_features() -> None:
    import decimal

    table = pa.table(
        {"d": pa.array([decimal.Decimal("1.5")], pa.decimal128(38, 9)), "s": pa.array(["nan"])}
    )
    check_feature_values(table, {"d": "decimal", "s": "string"}, "population")  # no error
