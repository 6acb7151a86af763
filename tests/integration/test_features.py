"""The feature tables dbt builds hold exact, reproducible values.

Money is summed exactly in the warehouse: a float `sum` adds in whatever order the warehouse's
threads finish, so its last bit changed from build to build, and with it the training data,
the fitted model and the ranked targets. Here every money feature is checked against the exact
sum in integer cents, computed independently from the raw orders: any float summation order
misses it on some rows.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("ml_env")


def _read(con, sql: str) -> dict[str, np.ndarray]:
    return con.execute(sql).fetchnumpy()


@pytest.fixture
def warehouse(ml_env):
    import duckdb

    # the same configuration as dbt's in-process connection to the file (DuckDB requires it)
    con = duckdb.connect(ml_env["ML_DUCKDB_PATH"])
    yield con
    con.close()


@pytest.fixture
def orders(warehouse) -> dict[str, np.ndarray]:
    raw = _read(warehouse, "select customer_id, ordered_at::date as day, amount from raw.orders")
    cents = np.rint(raw["amount"] * 100).astype(np.int64)
    assert np.array_equal(cents / 100, raw["amount"])  # the demo's amounts are whole cents
    days = raw["day"].astype("datetime64[D]").astype(np.int64)
    return {"customer": raw["customer_id"].astype(np.int64), "day": days, "cents": cents}


def _exact_sums(orders: dict[str, np.ndarray], customers: np.ndarray, start: int, end: int):
    """Each customer's order amounts on days start <= day < end, summed exactly: integer cents
    (float64 holds these sums exactly, far below 2**53), then one division."""
    window = (orders["day"] >= start) & (orders["day"] < end)
    n = int(orders["customer"].max()) + 1
    cents = np.bincount(orders["customer"][window], weights=orders["cents"][window], minlength=n)
    return cents[customers.astype(np.int64)] / 100


def _day(value: dt.date) -> int:
    return int(np.datetime64(value, "D").astype(np.int64))


def test_money_features_are_exact_sums_of_the_orders(warehouse, orders) -> None:
    features = _read(
        warehouse,
        "select campaign_id, customer_id, as_of_date, frequency_365d, monetary_30d, "
        "monetary_90d, monetary_365d, avg_order_value_365d "
        "from analytics_features.customer_features",
    )
    checked = 0
    for campaign in np.unique(features["campaign_id"]):
        rows = features["campaign_id"] == campaign
        as_of = _day(features["as_of_date"][rows][0])
        customers = features["customer_id"][rows]
        for days in (30, 90, 365):
            expected = _exact_sums(orders, customers, as_of - days, as_of)
            actual = features[f"monetary_{days}d"][rows]
            wrong = np.flatnonzero(actual != expected)
            assert wrong.size == 0, (
                f"{campaign} monetary_{days}d: {wrong.size} rows differ from the exact sum, "
                f"e.g. {actual[wrong[0]]!r} != {expected[wrong[0]]!r}"
            )
            if days == 365:
                freq = features["frequency_365d"][rows]
                has = freq > 0
                avg = features["avg_order_value_365d"][rows]
                null = np.ma.getmaskarray(avg)
                assert np.array_equal(null, ~has)  # null without orders in that year
                assert np.array_equal(np.ma.getdata(avg)[has], expected[has] / freq[has])
        checked += int(rows.sum())
    assert checked == len(features["customer_id"]) > 100_000


def test_campaign_revenue_is_the_exact_sum_of_the_window_orders(warehouse, orders) -> None:
    outcomes = _read(
        warehouse,
        "select campaign_id, customer_id, window_start, window_end, revenue_in_window "
        "from analytics_features.campaign_outcomes",
    )
    nonzero = 0
    for campaign in np.unique(outcomes["campaign_id"]):
        rows = outcomes["campaign_id"] == campaign
        start, end = _day(outcomes["window_start"][rows][0]), _day(outcomes["window_end"][rows][0])
        expected = _exact_sums(orders, outcomes["customer_id"][rows], start, end)
        assert np.array_equal(outcomes["revenue_in_window"][rows], expected), campaign
        nonzero += int((expected > 0).sum())
    assert nonzero > 1_000  # the check covered real revenue, not only zeros
