"""Lifetime features on hand-built purchase-only histories longer than the longest window (365 days).

Every event is at midnight, so an event `d` days before the cut-off is exactly `d` days old. Persona L (one
partner, customer id only, no views or devices) bought at 700, 500, 100 and 10 days: orders o1 100,
o2 50, o3 2 x 30, o4 40; gaps 200, 400, 90 days. It also buys at the cut-off and after it: neither counts
(features only see `ts < as_of`). Persona M bought once, 400 days ago: nothing in any window, but a
lifetime.
"""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
from feature_events import AS_OF, SCHEMA, ev

from features.compute import compute_local
from jobs.config import FeaturesConfig

NAN = math.nan


def purchase(persona: str, order: str, d: int, price: float, quantity: int = 1) -> dict:
    return ev(
        persona,
        f"{persona}-{order}-{d}",
        d,
        "00:00",
        "P1",
        "purchase",
        customer_id=f"cust-{persona}",
        order_id=order,
        product_id=f"X-{order}",
        category="home/kitchen",
        price=price,
        quantity=quantity,
    )


def lifetime_rows() -> list[dict]:
    return [
        purchase("L", "o1", 700, 100.0),
        purchase("L", "o2", 500, 50.0),
        purchase("L", "o3", 100, 30.0, quantity=2),
        purchase("L", "o4", 10, 40.0),
        purchase("L", "o5", 0, 999.0),  # at the cut-off: unseen
        purchase("L", "o6", -30, 999.0),  # after it: unseen
        purchase("M", "m1", 400, 80.0),
    ]


EXPECTED = {
    "L": {
        "orders_365d": 2,
        "orders_lifetime": 4,
        "revenue_lifetime": 250.0,
        "aov_lifetime": 62.5,
        "days_since_first_purchase": 700.0,
        "days_since_last_purchase": 10.0,
        "recency_tenure_ratio": 10 / 700,
        "interpurchase_days_mean_lifetime": (200 + 400 + 90) / 3,
        "interpurchase_days_mean_365d": 90.0,
        "orders_per_month_lifetime": 4 / (700 / 30),
        "purchase_overdue_ratio": 10 / ((200 + 400 + 90) / 3),
    },
    "M": {
        "orders_365d": 0,
        "revenue_365d": 0.0,
        "orders_lifetime": 1,
        "revenue_lifetime": 80.0,
        "aov_lifetime": 80.0,
        "days_since_first_purchase": 400.0,
        "recency_tenure_ratio": 1.0,
        "interpurchase_days_mean_lifetime": NAN,  # one order: no gap
        "orders_per_month_lifetime": 1 / (400 / 30),
        "purchase_overdue_ratio": NAN,
    },
}


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    table = compute_local(pa.Table.from_pylist(lifetime_rows(), schema=SCHEMA), AS_OF, FeaturesConfig(), ())
    return {row["persona_id"]: row for row in table.to_pylist()}


@pytest.mark.parametrize("persona", sorted(EXPECTED))
def test_lifetime_values(rows, persona):
    wrong = {}
    for name, expected in EXPECTED[persona].items():
        actual = rows[persona][name]
        same = math.isnan(expected) and math.isnan(actual) or actual == pytest.approx(expected, rel=1e-12)
        if not same:
            wrong[name] = (actual, expected)
    assert not wrong


def test_a_young_customer_is_rated_over_at_least_a_month():
    """One order 3 days ago is 1 order per month, not 10: the rate's tenure is at least `min_days`."""
    table = compute_local(
        pa.Table.from_pylist([purchase("Y", "y1", 3, 10.0)], schema=SCHEMA), AS_OF, FeaturesConfig(), ()
    )
    assert table.column("orders_per_month_lifetime").to_pylist() == [1.0]
