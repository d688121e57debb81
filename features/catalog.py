"""The feature catalogue: every column of `features/` declared as data (Feast-style feature objects).

A `Feature` names its column, group, dtype, window and meaning, and says how it is computed: `stat`
names a vectorised computation in `features.stats` and `params` are its arguments. The catalogue
depends only on `FeaturesConfig` (windows, number of category slots), never on data, so
`feature_names` / `xgboost_feature_types` are known before anything runs and FEATURES.md is generated
from it (`features.docs`).

Conventions every feature keeps:
- Only events with `ts < as_of` count; a window of `w` days means `as_of - w days <= ts < as_of`;
  window `None` means all history before the cut-off. Rows with a null `persona_id` are ignored.
- Counts (int64) and sums such as revenue are 0 when nothing happened; everything else is float64 and
  NaN where the value does not exist (a rate with nothing to divide, days since something that never
  happened), never 0. `Feature.missing` says which.
- Categorical features ('c' in `xgboost_feature_types`) hold integer codes as float64 (NaN = missing)
  from fixed vocabularies (the input contract's, `jobs.contract.schema`, and the ones declared here), so
  a code means the same thing in every run: XGBoost reads them directly with `enable_categorical` /
  `feature_types`.
- Category slots `catNN_*`: slot NN is the NN-th of the run plan's feature categories (`RunPlan.categories`,
  top-level category names); the run's list is recorded in the `features/` marker (`categories`). There
  are `category_slots(config)` slots whatever the plan fills; the code past the last slot means "another
  category".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from jobs.config import FeaturesConfig
from jobs.contract.schema import DEVICE_TYPES, PAYMENT_METHODS, TRAFFIC_SOURCES

INT = "int64"
FLOAT = "float64"

GROUPS: dict[str, str] = {
    "rfm": "Recency, frequency, monetary",
    "engagement": "Engagement and funnel",
    "categories": "Categories and brands",
    "cross_partner": "Cross-partner behaviour",
    "identity": "Identity and devices",
    "time": "Time habits",
    "geo_payment": "Geography and payment",
    "purchasing_power": "Purchasing power",
    "social": "Social influence",
    "lifetime": "Lifetime (the whole history, for sparse purchase-only data)",
}

# Fixed vocabularies: a categorical code is the index in its tuple; anything else is "other" (= len).
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAYPARTS = (("night", 0, 6), ("morning", 6, 12), ("afternoon", 12, 18), ("evening", 18, 24))
COUNTRY_OTHER = 26 * 26  # code of a country value that is not two ASCII letters

VOCABULARIES: dict[str, tuple[str, ...]] = {
    "device_type": DEVICE_TYPES,
    "payment_method": PAYMENT_METHODS,
    "traffic_source": TRAFFIC_SOURCES,
    "weekday": WEEKDAYS,
}

VIEW = ("product_view",)
CART = ("add_to_cart",)
PURCHASE = ("purchase",)
SENT = ("message_sent",)
CLICK = ("message_click",)
SHOPPING = ("product_view", "add_to_cart", "purchase")

# Reasons: lower-case words, no digits (no values, ids or windows); category slots name their category.
REASON_TEXT = re.compile(r"[a-z][a-z ]{2,39}")
CATEGORY_PLACEHOLDER = "{category}"
CATEGORY_INTEREST = "interest in " + CATEGORY_PLACEHOLDER
CATEGORY_PURCHASES = "purchases in " + CATEGORY_PLACEHOLDER


def country_code(country: str | None) -> int | None:
    """Stable code of an ISO 3166-1 alpha-2 country: (A..Z) * 26 + (A..Z), e.g. BG = 32; other = 676."""
    if country is None:
        return None
    value = country.strip().upper()
    if len(value) == 2 and value.isascii() and value.isalpha():
        return (ord(value[0]) - 65) * 26 + (ord(value[1]) - 65)
    return COUNTRY_OTHER


# How live events (POST /v1/events) move a feature between runs: stat -> the parameters under which one event
# updates the value incrementally (`jobs.serving.online.updated_features` does it; a test checks it moves
# exactly the features `Feature.online` names, and FEATURES.md marks them). `days_since` only as `which: last`.
ONLINE_STATS: dict[str, frozenset[str]] = {
    "count": frozenset({"types"}),
    "orders": frozenset(),
    "items": frozenset(),
    "revenue": frozenset(),
    "days_since": frozenset({"types", "which"}),
    "cat_count": frozenset({"types", "slot"}),
}


@dataclass(frozen=True, eq=False)
class Feature:
    """One column of the feature table: what it means and how `features.compute` computes it."""

    name: str
    group: str
    dtype: Literal["int64", "float64"]
    window: int | None
    description: str
    stat: str
    params: dict[str, Any] = field(default_factory=dict)
    kind: Literal["q", "c"] = "q"
    missing: str = "0"  # the value when the persona has nothing to measure: "0" or "NaN (why)"
    # what a partner may be told when this feature raises a score: a short behaviour label, never a value, an
    # id or a column name; "{category}" stands for the slot's category name (`reason_labels`)
    reason: str = ""

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"feature {self.name}: unknown group {self.group!r}")
        if not self.reason or not REASON_TEXT.fullmatch(self.reason.replace(CATEGORY_PLACEHOLDER, "category")):
            raise ValueError(f"feature {self.name}: reason {self.reason!r} is not a short lower-case behaviour label")
        if self.kind == "c" and self.dtype != FLOAT:
            raise ValueError(f"feature {self.name}: categorical codes are float64 so that NaN means missing")

    @property
    def online(self) -> bool:
        """Whether the online path updates this feature with live events between runs (`ONLINE_STATS`)."""
        allowed = ONLINE_STATS.get(self.stat)
        if allowed is None or not set(self.params) <= allowed:
            return False
        return self.stat != "days_since" or self.params.get("which") == "last"


def windows(config: FeaturesConfig) -> list[int]:
    return sorted(set(config.windows_days))


def long_windows(config: FeaturesConfig) -> list[int]:
    """The windows of 30 days or more: rates and shares need enough events to mean anything."""
    return [w for w in windows(config) if w >= 30] or windows(config)


def category_slots(config: FeaturesConfig) -> int:
    return len(config.categories) if config.categories else config.top_categories


def _window_text(w: int | None) -> str:
    return "all history before the cut-off" if w is None else f"the last {w} days"


def catalog(config: FeaturesConfig) -> list[Feature]:
    """Every feature, in table column order, for this features config."""
    out: list[Feature] = []

    def add(name, group, dtype, window, description, stat, kind="q", missing="0", *, reason, **params):
        out.append(Feature(name, group, dtype, window, description, stat, params, kind, missing, reason))

    W, WL = windows(config), long_windows(config)
    nan_no_orders = "NaN (no orders)"

    # --- Recency, frequency, monetary -----------------------------------------------------------
    for w in W:
        add(
            f"orders_{w}d",
            "rfm",
            INT,
            w,
            f"distinct orders (partner + order_id) in {_window_text(w)}",
            "orders",
            reason="purchase frequency",
        )
    for w in W:
        add(
            f"items_{w}d",
            "rfm",
            INT,
            w,
            f"items bought (sum of quantity, 1 when absent) in {_window_text(w)}",
            "items",
            reason="purchase frequency",
        )
    for w in W:
        add(
            f"revenue_{w}d",
            "rfm",
            FLOAT,
            w,
            f"spend (sum of price x quantity of purchases) in {_window_text(w)}",
            "revenue",
            reason="spend",
        )
    for w in W:
        add(
            f"aov_{w}d",
            "rfm",
            FLOAT,
            w,
            f"average order value in {_window_text(w)}",
            "aov",
            missing=nan_no_orders,
            reason="order value",
        )
    for label, types in (("event", None), ("view", VIEW), ("cart", CART), ("purchase", PURCHASE), ("click", CLICK)):
        what = "any event" if types is None else f"the last {'/'.join(types)}"
        add(
            f"days_since_last_{label}",
            "rfm",
            FLOAT,
            None,
            f"days from {what} to the cut-off (fractional)",
            "days_since",
            missing=f"NaN (no {label} ever)",
            types=types,
            which="last",
            reason=f"recency of {label}s",
        )
    add(
        "days_since_first_event",
        "rfm",
        FLOAT,
        None,
        "tenure: days from the first event to the cut-off",
        "days_since",
        missing="NaN (no events)",
        types=None,
        which="first",
        reason="tenure",
    )
    add(
        "interpurchase_days_mean_365d",
        "rfm",
        FLOAT,
        365,
        "mean days between consecutive orders in the last 365 days",
        "interpurchase",
        missing="NaN (fewer than 2 orders)",
        how="mean",
        reason="purchase rhythm",
    )
    add(
        "interpurchase_days_std_365d",
        "rfm",
        FLOAT,
        365,
        "population standard deviation of the days between consecutive orders in the last 365 days",
        "interpurchase",
        missing="NaN (fewer than 3 orders)",
        how="std",
        reason="purchase rhythm",
    )
    for measure in ("orders", "revenue", "views"):
        add(
            f"{measure}_trend_30d_vs_90d",
            "rfm",
            FLOAT,
            90,
            f"(r - e) / (r + e) with r = {measure} per day in the last 30 days and e = {measure} per day in the "
            "30 to 90 days before the cut-off: +1 only recent, -1 only earlier",
            "trend",
            missing=f"NaN (no {measure} in 90 days)",
            measure=measure,
            recent=30,
            reason=f"trend in {measure}",
        )

    # --- Engagement and funnel --------------------------------------------------------------------
    for w in W:
        add(
            f"events_{w}d",
            "engagement",
            INT,
            w,
            f"events of any type in {_window_text(w)}",
            "count",
            types=None,
            reason="site activity",
        )
    for w in W:
        add(
            f"sessions_{w}d",
            "engagement",
            INT,
            w,
            f"distinct sessions (session_key) in {_window_text(w)}",
            "distinct",
            key="session",
            types=None,
            reason="site activity",
        )
    for w in W:
        add(
            f"product_views_{w}d",
            "engagement",
            INT,
            w,
            f"product_view events in {_window_text(w)}",
            "count",
            types=VIEW,
            reason="product browsing",
        )
    for w in W:
        add(
            f"carts_{w}d",
            "engagement",
            INT,
            w,
            f"add_to_cart events in {_window_text(w)}",
            "count",
            types=CART,
            reason="cart activity",
        )
    for w in W:
        add(
            f"active_days_{w}d",
            "engagement",
            INT,
            w,
            f"distinct UTC days with an event in {_window_text(w)}",
            "distinct",
            key="day",
            types=None,
            reason="site activity",
        )
    for w in WL:
        add(
            f"view_to_cart_rate_{w}d",
            "engagement",
            FLOAT,
            w,
            f"add_to_cart / product_view events in {_window_text(w)}",
            "ratio",
            missing="NaN (no product views)",
            num=CART,
            den=VIEW,
            reason="shopping funnel",
        )
    for w in WL:
        add(
            f"cart_to_purchase_rate_{w}d",
            "engagement",
            FLOAT,
            w,
            f"purchase lines / add_to_cart events in {_window_text(w)}",
            "ratio",
            missing="NaN (no carts)",
            num=PURCHASE,
            den=CART,
            reason="shopping funnel",
        )
    for w in WL:
        add(
            f"view_to_purchase_rate_{w}d",
            "engagement",
            FLOAT,
            w,
            f"purchase lines / product_view events in {_window_text(w)}",
            "ratio",
            missing="NaN (no product views)",
            num=PURCHASE,
            den=VIEW,
            reason="shopping funnel",
        )
    add(
        "session_minutes_mean_90d",
        "engagement",
        FLOAT,
        90,
        "mean session length (first to last event of a session_key, minutes) over sessions in the last 90 days",
        "session_minutes",
        missing="NaN (no sessions)",
        reason="session depth",
    )
    add(
        "events_per_session_90d",
        "engagement",
        FLOAT,
        90,
        "events with a session_key per distinct session, last 90 days",
        "events_per_session",
        missing="NaN (no sessions)",
        reason="session depth",
    )
    add(
        "products_viewed_90d",
        "engagement",
        INT,
        90,
        "distinct products viewed in the last 90 days",
        "distinct",
        key="product",
        types=VIEW,
        reason="product browsing",
    )
    for source in TRAFFIC_SOURCES:
        add(
            f"traffic_{source}_share_365d",
            "engagement",
            FLOAT,
            365,
            f"share of events with a traffic_source that came from {source!r}, last 365 days",
            "share",
            missing="NaN (no traffic_source)",
            key="traffic_source",
            values=(source,),
            reason="traffic source",
        )
    add(
        "main_traffic_source",
        "engagement",
        FLOAT,
        365,
        f"most frequent traffic_source in the last 365 days; codes {_codes_text(TRAFFIC_SOURCES)}",
        "mode",
        kind="c",
        missing="NaN (no traffic_source)",
        key="traffic_source",
        types=None,
        reason="traffic source",
    )

    # --- Categories and brands --------------------------------------------------------------------
    for slot in range(category_slots(config)):
        c = f"cat{slot:02d}"
        add(
            f"{c}_views_90d",
            "categories",
            INT,
            90,
            f"product views in feature category {slot}, last 90 days",
            "cat_count",
            slot=slot,
            types=VIEW,
            reason=CATEGORY_INTEREST,
        )
        add(
            f"{c}_purchases_365d",
            "categories",
            INT,
            365,
            f"purchase lines in feature category {slot}, last 365 days",
            "cat_count",
            slot=slot,
            types=PURCHASE,
            reason=CATEGORY_PURCHASES,
        )
        add(
            f"{c}_spend_share_365d",
            "categories",
            FLOAT,
            365,
            f"share of the 365-day spend in feature category {slot}",
            "cat_spend_share",
            missing="NaN (no spend)",
            slot=slot,
            reason=CATEGORY_PURCHASES,
        )
        add(
            f"{c}_months_bought_6m",
            "categories",
            INT,
            180,
            f"of the six 30-day blocks before the cut-off, those with a purchase in feature category {slot}",
            "cat_months",
            slot=slot,
            months=6,
            reason=CATEGORY_PURCHASES,
        )
    add(
        "favourite_category",
        "categories",
        FLOAT,
        365,
        "feature category with the most view/cart/purchase events in the last 365 days: its slot number, "
        f"{category_slots(config)} = another category",
        "favourite_category",
        kind="c",
        missing="NaN (no categorised events)",
        reason="category mix",
    )
    add(
        "categories_viewed_90d",
        "categories",
        INT,
        90,
        "distinct top-level categories viewed in the last 90 days",
        "distinct",
        key="category",
        types=VIEW,
        reason="category mix",
    )
    add(
        "categories_bought_365d",
        "categories",
        INT,
        365,
        "distinct top-level categories bought in the last 365 days",
        "distinct",
        key="category",
        types=PURCHASE,
        reason="category mix",
    )
    add(
        "category_view_hhi_90d",
        "categories",
        FLOAT,
        90,
        "concentration of product views over top-level categories (sum of squared shares), last 90 days",
        "hhi",
        missing="NaN (no categorised views)",
        key="category",
        types=VIEW,
        weight="count",
        reason="category mix",
    )
    add(
        "new_categories_bought_90d",
        "categories",
        INT,
        90,
        "top-level categories bought in the last 90 days and never bought before that window",
        "new_categories",
        reason="new categories",
    )
    add(
        "brands_viewed_90d",
        "categories",
        INT,
        90,
        "distinct brands viewed in the last 90 days",
        "distinct",
        key="brand",
        types=VIEW,
        reason="brand preferences",
    )
    add(
        "brands_bought_365d",
        "categories",
        INT,
        365,
        "distinct brands bought in the last 365 days",
        "distinct",
        key="brand",
        types=PURCHASE,
        reason="brand preferences",
    )
    add(
        "brand_view_hhi_90d",
        "categories",
        FLOAT,
        90,
        "concentration of product views over brands (sum of squared shares), last 90 days",
        "hhi",
        missing="NaN (no branded views)",
        key="brand",
        types=VIEW,
        weight="count",
        reason="brand preferences",
    )
    add(
        "brand_spend_hhi_365d",
        "categories",
        FLOAT,
        365,
        "concentration of spend over brands (sum of squared shares), last 365 days",
        "hhi",
        missing="NaN (no branded spend)",
        key="brand",
        types=PURCHASE,
        weight="revenue",
        reason="brand preferences",
    )
    add(
        "top_brand_spend_share_365d",
        "categories",
        FLOAT,
        365,
        "share of the branded 365-day spend on the top brand",
        "top_share",
        missing="NaN (no branded spend)",
        key="brand",
        types=PURCHASE,
        weight="revenue",
        reason="brand preferences",
    )

    # --- Cross-partner behaviour ------------------------------------------------------------------
    for w in WL:
        add(
            f"partners_visited_{w}d",
            "cross_partner",
            INT,
            w,
            f"distinct partners with any event in {_window_text(w)}",
            "distinct",
            key="partner",
            types=None,
            reason="shopping across stores",
        )
    for w in (90, 365):
        add(
            f"partners_bought_{w}d",
            "cross_partner",
            INT,
            w,
            f"distinct partners bought from in {_window_text(w)}",
            "distinct",
            key="partner",
            types=PURCHASE,
            reason="shopping across stores",
        )
    add(
        "partner_event_hhi_365d",
        "cross_partner",
        FLOAT,
        365,
        "concentration of events over partners (sum of squared shares), last 365 days",
        "hhi",
        missing="NaN (no events)",
        key="partner",
        types=None,
        weight="count",
        reason="shopping across stores",
    )
    add(
        "multi_partner_products_90d",
        "cross_partner",
        INT,
        90,
        "distinct products viewed at 2+ partners, last 90 days",
        "multi_partner_products",
        reason="price comparison",
    )
    add(
        "price_spread_seen_90d",
        "cross_partner",
        FLOAT,
        90,
        "mean over products viewed at 2+ partners in the last 90 days of (max - min) / min viewed price",
        "price_spread",
        missing="NaN (no product viewed at 2+ partners)",
        reason="price comparison",
    )
    days = config.comparison_days
    add(
        "compared_purchases_365d",
        "cross_partner",
        INT,
        365,
        f"purchase lines whose product was viewed at 2+ partners within {days} days before (last 365 days)",
        "compared_purchases",
        reason="price comparison",
    )
    add(
        "compared_purchase_share_365d",
        "cross_partner",
        FLOAT,
        365,
        "share of the 365-day purchase lines bought after such a comparison (the price-hunter signal)",
        "compared_share",
        missing="NaN (no purchases)",
        reason="price comparison",
    )
    add(
        "bought_cheapest_share_365d",
        "cross_partner",
        FLOAT,
        365,
        "of the compared purchase lines (last 365 days), the share bought at or below the lowest price viewed "
        "in the comparison",
        "cheapest_share",
        missing="NaN (no compared purchases)",
        reason="price comparison",
    )

    # --- Identity and devices ---------------------------------------------------------------------
    for key, text in (
        ("device", "distinct device_id"),
        ("email", "distinct emails (normalised as identity resolution does; invalid values not counted)"),
        ("phone", "distinct phones (E.164, the event's country as the region; impossible numbers not counted)"),
        ("customer", "distinct partner customer records (partner + customer_id)"),
        ("subscriber", "distinct partner subscriber records (partner + subscriber_id)"),
    ):
        add(
            f"{key}s",
            "identity",
            INT,
            None,
            f"{text} seen, all history before the cut-off",
            "distinct",
            key=key,
            types=None,
            reason="devices and accounts",
        )
    add(
        "subscribe_events",
        "identity",
        INT,
        None,
        "subscribe events, all history before the cut-off",
        "count",
        types=("subscribe",),
        reason="newsletter subscription",
    )
    add(
        "logins_90d",
        "identity",
        INT,
        90,
        "login events in the last 90 days",
        "count",
        types=("login",),
        reason="account activity",
    )
    for device in DEVICE_TYPES:
        add(
            f"{device}_share_365d",
            "identity",
            FLOAT,
            365,
            f"share of events with a device_type that came from a {device}, last 365 days",
            "share",
            missing="NaN (no device_type)",
            key="device_type",
            values=(device,),
            reason="devices used",
        )
    add(
        "main_device_type",
        "identity",
        FLOAT,
        365,
        f"most frequent device_type in the last 365 days; codes {_codes_text(DEVICE_TYPES)}",
        "mode",
        kind="c",
        missing="NaN (no device_type)",
        key="device_type",
        types=None,
        reason="devices used",
    )
    for w in (90, 365):
        add(
            f"messages_received_{w}d",
            "identity",
            INT,
            w,
            f"campaign messages sent to the persona in {_window_text(w)}",
            "count",
            types=SENT,
            reason="campaign engagement",
        )
    for w in (90, 365):
        add(
            f"campaign_clicks_{w}d",
            "identity",
            INT,
            w,
            f"campaign message clicks in {_window_text(w)}",
            "count",
            types=CLICK,
            reason="campaign engagement",
        )
    for w in (90, 365):
        add(
            f"campaign_click_rate_{w}d",
            "identity",
            FLOAT,
            w,
            f"message_click / message_sent events in {_window_text(w)}",
            "ratio",
            missing="NaN (no messages received)",
            num=CLICK,
            den=SENT,
            reason="campaign engagement",
        )

    # --- Time habits (UTC: the contract carries no time zone) -------------------------------------
    for name, lo, hi in DAYPARTS:
        add(
            f"{name}_share_365d",
            "time",
            FLOAT,
            365,
            f"share of events between {lo:02d}:00 and {hi:02d}:00 UTC, last 365 days",
            "hour_share",
            missing="NaN (no events)",
            lo=lo,
            hi=hi,
            reason="time of day",
        )
    for day_index, day in enumerate(WEEKDAYS):
        add(
            f"{day}_share_365d",
            "time",
            FLOAT,
            365,
            f"share of events on {day.capitalize()} (UTC), last 365 days",
            "weekday_share",
            missing="NaN (no events)",
            days=(day_index,),
            reason="day of week",
        )
    add(
        "weekend_share_365d",
        "time",
        FLOAT,
        365,
        "share of events on Saturday or Sunday (UTC), last 365 days",
        "weekday_share",
        missing="NaN (no events)",
        days=(5, 6),
        reason="day of week",
    )
    add(
        "peak_hour_365d",
        "time",
        FLOAT,
        365,
        "UTC hour (0-23) with the most events in the last 365 days (lowest on ties)",
        "peak",
        missing="NaN (no events)",
        key="hour",
        reason="time of day",
    )
    add(
        "peak_weekday_365d",
        "time",
        FLOAT,
        365,
        "weekday with the most events in the last 365 days (lowest on ties); codes 0 = mon ... 6 = sun",
        "peak",
        kind="c",
        missing="NaN (no events)",
        key="weekday",
        reason="day of week",
    )

    # --- Geography and payment --------------------------------------------------------------------
    add(
        "country",
        "geo_payment",
        FLOAT,
        365,
        "most frequent country in the last 365 days; code (A..Z) * 26 + (A..Z) of the alpha-2 code (BG = 32), "
        f"{COUNTRY_OTHER} = not two letters",
        "mode",
        kind="c",
        missing="NaN (no country)",
        key="country",
        types=None,
        reason="location",
    )
    add(
        "countries_365d",
        "geo_payment",
        INT,
        365,
        "distinct countries in the last 365 days",
        "distinct",
        key="country",
        types=None,
        reason="location",
    )
    add(
        "cities_365d",
        "geo_payment",
        INT,
        365,
        "distinct cities (country + city) in the last 365 days",
        "distinct",
        key="city",
        types=None,
        reason="location",
    )
    for method in PAYMENT_METHODS + ("other",):
        what = f"paid with {method!r}" if method != "other" else "paid with a method outside the vocabulary"
        add(
            f"pay_{method}_share_365d",
            "geo_payment",
            FLOAT,
            365,
            f"share of the 365-day orders with a payment_method {what}",
            "payment_share",
            missing="NaN (no orders with a payment_method)",
            method=method,
            reason="payment preferences",
        )
    add(
        "installment_orders_365d",
        "geo_payment",
        INT,
        365,
        "orders paid in installments in the last 365 days",
        "orders",
        payment="installments",
        reason="payment preferences",
    )
    add(
        "main_payment_method",
        "geo_payment",
        FLOAT,
        365,
        f"most frequent payment_method of purchase lines in the last 365 days; codes {_codes_text(PAYMENT_METHODS)}",
        "mode",
        kind="c",
        missing="NaN (no purchases with a payment_method)",
        key="payment_method",
        types=PURCHASE,
        reason="payment preferences",
    )

    # --- Purchasing power -------------------------------------------------------------------------
    add(
        "viewed_price_rel_median_90d",
        "purchasing_power",
        FLOAT,
        90,
        "mean over product views (last 90 days) of price / the median offer price of the view's category",
        "price_rel_median",
        missing="NaN (no priced views)",
        types=VIEW,
        reason="price level",
    )
    add(
        "bought_price_rel_median_365d",
        "purchasing_power",
        FLOAT,
        365,
        "mean over purchase lines (last 365 days) of price / the median offer price of the line's category",
        "price_rel_median",
        missing="NaN (no priced purchases)",
        types=PURCHASE,
        reason="price level",
    )
    add(
        "premium_purchase_share_365d",
        "purchasing_power",
        FLOAT,
        365,
        "share of priced purchase lines (last 365 days) above 1.5 x their category's median offer price",
        "premium_share",
        missing="NaN (no priced purchases)",
        factor=1.5,
        reason="price level",
    )
    add(
        "max_order_value_365d",
        "purchasing_power",
        FLOAT,
        365,
        "largest order value in the last 365 days",
        "max_order_value",
        missing=nan_no_orders,
        reason="order value",
    )
    add(
        "max_item_price_365d",
        "purchasing_power",
        FLOAT,
        365,
        "highest unit price bought in the last 365 days",
        "price_stat",
        missing="NaN (no priced purchases)",
        how="max",
        types=PURCHASE,
        reason="price level",
    )
    add(
        "mean_item_price_365d",
        "purchasing_power",
        FLOAT,
        365,
        "mean unit price of purchase lines in the last 365 days",
        "price_stat",
        missing="NaN (no priced purchases)",
        how="mean",
        types=PURCHASE,
        reason="price level",
    )

    # --- Social influence (a message_sent's click_token clicked by another persona) ---------------
    add(
        "forwarded_clicks_365d",
        "social",
        INT,
        365,
        "clicks by other personas on campaign messages sent to this persona (forwarded links), last 365 days",
        "social",
        role="sender",
        measure="clicks",
        reason="social influence",
    )
    add(
        "forwarded_clickers_365d",
        "social",
        INT,
        365,
        "distinct other personas who clicked this persona's campaign messages, last 365 days",
        "social",
        role="sender",
        measure="others",
        reason="social influence",
    )
    add(
        "messages_forwarded_365d",
        "social",
        INT,
        365,
        "distinct campaign messages of this persona clicked by another persona, last 365 days",
        "social",
        role="sender",
        measure="messages",
        reason="social influence",
    )
    add(
        "forward_rate_365d",
        "social",
        FLOAT,
        365,
        "messages_forwarded_365d / messages_received_365d",
        "forward_rate",
        missing="NaN (no messages received)",
        reason="social influence",
    )
    add(
        "clicks_on_others_messages_365d",
        "social",
        INT,
        365,
        "this persona's clicks on campaign messages that were sent to another persona, last 365 days",
        "social",
        role="clicker",
        measure="clicks",
        reason="social influence",
    )

    # --- Lifetime: the whole history before the cut-off (buy-till-you-die inputs; the windows above stop at
    # 365 days, a purchase-only log of sparse buyers lives on the whole history) -------------------------
    no_purchase = "NaN (no purchase ever)"
    add(
        "orders_lifetime",
        "lifetime",
        INT,
        None,
        f"distinct orders in {_window_text(None)} (frequency)",
        "orders",
        reason="purchase frequency",
    )
    add(
        "revenue_lifetime",
        "lifetime",
        FLOAT,
        None,
        f"spend in {_window_text(None)} (monetary value)",
        "revenue",
        reason="spend",
    )
    add(
        "aov_lifetime",
        "lifetime",
        FLOAT,
        None,
        f"average order value over {_window_text(None)}",
        "aov",
        missing=nan_no_orders,
        reason="order value",
    )
    add(
        "days_since_first_purchase",
        "lifetime",
        FLOAT,
        None,
        "customer tenure: days from the first purchase to the cut-off (fractional)",
        "days_since",
        missing=no_purchase,
        types=PURCHASE,
        which="first",
        reason="tenure",
    )
    add(
        "recency_tenure_ratio",
        "lifetime",
        FLOAT,
        None,
        "days since the last purchase / days since the first purchase: 0 = bought just now, 1 = not since the "
        "first purchase",
        "recency_tenure",
        missing=no_purchase,
        reason="recency of purchases",
    )
    add(
        "interpurchase_days_mean_lifetime",
        "lifetime",
        FLOAT,
        None,
        f"mean days between consecutive orders over {_window_text(None)}",
        "interpurchase",
        missing="NaN (fewer than 2 orders)",
        how="mean",
        reason="purchase rhythm",
    )
    add(
        "orders_per_month_lifetime",
        "lifetime",
        FLOAT,
        None,
        "orders per 30 days of customer tenure (first purchase to the cut-off, at least 30 days)",
        "order_rate",
        missing=no_purchase,
        min_days=30,
        reason="purchase frequency",
    )
    add(
        "purchase_overdue_ratio",
        "lifetime",
        FLOAT,
        None,
        "days since the last purchase / the lifetime mean days between orders: above 1 = later than usual",
        "overdue",
        missing="NaN (fewer than 2 orders)",
        reason="purchase rhythm",
    )

    names = [f.name for f in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate feature names: {duplicates}")
    return out


def _codes_text(vocabulary: tuple[str, ...]) -> str:
    return ", ".join(f"{i} = {v}" for i, v in enumerate(vocabulary)) + f", {len(vocabulary)} = other"


def feature_names(config: FeaturesConfig) -> list[str]:
    """Feature columns in table order (after `persona_id`, `as_of`)."""
    return [f.name for f in catalog(config)]


def xgboost_feature_types(config: FeaturesConfig) -> list[str]:
    """'q' (numeric) or 'c' (categorical integer codes) per feature column, in table order."""
    return [f.kind for f in catalog(config)]


def reason_labels(config: FeaturesConfig, categories: Sequence[str]) -> dict[str, str]:
    """feature name -> its partner-safe reason, category slots named by the run's categories (`RunPlan.categories`,
    slot order); a slot the run leaves empty has no reason (it cannot raise anyone's score)."""
    out = {}
    for f in catalog(config):
        if CATEGORY_PLACEHOLDER not in f.reason:
            out[f.name] = f.reason
        elif f.params["slot"] < len(categories):
            out[f.name] = f.reason.replace(CATEGORY_PLACEHOLDER, categories[f.params["slot"]])
    return out


def feature_schema(config: FeaturesConfig):
    """The Arrow schema of the `features/` table."""
    import pyarrow as pa

    types = {INT: pa.int64(), FLOAT: pa.float64()}
    return pa.schema(
        [pa.field("persona_id", pa.string()), pa.field("as_of", pa.date32())]
        + [pa.field(f.name, types[f.dtype]) for f in catalog(config)]
    )
