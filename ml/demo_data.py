"""A deterministic demo warehouse with a planted, recoverable uplift effect.

The demo needs data where the right answer is known: who the campaign helps, who it hurts and
by how much. `generate` builds the raw tables that the dbt sources read (customers, orders,
campaigns, campaign assignments) plus `true_effects`, the ground truth that only tests read.

The planted effect is a function of features the dbt model `customer_features` exposes as of
each campaign's start date, computed here from the generator's own orders strictly before that
date. So a learner trained on `train_uplift` can recover it, and a test can check that it did.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = [
    "CAMPAIGNS",
    "CONTACT_COST",
    "Campaign",
    "ORDERS_END",
    "ORDERS_START",
    "control_probability",
    "generate",
    "treatment_effect",
]

_DAY_US = 86_400 * 1_000_000
_EPOCH = dt.date(1970, 1, 1)

ORDERS_START = dt.date(2024, 1, 1)
# Inclusive last day of order history; the upcoming campaign starts after it.
ORDERS_END = dt.date(2026, 11, 20)
_SIGNUP_START = dt.date(2022, 1, 1)
_SIGNUP_END = dt.date(2026, 11, 10)

GENDERS = ("female", "male", "other")
REGIONS = ("north", "south", "east", "west", "central")
CHANNELS = ("email", "sms", "push")

ASSIGNED_SHARE = 0.6
TREATED_SHARE = 0.5
P_MIN, P_MAX = 0.005, 0.95

# Money per message sent, by channel: a push costs next to nothing, an SMS is dear.
CONTACT_COST = {"email": 0.05, "sms": 0.25, "push": 0.01}
VALUE_PER_CONVERSION = 40.0


@dataclass(frozen=True)
class Campaign:
    """One marketing campaign; `completed` ones have randomized assignments and outcomes.

    `budget_share` is the share of all customers the campaign's money budget pays to contact:
    the budget scales with the demo's size, so it binds the same way at any `n_customers`.
    """

    campaign_id: str
    campaign_name: str
    channel: str
    start_date: dt.date
    conversion_window_days: int
    status: str
    budget_share: float
    value_per_conversion: float = VALUE_PER_CONVERSION

    @property
    def cost_per_contact(self) -> float:
        return CONTACT_COST[self.channel]

    def budget(self, n_customers: int) -> float:
        return round(self.budget_share * n_customers * self.cost_per_contact, 2)


CAMPAIGNS: tuple[Campaign, ...] = (
    Campaign("cmp_2026_03", "spring_email", "email", dt.date(2026, 3, 2), 14, "completed", 0.25),
    Campaign("cmp_2026_06", "summer_sms", "sms", dt.date(2026, 6, 1), 14, "completed", 0.15),
    Campaign("cmp_2026_09", "autumn_push", "push", dt.date(2026, 9, 1), 14, "completed", 0.40),
    # 12% of customers (300.00 for 50,000): well under those worth an email, so the budget binds
    Campaign("cmp_2026_12", "holiday_email", "email", dt.date(2026, 12, 1), 14, "upcoming", 0.12),
)


def _day(d: dt.date) -> int:
    return (d - _EPOCH).days


def control_probability(f: dict[str, np.ndarray]) -> np.ndarray:
    """Conversion probability without treatment, from as-of features (unclipped).

    Habitual, recent, high-value buyers convert on their own; lapsed and new customers rarely do.
    """
    recency = f["recency_days"]
    has_orders = ~np.isnan(recency)
    logit = (
        -2.75
        + 0.55 * np.log1p(f["frequency_90d"])
        + 0.35 * (has_orders & (recency <= 30))
        - 0.45 * ~has_orders
        + 0.15 * np.log1p(f["monetary_365d"] / 100.0)
        - 0.004 * np.clip(f["age"] - 40, -20, 30)
    )
    return 1.0 / (1.0 + np.exp(-logit))


def treatment_effect(f: dict[str, np.ndarray]) -> np.ndarray:
    """Planted treatment-minus-control conversion probability, before clipping.

    Lapsed customers respond, most of all on the channel they prefer; recent frequent buyers
    ("sleeping dogs") are put off; each earlier treatment adds fatigue.
    """
    recency = f["recency_days"]
    has_orders = ~np.isnan(recency)
    match = f["channel_match"] == 1
    lapsed = has_orders & (recency > 90)
    sleeping_dogs = has_orders & (recency <= 30) & (f["frequency_90d"] >= 3)
    tau = np.full(recency.shape, 0.015)
    tau += np.where(lapsed, 0.05 + 0.10 * match + 0.03 * (f["frequency_365d"] >= 3), 0.0)
    tau += np.where(~has_orders, 0.02 + 0.03 * match, 0.0)
    tau += np.where(~lapsed & ~sleeping_dogs & has_orders, 0.01 * match, 0.0)
    tau = np.where(sleeping_dogs, -0.05 - 0.02 * match, tau)
    tau += 0.02 * ((f["age"] < 30) & (f["campaign_channel"] != "email"))
    tau -= 0.01 * f["prior_campaigns_treated"]
    return tau


@dataclass
class _Orders:
    customer_idx: np.ndarray  # int64 index into the customer arrays
    at_us: np.ndarray  # int64 microseconds since the epoch
    amount: np.ndarray  # float64

    def keep(self, mask: np.ndarray) -> None:
        self.customer_idx, self.at_us, self.amount = (
            self.customer_idx[mask],
            self.at_us[mask],
            self.amount[mask],
        )

    def append(self, customer_idx: np.ndarray, at_us: np.ndarray, amount: np.ndarray) -> None:
        self.customer_idx = np.concatenate([self.customer_idx, customer_idx])
        self.at_us = np.concatenate([self.at_us, at_us])
        self.amount = np.concatenate([self.amount, amount])


def _background_orders(
    rng: np.random.Generator, signup_day: np.ndarray, n: int
) -> tuple[_Orders, np.ndarray]:
    """Poisson purchase streams: an active spell at a latent rate, then a quiet tail.

    Churn makes lapsed customers with a real history exist, which the planted effect needs.
    """
    rate = rng.lognormal(np.log(0.04), 0.9, n)
    churn_day = signup_day + rng.exponential(500.0, n).astype(np.int64)
    basket = rng.lognormal(np.log(45.0), 0.4, n)
    start, end = _day(ORDERS_START), _day(ORDERS_END) + 1
    first = np.maximum(signup_day, start)
    spells = (
        (first, np.clip(churn_day, first, end), rate),
        (np.clip(churn_day, first, end), np.full(n, end), rate * 0.06),
    )
    idx_parts, at_parts = [], []
    for lo, hi, lam in spells:
        count = rng.poisson(lam * (hi - lo))
        idx = np.repeat(np.arange(n), count)
        span_us = (hi - lo)[idx] * _DAY_US
        at_parts.append(lo[idx] * _DAY_US + (rng.random(idx.size) * span_us).astype(np.int64))
        idx_parts.append(idx)
    customer_idx = np.concatenate(idx_parts)
    amount = _amounts(rng, basket, customer_idx)
    return _Orders(customer_idx, np.concatenate(at_parts), amount), basket


def _amounts(rng: np.random.Generator, basket: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.round(basket[idx] * rng.lognormal(-0.125, 0.5, idx.size) + 2.0, 2)


def _as_of_features(
    orders: _Orders,
    as_of_day: int,
    campaign: Campaign,
    customers: dict[str, np.ndarray],
    prior_treated: np.ndarray,
    prior_converted: np.ndarray,
) -> dict[str, np.ndarray]:
    """The subset of `customer_features` that drives the planted effect, same definitions."""
    n = customers["signup_day"].size
    order_day = orders.at_us // _DAY_US
    before = order_day < as_of_day
    idx, day, amount = orders.customer_idx[before], order_day[before], orders.amount[before]
    last_day = np.full(n, -1, dtype=np.int64)
    np.maximum.at(last_day, idx, day)
    features: dict[str, np.ndarray] = {
        "recency_days": np.where(last_day >= 0, as_of_day - last_day, np.nan),
        "age": (campaign.start_date.year - customers["birth_year"]).astype(np.float64),
        "tenure_days": (as_of_day - customers["signup_day"]).astype(np.float64),
        "channel_match": (customers["preferred_channel"] == campaign.channel).astype(np.int64),
        "campaign_channel": np.full(n, campaign.channel),
        "prior_campaigns_treated": prior_treated.astype(np.float64),
        "prior_campaigns_converted": prior_converted.astype(np.float64),
    }
    for days in (30, 90, 365):
        inside = day >= as_of_day - days
        features[f"frequency_{days}d"] = np.bincount(idx[inside], minlength=n).astype(float)
        features[f"monetary_{days}d"] = np.bincount(
            idx[inside], weights=amount[inside], minlength=n
        )
    return features


def _customers(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    # More recent signups than old ones: a growing business.
    span = _day(_SIGNUP_END) - _day(_SIGNUP_START)
    signup_day = _day(_SIGNUP_START) + (span * rng.random(n) ** 0.8).astype(np.int64)
    age_2026 = np.clip(np.round(rng.normal(41.0, 13.0, n)), 18, 85).astype(np.int64)
    return {
        "customer_id": np.arange(1, n + 1, dtype=np.int64),
        "signup_day": signup_day,
        "birth_year": 2026 - age_2026,
        "gender": rng.choice(np.array(GENDERS), n, p=[0.49, 0.48, 0.03]),
        "region": rng.choice(np.array(REGIONS), n, p=[0.22, 0.20, 0.20, 0.18, 0.20]),
        "preferred_channel": rng.choice(np.array(CHANNELS), n, p=[0.5, 0.3, 0.2]),
    }


def _date32(days: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(days, dtype=np.int32), type=pa.date32())


def _timestamp(us: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), type=pa.timestamp("us"))


def generate(n_customers: int = 50_000, seed: int = 7) -> dict[str, pa.Table]:
    """Build the raw demo tables; the same arguments always give the same tables.

    Campaigns are processed in start order, so conversion orders of one campaign feed the
    features (and the effect) of the next.
    """
    if n_customers < 1:
        raise ValueError(f"n_customers must be positive, got {n_customers}")
    rng = np.random.default_rng(seed)
    customers = _customers(rng, n_customers)
    orders, basket = _background_orders(rng, customers["signup_day"], n_customers)
    prior_treated = np.zeros(n_customers, dtype=np.int64)
    prior_converted = np.zeros(n_customers, dtype=np.int64)

    assignment_parts: list[dict[str, np.ndarray]] = []
    for campaign in sorted(CAMPAIGNS, key=lambda c: c.start_date):
        if campaign.status != "completed":
            continue
        start = _day(campaign.start_date)
        window_us = campaign.conversion_window_days * _DAY_US
        eligible = customers["signup_day"] < start
        assigned = eligible & (rng.random(n_customers) < ASSIGNED_SHARE)
        treated = assigned & (rng.random(n_customers) < TREATED_SHARE)

        features = _as_of_features(
            orders, start, campaign, customers, prior_treated, prior_converted
        )
        p_control = np.clip(control_probability(features), P_MIN, P_MAX)
        p_treated = np.clip(p_control + treatment_effect(features), P_MIN, P_MAX)
        converted = assigned & (rng.random(n_customers) < np.where(treated, p_treated, p_control))

        # The outcome for assigned customers is the drawn conversion alone: drop their
        # background orders in the window, then add one order per conversion.
        in_window = (orders.at_us >= start * _DAY_US) & (orders.at_us < start * _DAY_US + window_us)
        orders.keep(~(in_window & assigned[orders.customer_idx]))
        idx = np.flatnonzero(converted)
        at = start * _DAY_US + (rng.random(idx.size) * window_us).astype(np.int64)
        orders.append(idx, at, _amounts(rng, basket, idx))

        rows = np.flatnonzero(assigned)
        assignment_parts.append(
            {
                "campaign_id": np.full(rows.size, campaign.campaign_id),
                "customer_id": customers["customer_id"][rows],
                "group_name": np.where(treated[rows], "treatment", "control"),
                # Assigned the evening before launch.
                "assigned_at": np.full(rows.size, start * _DAY_US - 4 * 3_600 * 1_000_000),
                "p_control": p_control[rows],
                "true_uplift": (p_treated - p_control)[rows],
            }
        )
        prior_treated += treated
        prior_converted += converted

    # The upcoming campaign has no assignments yet, but its true effect is known here: tests
    # check the expected value of a plan for it against the truth. No random draw: the other
    # tables are the same with or without it.
    upcoming = [
        _upcoming_effects(c, orders, customers, prior_treated, prior_converted)
        for c in CAMPAIGNS
        if c.status != "completed"
    ]
    return {
        "customers": _customers_table(customers),
        "orders": _orders_table(orders, customers["customer_id"]),
        "campaigns": _campaigns_table(n_customers),
        **_assignment_tables(assignment_parts, upcoming),
    }


def _upcoming_effects(
    campaign: Campaign,
    orders: _Orders,
    customers: dict[str, np.ndarray],
    prior_treated: np.ndarray,
    prior_converted: np.ndarray,
) -> dict[str, np.ndarray]:
    start = _day(campaign.start_date)
    features = _as_of_features(orders, start, campaign, customers, prior_treated, prior_converted)
    p_control = np.clip(control_probability(features), P_MIN, P_MAX)
    p_treated = np.clip(p_control + treatment_effect(features), P_MIN, P_MAX)
    rows = np.flatnonzero(customers["signup_day"] < start)
    return {
        "campaign_id": np.full(rows.size, campaign.campaign_id),
        "customer_id": customers["customer_id"][rows],
        "p_control": p_control[rows],
        "true_uplift": (p_treated - p_control)[rows],
    }


def _customers_table(customers: dict[str, np.ndarray]) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array(customers["customer_id"], type=pa.int64()),
            "signup_date": _date32(customers["signup_day"]),
            "birth_year": pa.array(customers["birth_year"], type=pa.int64()),
            "gender": pa.array(customers["gender"], type=pa.string()),
            "region": pa.array(customers["region"], type=pa.string()),
            "preferred_channel": pa.array(customers["preferred_channel"], type=pa.string()),
        }
    )


def _orders_table(orders: _Orders, customer_id: np.ndarray) -> pa.Table:
    # Order ids follow time, as a real sequence would.
    order = np.lexsort((orders.customer_idx, orders.at_us))
    return pa.table(
        {
            "order_id": pa.array(np.arange(1, order.size + 1, dtype=np.int64)),
            "customer_id": pa.array(customer_id[orders.customer_idx[order]], type=pa.int64()),
            "ordered_at": _timestamp(orders.at_us[order]),
            "amount": pa.array(orders.amount[order], type=pa.float64()),
        }
    )


def _campaigns_table(n_customers: int) -> pa.Table:
    def money(values: list[float]) -> pa.Array:
        return pa.array(values, type=pa.float64())

    return pa.table(
        {
            "campaign_id": pa.array([c.campaign_id for c in CAMPAIGNS], type=pa.string()),
            "campaign_name": pa.array([c.campaign_name for c in CAMPAIGNS], type=pa.string()),
            "channel": pa.array([c.channel for c in CAMPAIGNS], type=pa.string()),
            "start_date": pa.array([c.start_date for c in CAMPAIGNS], type=pa.date32()),
            "conversion_window_days": pa.array(
                [c.conversion_window_days for c in CAMPAIGNS], type=pa.int64()
            ),
            "status": pa.array([c.status for c in CAMPAIGNS], type=pa.string()),
            "cost_per_contact": money([c.cost_per_contact for c in CAMPAIGNS]),
            "value_per_conversion": money([c.value_per_conversion for c in CAMPAIGNS]),
            "budget": money([c.budget(n_customers) for c in CAMPAIGNS]),
        }
    )


def _assignment_tables(
    parts: list[dict[str, np.ndarray]], upcoming: list[dict[str, np.ndarray]]
) -> dict[str, pa.Table]:
    def column(name: str, of: list[dict[str, np.ndarray]]) -> np.ndarray:
        return np.concatenate([p[name] for p in of])

    def keys(of: list[dict[str, np.ndarray]]) -> dict[str, pa.Array]:
        return {
            "campaign_id": pa.array(column("campaign_id", of), type=pa.string()),
            "customer_id": pa.array(column("customer_id", of), type=pa.int64()),
        }

    effects = [*parts, *upcoming]
    return {
        "campaign_assignments": pa.table(
            {
                **keys(parts),
                "group_name": pa.array(column("group_name", parts), type=pa.string()),
                "assigned_at": _timestamp(column("assigned_at", parts)),
            }
        ),
        "true_effects": pa.table(
            {
                **keys(effects),
                "p_control": pa.array(column("p_control", effects), type=pa.float64()),
                "true_uplift": pa.array(column("true_uplift", effects), type=pa.float64()),
            }
        ),
    }
