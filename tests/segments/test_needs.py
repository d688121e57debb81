"""What a segment kind needs from the data, said in one line when no persona shows it."""

from __future__ import annotations

import pyarrow as pa

from jobs.config import SegmentConfig
from jobs.segments.needs import data_facts, unmet_need

BUYERS = SegmentConfig(name="b", kind="ecommerce_buyers")
HUNTERS = SegmentConfig(name="h", kind="price_hunters")
INTEREST = SegmentConfig(name="i", kind="high_interest", category="home")
VIEWS_ONLY = SegmentConfig(name="v", kind="high_interest", category="home", label_event_types=["product_view"])
LOVERS = SegmentConfig(name="l", kind="category_lovers", category="home")


def test_facts_count_personas_showing_each_behaviour():
    batch = pa.table(
        {
            "orders_lifetime": [0, 3, None],
            "product_views_365d": [0, 0, 0],
            "carts_365d": [1, 0, 0],
            "partners_visited_365d": [1, 1, 2],
        }
    )
    assert data_facts(batch).to_pylist() == [
        {"personas": 3, "buyers": 1, "viewers": 0, "carters": 1, "multi_partner": 1}
    ]
    assert data_facts(pa.table({"persona_id": ["a"]})).to_pylist()[0]["buyers"] == 0  # a column it lacks


def test_a_purchase_only_log_at_one_partner():
    facts = {"personas": 100, "buyers": 100, "viewers": 0, "carters": 0, "multi_partner": 0}
    assert unmet_need(BUYERS, facts) is None and unmet_need(LOVERS, facts) is None
    assert unmet_need(INTEREST, facts) is None  # purchases in the category are a label too
    assert (
        unmet_need(HUNTERS, facts)
        == "no product views before the cut-off: price_hunters needs views of one product at 2+ partners"
    )
    assert unmet_need(VIEWS_ONLY, facts) == "no product_view events before the cut-off: high_interest labels need them"
    one_partner = {**facts, "viewers": 50}
    assert unmet_need(HUNTERS, one_partner).startswith("every persona is seen at one partner only")
    assert (
        unmet_need(BUYERS, {**facts, "buyers": 0}) == "no purchases before the cut-off: ecommerce_buyers needs buyers"
    )
    assert unmet_need(BUYERS, {"personas": 0}) == "no personas in the feature snapshot"
