"""Segment definitions: labels only from the label window, eligibility only from feature columns."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from jobs.config import JobConfig, SegmentConfig, load_config
from jobs.segments.definitions import (
    check_segment,
    eligible_mask,
    label_column,
    labels_table,
    select_window,
    wide_labels,
)

UTC = dt.timezone.utc
AS_OF = dt.date(2026, 3, 1)
T0 = dt.datetime(2026, 3, 1, tzinfo=UTC)
SCHEMA = pa.schema(
    [("persona_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC"))]
    + [
        (c, pa.string())
        for c in ("event_type", "partner_id", "product_id", "category", "brand", "order_id", "event_id")
    ]
)


def ev(pid, at, event_type, partner="p1", product=None, category=None, brand=None, order=None):
    ts = T0 + (at if isinstance(at, dt.timedelta) else dt.timedelta(days=at))
    return {
        "persona_id": pid,
        "ts": ts,
        "event_type": event_type,
        "partner_id": partner,
        "product_id": product,
        "category": category,
        "brand": brand,
        "order_id": order,
        "event_id": f"{pid}-{at}-{event_type}-{partner}-{product}",
    }


def table(rows):
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def positives(events, segment, as_of=AS_OF):
    return sorted(labels_table(table(events), segment, as_of).column("persona_id").to_pylist())


def test_ecommerce_buyers_window_edges_and_min_orders():
    rows = [
        ev("at_cutoff", dt.timedelta(0), "purchase", order="o1"),  # ts == as_of: inside
        ev("before", dt.timedelta(seconds=-1), "purchase", order="o2"),  # before the cut-off: a feature, not a label
        ev("at_end", dt.timedelta(days=30), "purchase", order="o3"),  # as_of + horizon: outside
        ev("last_second", dt.timedelta(days=30, seconds=-1), "purchase", order="o4"),
        ev("viewer", 3, "product_view", product="x"),
        ev("two_lines", 2, "purchase", product="a", order="o5"),
        ev("two_lines", 2, "purchase", product="b", order="o5"),  # the same order: one
        ev("two_orders", 2, "purchase", order="o6"),
        ev("two_orders", 9, "purchase", order="o7", partner="p2"),
        ev(None, 1, "purchase", order="o8"),  # no persona: nobody's label
    ]
    buyers = SegmentConfig(name="b", kind="ecommerce_buyers")
    assert positives(rows, buyers) == ["at_cutoff", "last_second", "two_lines", "two_orders"]
    assert positives(rows, SegmentConfig(name="b2", kind="ecommerce_buyers", min_orders=2)) == ["two_orders"]
    assert positives(rows, SegmentConfig(name="b3", kind="ecommerce_buyers", partner_id="p2")) == ["two_orders"]
    short = SegmentConfig(name="b4", kind="ecommerce_buyers", horizon_days=5)
    assert positives(rows, short) == ["at_cutoff", "two_lines", "two_orders"]


def test_high_interest_category_prefix_brand_partner_and_carts():
    rows = [
        ev("phone_buyer", 1, "purchase", category="electronics/phones", brand="Samsung", order="o1"),
        ev("carter", 2, "add_to_cart", category="electronics/tv", brand="LG"),
        ev("lookalike_prefix", 2, "purchase", category="electronicsX/other", order="o2"),  # not a path prefix
        ev("viewer", 2, "product_view", category="electronics/tv"),
        ev("fashion", 2, "purchase", category="fashion/men", order="o3"),
        ev("other_partner", 2, "purchase", category="electronics/audio", brand="samsung", partner="p9", order="o4"),
    ]
    electronics = SegmentConfig(name="e", kind="high_interest", category="electronics")
    assert positives(rows, electronics) == ["carter", "other_partner", "phone_buyer"]
    purchases_only = SegmentConfig(
        name="e2", kind="high_interest", category="electronics", label_event_types=["purchase"]
    )
    assert positives(rows, purchases_only) == ["other_partner", "phone_buyer"]
    brand = SegmentConfig(name="s", kind="high_interest", brand="SAMSUNG")
    assert positives(rows, brand) == ["other_partner", "phone_buyer"]
    at_p1 = SegmentConfig(
        name="s1", kind="high_interest", category="electronics/phones", brand="Samsung", partner_id="p1"
    )
    assert positives(rows, at_p1) == ["phone_buyer"]


def test_price_hunters_need_views_at_two_partners_shortly_before_the_purchase():
    rows = [
        # views at p1 (before the cut-off, within 7 days of the purchase) and p2, buys at p2: a hunter
        ev("hunter", -2, "product_view", partner="p1", product="x"),
        ev("hunter", 1, "product_view", partner="p2", product="x"),
        ev("hunter", 2, "purchase", partner="p2", product="x", order="o1"),
        # one partner only
        ev("loyal", 1, "product_view", partner="p1", product="y"),
        ev("loyal", 1, "product_view", partner="p1", product="y"),
        ev("loyal", 2, "purchase", partner="p1", product="y", order="o2"),
        # two partners, but another product
        ev("mixed", 1, "product_view", partner="p1", product="a"),
        ev("mixed", 1, "product_view", partner="p2", product="b"),
        ev("mixed", 2, "purchase", partner="p2", product="a", order="o3"),
        # compared too long before the purchase
        ev("slow", 1, "product_view", partner="p1", product="z"),
        ev("slow", 2, "product_view", partner="p2", product="z"),
        ev("slow", 20, "purchase", partner="p2", product="z", order="o4"),
        # compared, but bought before the cut-off
        ev("early", -5, "product_view", partner="p1", product="w"),
        ev("early", -4, "product_view", partner="p2", product="w"),
        ev("early", -3, "purchase", partner="p2", product="w", order="o5"),
        # views after the purchase do not count
        ev("after", 2, "purchase", partner="p2", product="v", order="o6"),
        ev("after", 3, "product_view", partner="p1", product="v"),
        ev("after", 3, "product_view", partner="p2", product="v"),
    ]
    hunters = SegmentConfig(name="h", kind="price_hunters")
    assert positives(rows, hunters) == ["hunter"]
    assert positives(rows, SegmentConfig(name="h2", kind="price_hunters", comparison_days=30)) == ["hunter", "slow"]
    assert positives(rows, SegmentConfig(name="h3", kind="price_hunters", min_partners=3)) == []


def test_category_labels_count_only_the_category():
    rows = [
        ev("home_buyer", 3, "purchase", category="home/kitchen", order="o1"),
        ev("home_twice", 3, "purchase", category="home", order="o2"),
        ev("home_twice", 9, "purchase", category="home/decor", order="o3"),
        ev("other", 3, "purchase", category="fashion/women", order="o4"),
    ]
    virgins = SegmentConfig(name="v", kind="category_virgins", category="home")
    assert positives(rows, virgins) == ["home_buyer", "home_twice"]
    lovers = SegmentConfig(name="l", kind="category_lovers", category="home", min_orders=2)
    assert positives(rows, lovers) == ["home_twice"]


def features_table():
    data = {
        "persona_id": ["new", "buyer_no_home", "home_buyer", "home_only_old", "nan_orders"],
        "orders_365d": pa.array([0, 3, 2, 1, None], pa.int64()),
        "orders_30d": pa.array([0, 1, 0, 0, 0], pa.int64()),
        "cat00_purchases_365d": pa.array([0, 2, 0, 0, 0], pa.int64()),  # fashion
        "cat01_purchases_365d": pa.array([0, 0, 2, 1, 0], pa.int64()),  # home
    }
    return pa.table(data)


def test_eligibility_from_feature_columns_only():
    t = features_table()
    cats = ["fashion", "home"]
    virgins = SegmentConfig(name="v", kind="category_virgins", category="home")
    lovers = SegmentConfig(name="l", kind="category_lovers", category="home/kitchen")  # slot = top level
    assert eligible_mask(virgins, t, cats).tolist() == [False, True, False, False, False]
    assert eligible_mask(lovers, t, cats).tolist() == [False, False, True, True, False]
    for kind in ("ecommerce_buyers", "price_hunters"):
        assert eligible_mask(SegmentConfig(name="x", kind=kind), t, None).all()
    assert eligible_mask(SegmentConfig(name="hi", kind="high_interest", category="home"), t, None).dtype == np.bool_
    # the slot is the segment's top-level category as the plan names it (lower case)
    assert eligible_mask(
        SegmentConfig(name="v2", kind="category_virgins", category="Home/Garden"), t, cats
    ).tolist() == [False, True, False, False, False]
    # a category without a feature slot: nobody, rather than a guess
    toys = SegmentConfig(name="t", kind="category_virgins", category="toys")
    assert not eligible_mask(toys, t, cats).any()
    with pytest.raises(ValueError, match="category list"):
        eligible_mask(virgins, t, None)


def test_orders_column_falls_back_to_the_longest_window():
    t = (
        features_table()
        .drop_columns(["orders_365d"])
        .append_column("orders_90d", pa.array([0, 1, 0, 1, 0], pa.int64()))
    )
    virgins = SegmentConfig(name="v", kind="category_virgins", category="home")
    assert eligible_mask(virgins, t, ["fashion", "home"]).tolist() == [False, True, False, False, False]


def test_definitions_are_checked_and_come_from_yaml(tmp_path):
    with pytest.raises(ValueError, match="needs a `category`"):
        check_segment(SegmentConfig(name="v", kind="category_virgins"))
    with pytest.raises(ValueError, match="category` and/or a `brand`"):
        check_segment(SegmentConfig(name="h", kind="high_interest"))
    path = tmp_path / "job.yaml"
    path.write_text(
        "segments:\n"
        "  - name: samsung_phones_p03\n"
        "    kind: high_interest\n"
        "    category: electronics/phones\n"
        "    brand: Samsung\n"
        "    partner_id: p03\n"
        "    horizon_days: 14\n"
    )
    config = load_config(path)
    (segment,) = config.segments
    assert (segment.kind, segment.brand, segment.horizon_days) == ("high_interest", "Samsung", 14)
    assert [s.name for s in JobConfig().segments] == [
        "ecommerce_buyers",
        "high_interest_electronics",
        "price_hunters",
        "category_virgins_home",
        "category_lovers_fashion",
    ]


def test_wide_labels_one_row_per_persona_positive_somewhere():
    rows = [
        ev("buyer", 1, "purchase", category="fashion/men", order="o1"),
        ev("home_buyer", 2, "purchase", category="home/kitchen", order="o2"),
        ev("viewer", 2, "product_view", category="home/kitchen"),
        ev("late", 12, "purchase", category="home", order="o3"),
    ]
    segments = [
        SegmentConfig(name="b", kind="ecommerce_buyers", horizon_days=10),
        SegmentConfig(name="h", kind="high_interest", category="home"),
    ]
    wide = wide_labels(select_window(table(rows), T0, T0 + dt.timedelta(days=30), ["purchase"]), segments, AS_OF)
    assert wide.schema.names == ["persona_id", "as_of", label_column("b"), label_column("h")]
    got = {r["persona_id"]: (r[label_column("b")], r[label_column("h")]) for r in wide.to_pylist()}
    assert got == {"buyer": (1, 0), "home_buyer": (1, 1), "late": (0, 1)}
    assert set(wide.column("as_of").to_pylist()) == {AS_OF}
    assert wide_labels(select_window(table(rows), T0, T0, ["purchase"]), segments, AS_OF).num_rows == 0
