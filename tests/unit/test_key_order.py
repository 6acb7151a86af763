"""`population.KeyOrder`: keys arriving strictly increasing prove themselves unique."""

from __future__ import annotations

import pyarrow as pa
import pytest

from ml.population import KeyOrder


def _watched(*batches: list, key: str = "id", keys: list[str] | None = None) -> bool:
    order = KeyOrder(keys or [key])
    for values in batches:
        order.add(pa.table({key: pa.array(values)}))
    return order.increasing


@pytest.mark.parametrize(
    ("batches", "increasing"),
    [
        (([1, 2, 5], [6, 90]), True),
        (([1, 2, 5], [], [6]), True),  # an empty batch changes nothing
        (([7],), True),
        (([1, 2, 2, 3],), False),  # a repeat inside a batch
        (([1, 2, 3], [3, 4]), False),  # a repeat across batches
        (([1, 3, 2],), False),
        (([4, 5], [1, 2]), False),  # each batch increasing, the second below the first
        ((["a", "b", "é"], ["éa", "z"]), False),  # "z" < "éa" in UTF-8 byte order
        ((["a", "b"], ["é", "éa"]), True),
        (([-(2**63), 0, 2**63 - 1],), True),
    ],
)
def test_strictly_increasing_keys(batches, increasing) -> None:
    assert _watched(*batches) is increasing


def test_once_out_of_order_it_stays_unproven() -> None:
    assert _watched([3, 4], [1], [5, 6]) is False


def test_a_composite_key_is_never_proven_by_order() -> None:
    order = KeyOrder(["id", "campaign"])
    order.add(pa.table({"id": [1, 2], "campaign": ["a", "a"]}))
    assert order.increasing is False


def test_chunked_batches_compare_across_chunks() -> None:
    order = KeyOrder(["id"])
    order.add(pa.table({"id": pa.chunked_array([[1, 2], [2, 3]])}))
    assert order.increasing is False
