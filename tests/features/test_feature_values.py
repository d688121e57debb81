"""Every catalogue feature against a value worked out by hand for the personas of feature_events.hand_rows.

Persona A's ages at the cut-off (days): a01 399.583, a02 199.625, a03 99.417, a04 99.375, a05/a06 97.583,
a07 59.167, a08 59.125, a15 49.5, a09 19.042, a10 19.021, a12 9.667, a17 5.167, a11 4.917, a13 2.667,
a14 1.5, a16 0.25 (a98 is at the cut-off and a99 after it: both unseen). Orders: o1 = a02 (20, card),
o2 = a05 + a06 (90 + 2 x 30 = 150, 3 items, installments), o3 = a08 (500, card), o4 = a11 (45, quantity
absent = 1, "crypto" = other). Feature categories: books 0, electronics 1, fashion 2, home 3 (toys only
occurs unseen). Category medians over offers: electronics/phones {90, 100, 110, 200} -> 105, fashion/shoes
{50, 45} -> 47.5, books/novels 20, home/kitchen 30, electronics/laptops 500.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pytest
from feature_events import AS_OF, CATEGORIES, SCHEMA, ev, hand_table

from features.catalog import catalog, feature_names
from features.compute import compute_local
from features.prices import median_prices, price_offers
from features.social import links_as_of, snapshot_links, social_links, social_tokens
from jobs.config import FeaturesConfig, JobConfig, PlanView
from jobs.run.plan import EventFacts, block_facts, build_plan

NAN = math.nan
INTERVALS = [102 + 1 / 24, 38 + 11 / 24, 54 + 5 / 24]  # days between A's orders o1-o2, o2-o3, o3-o4

EXPECTED_A: dict[str, float] = {
    # RFM
    "orders_7d": 1,
    "orders_30d": 1,
    "orders_90d": 2,
    "orders_180d": 3,
    "orders_365d": 4,
    "items_7d": 1,
    "items_30d": 1,
    "items_90d": 2,
    "items_180d": 5,
    "items_365d": 6,
    "revenue_7d": 45.0,
    "revenue_30d": 45.0,
    "revenue_90d": 545.0,
    "revenue_180d": 695.0,
    "revenue_365d": 715.0,
    "aov_7d": 45.0,
    "aov_30d": 45.0,
    "aov_90d": 272.5,
    "aov_180d": 695 / 3,
    "aov_365d": 178.75,
    "days_since_last_event": 0.25,
    "days_since_last_view": 6 - 20 / 24,
    "days_since_last_cart": 20 - 23.5 / 24,
    "days_since_last_purchase": 5 - 2 / 24,
    "days_since_last_click": 1.5,
    "days_since_first_event": 400 - 10 / 24,
    "interpurchase_days_mean_365d": sum(INTERVALS) / 3,
    # Lifetime: A's purchases all fall within 365 days, so these repeat the 365-day figures (see test_lifetime.py)
    "orders_lifetime": 4,
    "revenue_lifetime": 715.0,
    "aov_lifetime": 178.75,
    "days_since_first_purchase": 199.625,
    "recency_tenure_ratio": (5 - 2 / 24) / 199.625,
    "interpurchase_days_mean_lifetime": sum(INTERVALS) / 3,
    "orders_per_month_lifetime": 4 / (199.625 / 30),
    "purchase_overdue_ratio": (5 - 2 / 24) / (sum(INTERVALS) / 3),
    "interpurchase_days_std_365d": float(np.std(INTERVALS)),
    "orders_trend_30d_vs_90d": 1 / 3,  # r = 1/30, e = 1/60
    "revenue_trend_30d_vs_90d": -41 / 59,  # r = 45/30, e = 500/60
    "views_trend_30d_vs_90d": 1.0,  # both views of the last 90 days are in the last 30
    # engagement
    "events_7d": 5,
    "events_30d": 8,
    "events_90d": 11,
    "events_180d": 15,
    "events_365d": 16,
    "sessions_7d": 4,
    "sessions_30d": 5,
    "sessions_90d": 7,
    "sessions_180d": 10,
    "sessions_365d": 11,
    "product_views_7d": 1,
    "product_views_30d": 2,
    "product_views_90d": 2,
    "product_views_180d": 4,
    "product_views_365d": 4,
    "carts_7d": 0,
    "carts_30d": 1,
    "carts_90d": 2,
    "carts_180d": 2,
    "carts_365d": 2,
    "active_days_7d": 5,
    "active_days_30d": 7,
    "active_days_90d": 9,
    "active_days_180d": 11,
    "active_days_365d": 12,
    "view_to_cart_rate_30d": 0.5,
    "view_to_cart_rate_90d": 1.0,
    "view_to_cart_rate_180d": 0.5,
    "view_to_cart_rate_365d": 0.5,
    "cart_to_purchase_rate_30d": 1.0,
    "cart_to_purchase_rate_90d": 1.0,
    "cart_to_purchase_rate_180d": 2.0,
    "cart_to_purchase_rate_365d": 2.5,
    "view_to_purchase_rate_30d": 0.5,
    "view_to_purchase_rate_90d": 1.0,
    "view_to_purchase_rate_180d": 1.0,
    "view_to_purchase_rate_365d": 1.25,
    "session_minutes_mean_90d": 90 / 7,  # s5 60 min, s6 30 min, five one-event sessions
    "events_per_session_90d": 9 / 7,
    "products_viewed_90d": 1,
    "traffic_direct_share_365d": 5 / 14,
    "traffic_search_share_365d": 3 / 14,
    "traffic_social_share_365d": 1 / 14,
    "traffic_ads_share_365d": 2 / 14,
    "traffic_email_share_365d": 3 / 14,
    "traffic_sms_share_365d": 0.0,
    "traffic_viber_share_365d": 0.0,
    "traffic_referral_share_365d": 0.0,
    "main_traffic_source": 0,
    # categories and brands (slots: 0 books, 1 electronics, 2 fashion, 3 home, 4-9 empty)
    "cat00_views_90d": 0,
    "cat01_views_90d": 0,
    "cat02_views_90d": 2,
    "cat03_views_90d": 0,
    "cat00_purchases_365d": 1,
    "cat01_purchases_365d": 2,
    "cat02_purchases_365d": 1,
    "cat03_purchases_365d": 1,
    "cat00_spend_share_365d": 20 / 715,
    "cat01_spend_share_365d": 590 / 715,
    "cat02_spend_share_365d": 45 / 715,
    "cat03_spend_share_365d": 60 / 715,
    "cat00_months_bought_6m": 0,
    "cat01_months_bought_6m": 2,
    "cat02_months_bought_6m": 1,
    "cat03_months_bought_6m": 1,
    **{
        f"cat{k:02d}_{name}": value
        for k in range(4, 10)
        for name, value in (("views_90d", 0), ("purchases_365d", 0), ("spend_share_365d", 0.0), ("months_bought_6m", 0))
    },
    "favourite_category": 1,
    "categories_viewed_90d": 1,
    "categories_bought_365d": 4,
    "category_view_hhi_90d": 1.0,
    "new_categories_bought_90d": 1,  # fashion; electronics was first bought 97.6 days ago
    "brands_viewed_90d": 1,
    "brands_bought_365d": 4,
    "brand_view_hhi_90d": 1.0,
    "brand_spend_hhi_365d": (20**2 + 590**2 + 60**2 + 45**2) / 715**2,
    "top_brand_spend_share_365d": 590 / 715,
    # cross-partner
    "partners_visited_30d": 2,
    "partners_visited_90d": 2,
    "partners_visited_180d": 3,
    "partners_visited_365d": 3,
    "partners_bought_90d": 2,
    "partners_bought_365d": 3,
    "partner_event_hhi_365d": (7**2 + 6**2 + 3**2) / 16**2,
    "multi_partner_products_90d": 1,  # F1 at P1 (50) and P2 (45)
    "price_spread_seen_90d": (50 - 45) / 45,
    "compared_purchases_365d": 1,  # a05: E1 viewed at P2 and P3 2 days before; a11's P1 view is 14 days before
    "compared_purchase_share_365d": 1 / 5,
    "bought_cheapest_share_365d": 1.0,
    # identity and devices
    "devices": 2,
    "emails": 2,
    "phones": 1,
    "customers": 2,
    "subscribers": 2,
    "subscribe_events": 1,
    "logins_90d": 1,
    "desktop_share_365d": 4 / 14,
    "mobile_share_365d": 10 / 14,
    "tablet_share_365d": 0.0,
    "main_device_type": 1,
    "messages_received_90d": 2,
    "messages_received_365d": 2,
    "campaign_clicks_90d": 1,
    "campaign_clicks_365d": 1,
    "campaign_click_rate_90d": 0.5,
    "campaign_click_rate_365d": 0.5,
    # time habits
    "night_share_365d": 1 / 16,
    "morning_share_365d": 5 / 16,
    "afternoon_share_365d": 4 / 16,
    "evening_share_365d": 6 / 16,
    "mon_share_365d": 3 / 16,
    "tue_share_365d": 2 / 16,
    "wed_share_365d": 2 / 16,
    "thu_share_365d": 3 / 16,
    "fri_share_365d": 1 / 16,
    "sat_share_365d": 3 / 16,
    "sun_share_365d": 2 / 16,
    "weekend_share_365d": 5 / 16,
    "peak_hour_365d": 8,  # hours 8, 10, 12, 20, 23 have two events each: the lowest wins
    "peak_weekday_365d": 0,  # mon, thu, sat have three: mon
    # geography and payment
    "country": 32,  # BG: B = 1, G = 6 -> 1 * 26 + 6
    "countries_365d": 2,
    "cities_365d": 2,
    "pay_card_share_365d": 0.5,
    "pay_cash_on_delivery_share_365d": 0.0,
    "pay_bank_transfer_share_365d": 0.0,
    "pay_installments_share_365d": 0.25,
    "pay_wallet_share_365d": 0.0,
    "pay_other_share_365d": 0.25,
    "installment_orders_365d": 1,
    "main_payment_method": 0,  # card and installments both have two lines: the lower code
    # purchasing power
    "viewed_price_rel_median_90d": (50 / 47.5 + 45 / 47.5) / 2,
    "bought_price_rel_median_365d": (20 / 20 + 90 / 105 + 30 / 30 + 500 / 500 + 45 / 47.5) / 5,
    "premium_purchase_share_365d": 0.0,
    "max_order_value_365d": 500.0,
    "max_item_price_365d": 500.0,
    "mean_item_price_365d": (20 + 90 + 30 + 500 + 45) / 5,
    # social influence
    "forwarded_clicks_365d": 1,
    "forwarded_clickers_365d": 1,
    "messages_forwarded_365d": 1,
    "forward_rate_365d": 0.5,
    "clicks_on_others_messages_365d": 0,  # A clicked only its own message
}

EXPECTED_B = {
    "clicks_on_others_messages_365d": 1,
    "forwarded_clicks_365d": 0,
    "forward_rate_365d": NAN,
    "bought_price_rel_median_365d": 200 / 105,
    "premium_purchase_share_365d": 1.0,
    "viewed_price_rel_median_90d": 110 / 105,
    "pay_card_share_365d": 1.0,
    "orders_365d": 1,
    "compared_purchases_365d": 0,
    "compared_purchase_share_365d": 0.0,
    "bought_cheapest_share_365d": NAN,
    "multi_partner_products_90d": 0,
    "price_spread_seen_90d": NAN,
    "interpurchase_days_mean_365d": NAN,
    "interpurchase_days_std_365d": NAN,
    "campaign_click_rate_365d": NAN,
    "campaign_clicks_365d": 1,
    "new_categories_bought_90d": 1,
    "main_device_type": 1,
    "mobile_share_365d": 1.0,
}

# C has one page view (P1, 15 days before the cut-off at 16:00, a Tuesday) and nothing else: every other
# feature is its catalogue "missing" value: 0 for counts and sums, NaN for the rest.
EXPECTED_C_SET = {
    **{f"events_{w}d": 1 for w in (30, 90, 180, 365)},
    **{f"active_days_{w}d": 1 for w in (30, 90, 180, 365)},
    **{f"partners_visited_{w}d": 1 for w in (30, 90, 180, 365)},
    "days_since_last_event": 15 - 16 / 24,
    "days_since_first_event": 15 - 16 / 24,
    "night_share_365d": 0.0,
    "morning_share_365d": 0.0,
    "afternoon_share_365d": 1.0,
    "evening_share_365d": 0.0,
    **{f"{d}_share_365d": 0.0 for d in ("mon", "wed", "thu", "fri", "sat", "sun", "weekend")},
    "tue_share_365d": 1.0,
    "peak_hour_365d": 16,
    "peak_weekday_365d": 1,
    "partner_event_hhi_365d": 1.0,
}


def _rows(table: pa.Table) -> dict[str, dict[str, object]]:
    return {row["persona_id"]: row for row in table.to_pylist()}


def _same(actual, expected) -> bool:
    if isinstance(expected, float) and math.isnan(expected):
        return actual is not None and math.isnan(actual)
    return actual == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.fixture(scope="module")
def hand_features() -> pa.Table:
    return compute_local(hand_table(), AS_OF, FeaturesConfig(), CATEGORIES)


def test_the_run_plan_chooses_these_categories():
    facts = EventFacts.from_table(block_facts(hand_table()))
    view = PlanView.from_config(JobConfig(features=FeaturesConfig(as_of=AS_OF)))
    assert build_plan("r1", AS_OF, view, facts).categories == CATEGORIES


def test_every_catalogue_feature_has_a_hand_worked_value():
    names = feature_names(FeaturesConfig())
    assert sorted(set(names) - EXPECTED_A.keys()) == [], "features without an expected value for persona A"
    assert sorted(EXPECTED_A.keys() - set(names)) == [], "expected values for features that do not exist"


@pytest.mark.parametrize("name", feature_names(FeaturesConfig()))
def test_persona_a(hand_features, name):
    actual = _rows(hand_features)["A"][name]
    assert _same(actual, EXPECTED_A[name]), f"{name}: got {actual!r}, expected {EXPECTED_A[name]!r}"


def test_persona_b(hand_features):
    row = _rows(hand_features)["B"]
    wrong = {k: (row[k], v) for k, v in EXPECTED_B.items() if not _same(row[k], v)}
    assert not wrong


def test_persona_c_missing_is_nan_and_counts_are_zero(hand_features):
    row = _rows(hand_features)["C"]
    wrong = {}
    for feature in catalog(FeaturesConfig()):
        default = 0 if feature.missing == "0" else NAN
        expected = EXPECTED_C_SET.get(feature.name, default)
        if not _same(row[feature.name], expected):
            wrong[feature.name] = (row[feature.name], expected)
    assert not wrong


def test_rows_are_personas_with_events_before_the_cut_off(hand_features):
    # no row for the persona-less event; the table is sorted by persona_id; as_of is the cut-off
    assert hand_features.column("persona_id").to_pylist() == ["A", "B", "C"]
    assert set(hand_features.column("as_of").to_pylist()) == {AS_OF}


def test_types_follow_the_catalogue(hand_features):
    for feature in catalog(FeaturesConfig()):
        expected = "double" if feature.dtype == "float64" else "int64"
        assert str(hand_features.schema.field(feature.name).type) == expected


def test_pinned_categories_set_slots_and_other_code():
    config = FeaturesConfig(categories=["fashion", "books"])
    row = _rows(compute_local(hand_table(), AS_OF, config, ["fashion", "books"]))["A"]
    assert row["cat00_purchases_365d"] == 1 and row["cat00_views_90d"] == 2  # fashion
    assert row["cat01_spend_share_365d"] == pytest.approx(20 / 715)  # books
    assert row["favourite_category"] == 2  # electronics is not pinned: "another category"
    assert "cat02_views_90d" not in row


def test_comparison_days_is_configurable():
    # with 15 days, a11's purchase of F1 (viewed at P1 14.1 days and P2 0.25 days before) is compared too
    config = FeaturesConfig(comparison_days=15)
    row = _rows(compute_local(hand_table(), AS_OF, config, CATEGORIES))["A"]
    assert row["compared_purchases_365d"] == 2
    assert row["bought_cheapest_share_365d"] == 1.0  # 45 = the lowest of 50 and 45


def test_forwarded_clicks_exclude_every_recipient():
    rows = [
        ev("A", "s1", 5, "10:00", "P1", "message_sent", click_token="t"),
        ev("C", "s2", 5, "10:00", "P1", "message_sent", click_token="t"),  # the same message to C too
        ev("C", "k1", 4, "10:00", "P1", "message_click", click_token="t"),  # a recipient: not forwarded
        ev("B", "k2", 4, "11:00", "P1", "message_click", click_token="t"),  # forwarded
        ev("B", "k3", 4, "12:00", "P2", "message_click", click_token="t"),  # another partner's token "t"
    ]
    links = social_links(social_tokens(pa.Table.from_pylist(rows, schema=SCHEMA), AS_OF)).to_pylist()
    got = sorted((r["persona_id"], r["role"], r["other_persona_id"], r["click_id"]) for r in links)
    assert got == [("A", "sender", "B", "k2"), ("B", "clicker", "A", "k2"), ("C", "sender", "B", "k2")]


def test_who_is_a_recipient_depends_on_the_cut_off():
    # B clicks A's message 8 days before AS_OF and is sent the same token itself 5 days before AS_OF: as of
    # 6 days before, B's click is forwarded; as of AS_OF, B is a recipient and the click is B's own
    rows = [
        ev("A", "s1", 10, "10:00", "P1", "message_sent", click_token="t"),
        ev("B", "k1", 8, "10:00", "P1", "message_click", click_token="t"),
        ev("B", "s2", 5, "10:00", "P1", "message_sent", click_token="t"),
    ]
    events = pa.Table.from_pylist(rows, schema=SCHEMA)
    earlier = AS_OF - dt.timedelta(days=6)
    links = snapshot_links(social_tokens(events, AS_OF), [earlier, AS_OF])
    for as_of in (earlier, AS_OF):
        assert links_as_of(links, as_of).to_pylist() == social_links(social_tokens(events, as_of)).to_pylist()
    assert links_as_of(links, AS_OF).num_rows == 0
    assert sorted(r["role"] for r in links_as_of(links, earlier).to_pylist()) == ["clicker", "sender"]
    features = {
        as_of: _rows(compute_local(events, as_of, FeaturesConfig(), CATEGORIES))["A"]["forwarded_clicks_365d"]
        for as_of in (earlier, AS_OF)
    }
    assert features == {earlier: 1, AS_OF: 0}


def test_median_prices_count_each_offer_once_from_when_it_was_first_seen():
    phone = dict(category="electronics/phones", product_id="E1")
    first = [
        ev("A", "v1", 20, "10:00", "P1", "product_view", price=100.0, **phone),
        ev("A", "v2", 10, "10:00", "P2", "product_view", price=300.0, **phone),
    ]
    second = [
        ev("B", "v3", 15, "10:00", "P1", "purchase", price=100.0, **phone),  # the same offer again
        ev("B", "v4", 2, "10:00", "P1", "product_view", price=900.0, **phone),
        ev("B", "v5", 2, "10:00", "P1", "product_view", price=0.0, **phone),
    ]  # unpriced: no offer
    offers = [price_offers(pa.Table.from_pylist(rows, schema=SCHEMA)) for rows in (first, second)]

    def median(days_before: int) -> list:
        return median_prices(offers, AS_OF - dt.timedelta(days=days_before)).to_pylist()

    assert median(0) == [{"category": "electronics/phones", "median_price": 300.0}]  # 100, 300, 900
    assert median(5) == [{"category": "electronics/phones", "median_price": 200.0}]  # 100, 300
    assert median(12) == [{"category": "electronics/phones", "median_price": 100.0}]
    assert median(30) == []


def test_another_category_is_coded_past_the_last_slot():
    # 10 slots, one category in the plan: toys is "another category" (code 10), never slot 1
    rows = [
        ev("T", f"t{i}", 3 + i, "10:00", "P1", "product_view", category="toys/lego", product_id="T1") for i in range(3)
    ]
    rows.append(ev("T", "b1", 2, "10:00", "P1", "product_view", category="books/novels", product_id="X1"))
    row = _rows(compute_local(pa.Table.from_pylist(rows, schema=SCHEMA), AS_OF, FeaturesConfig(), ["books"]))["T"]
    assert row["favourite_category"] == 10
    assert row["cat00_views_90d"] == 1 and row["cat01_views_90d"] == 0
    with pytest.raises(ValueError, match="3 feature categories for 2 category slots"):
        compute_local(hand_table(), AS_OF, FeaturesConfig(top_categories=2), CATEGORIES[:3])


def test_emails_and_phones_count_as_identity_resolution_normalises_them():
    rows = [
        ev(
            "N",
            "n1",
            9,
            "10:00",
            "P1",
            "login",
            email="Foo.Bar+shop@GoogleMail.com",
            phone="0881 234 567",
            country="BG",
        ),
        ev("N", "n2", 8, "10:00", "P1", "login", email=" foobar@gmail.com", phone="+359 88 123 4567"),
        ev("N", "n3", 7, "10:00", "P2", "login", email="not-an-email", phone="00359881234567", country="RO"),
        ev("N", "n4", 6, "10:00", "P2", "login", email="foo.bar@example.com", phone="0881 234 567", country="RO"),
        ev("N", "n5", 5, "10:00", "P2", "login", phone="0000000000", country="BG"),  # not a possible number
        ev("N", "n6", 4, "10:00", "P2", "login", phone="12"),
    ]
    row = _rows(compute_local(pa.Table.from_pylist(rows, schema=SCHEMA), AS_OF, FeaturesConfig(), CATEGORIES))["N"]
    assert row["emails"] == 2  # foobar@gmail.com, foo.bar@example.com
    # +359881234567 three times (a BG local number, typed with +359, typed with 00359), and the same digits as a
    # Romanian number; the last 9 digits (the rule before issue 10) would have counted one
    assert row["phones"] == 2
