"""The statistics the catalogue names (`Feature.stat`): each computes one feature for every persona of a
`Partition`, with vectorised group arithmetic, from the feature's declared `window` and `params`.

A statistic returns one value per persona (index order of the partition); counts are int64, everything
else float64 with NaN where the value does not exist (see `features.catalog` for the conventions).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.catalog import PURCHASE, SHOPPING, VIEW, VOCABULARIES, Feature
from features.inputs import DAY_US
from features.partition import Groups, Partition

MONTH_DAYS = 30  # "months" of the category features are 30-day blocks counted back from the cut-off

STATS: dict[str, Callable[[Partition, Feature], np.ndarray]] = {}


def stat(name: str):
    def register(fn):
        STATS[name] = fn
        return fn

    return register


@stat("count")
def _count(p: Partition, f: Feature) -> np.ndarray:
    return p.count(p.rows(f.window, f.params["types"]))


@stat("ratio")
def _ratio(p: Partition, f: Feature) -> np.ndarray:
    return p.divide(p.count(p.rows(f.window, f.params["num"])), p.count(p.rows(f.window, f.params["den"])))


@stat("distinct")
def _distinct(p: Partition, f: Feature) -> np.ndarray:
    types = f.params["types"]
    g = p.cached(("distinct", f.params["key"], types), lambda: p.groups(p.key(f.params["key"]), p.of_type(types)))
    last = p.cached(("distinct_last", f.params["key"], types), lambda: p.latest(g))
    return p.per_persona(g.persona[p.within(f.window, last)]).astype(np.int64)


@stat("orders")
def _orders(p: Partition, f: Feature) -> np.ndarray:
    o = p.orders
    keep = p.within(f.window, o["ts"])
    if "payment" in f.params:
        keep &= o["payment"] == VOCABULARIES["payment_method"].index(f.params["payment"])
    return p.per_persona(o["persona"][keep]).astype(np.int64)


@stat("items")
def _items(p: Partition, f: Feature) -> np.ndarray:
    mask = p.rows(f.window, PURCHASE)
    return np.bincount(p.pidx[mask], weights=p.quantity[mask], minlength=p.P).round().astype(np.int64)


@stat("revenue")
def _revenue(p: Partition, f: Feature) -> np.ndarray:
    return p.total(p.rows(f.window, PURCHASE), p.line_value)


@stat("aov")
def _aov(p: Partition, f: Feature) -> np.ndarray:
    o = p.orders
    keep = p.within(f.window, o["ts"])
    return p.divide(p.per_persona(o["persona"][keep], o["value"][keep]), p.per_persona(o["persona"][keep]))


@stat("max_order_value")
def _max_order_value(p: Partition, f: Feature) -> np.ndarray:
    o = p.orders
    keep = p.within(f.window, o["ts"])
    out = p.empty_float()
    np.fmax.at(out, o["persona"][keep], o["value"][keep])
    return out


@stat("payment_share")
def _payment_share(p: Partition, f: Feature) -> np.ndarray:
    o = p.orders
    vocabulary = VOCABULARIES["payment_method"]
    method = f.params["method"]
    code = len(vocabulary) if method == "other" else vocabulary.index(method)
    known = p.within(f.window, o["ts"]) & (o["payment"] >= 0)
    return p.divide(p.per_persona(o["persona"][known & (o["payment"] == code)]), p.per_persona(o["persona"][known]))


@stat("days_since")
def _days_since(p: Partition, f: Feature) -> np.ndarray:
    mask = p.of_type(f.params["types"])
    out = p.empty_float()
    (np.fmin if f.params["which"] == "last" else np.fmax).at(out, p.pidx[mask], p.age_days[mask])
    return out


@stat("interpurchase")
def _interpurchase(p: Partition, f: Feature) -> np.ndarray:
    o = p.orders
    keep = np.flatnonzero(p.within(f.window, o["ts"]))
    order = keep[np.lexsort((o["ts"][keep], o["persona"][keep]))]
    persona, ts = o["persona"][order], o["ts"][order]
    same = persona[1:] == persona[:-1]
    gaps = (ts[1:] - ts[:-1])[same] / DAY_US
    who = persona[1:][same]
    n = p.per_persona(who)
    mean = p.divide(p.per_persona(who, gaps), n)
    if f.params["how"] == "mean":
        return mean
    spread = p.per_persona(who, (gaps - mean[who]) ** 2)
    out = p.empty_float()
    many = n >= 2
    out[many] = np.sqrt(spread[many] / n[many])
    return out


def _purchase_ages(p: Partition) -> tuple[np.ndarray, np.ndarray]:
    """Days from each persona's first and last purchase to the cut-off (NaN: never bought)."""

    def make() -> tuple[np.ndarray, np.ndarray]:
        mask = p.of_type(PURCHASE)
        first, last = p.empty_float(), p.empty_float()
        np.fmax.at(first, p.pidx[mask], p.age_days[mask])
        np.fmin.at(last, p.pidx[mask], p.age_days[mask])
        return first, last

    return p.cached("purchase_ages", make)


# the lifetime mean gap between orders, as the interpurchase statistic computes it
_LIFETIME_MEAN_GAP = Feature(
    "interpurchase_days_mean_lifetime",
    "lifetime",
    "float64",
    None,
    "",
    "interpurchase",
    {"how": "mean"},
    reason="purchase rhythm",
)


@stat("recency_tenure")
def _recency_tenure(p: Partition, f: Feature) -> np.ndarray:
    first, last = _purchase_ages(p)
    return p.divide(last, first)  # first > 0: every counted event is before the cut-off


@stat("order_rate")
def _order_rate(p: Partition, f: Feature) -> np.ndarray:
    first, _ = _purchase_ages(p)
    o = p.orders
    orders = p.per_persona(o["persona"])
    return orders / (np.maximum(first, f.params["min_days"]) / MONTH_DAYS)  # NaN where first is (no orders)


@stat("overdue")
def _overdue(p: Partition, f: Feature) -> np.ndarray:
    _, last = _purchase_ages(p)
    return p.divide(last, _interpurchase(p, _LIFETIME_MEAN_GAP))


def _measure(p: Partition, measure: str, window: int) -> np.ndarray:
    if measure == "orders":
        o = p.orders
        return p.per_persona(o["persona"][p.within(window, o["ts"])])
    if measure == "revenue":
        return p.total(p.rows(window, PURCHASE), p.line_value)
    return p.count(p.rows(window, VIEW)).astype(np.float64)


@stat("trend")
def _trend(p: Partition, f: Feature) -> np.ndarray:
    recent_days, window = f.params["recent"], f.window
    recent = _measure(p, f.params["measure"], recent_days)
    everything = _measure(p, f.params["measure"], window)
    r = recent / recent_days
    e = (everything - recent) / (window - recent_days)
    return p.divide(r - e, r + e)


def _sessions(p: Partition, window: int) -> Groups:
    return p.cached(("sessions", window), lambda: p.groups(p.key("session"), p.within(window)))


@stat("session_minutes")
def _session_minutes(p: Partition, f: Feature) -> np.ndarray:
    g = _sessions(p, f.window)
    first = np.full(len(g), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, g.inverse, p.ts[g.rows])
    minutes = (p.latest(g) - first) / 60_000_000
    return p.divide(p.per_persona(g.persona, minutes), p.per_persona(g.persona).astype(np.float64))


@stat("events_per_session")
def _events_per_session(p: Partition, f: Feature) -> np.ndarray:
    g = _sessions(p, f.window)
    return p.divide(p.per_persona(p.pidx[g.rows]).astype(np.float64), p.per_persona(g.persona).astype(np.float64))


@stat("share")
def _share(p: Partition, f: Feature) -> np.ndarray:
    codes = p.key(f.params["key"])
    vocabulary = VOCABULARIES[f.params["key"]]
    mask = p.within(f.window) & (codes >= 0)
    hit = mask & np.isin(codes, [vocabulary.index(v) for v in f.params["values"]])
    return p.divide(p.count(hit), p.count(mask))


@stat("hour_share")
def _hour_share(p: Partition, f: Feature) -> np.ndarray:
    hour = p.key("hour")
    mask = p.within(f.window)
    return p.divide(p.count(mask & (hour >= f.params["lo"]) & (hour < f.params["hi"])), p.count(mask))


@stat("weekday_share")
def _weekday_share(p: Partition, f: Feature) -> np.ndarray:
    mask = p.within(f.window)
    return p.divide(p.count(mask & np.isin(p.key("weekday"), f.params["days"])), p.count(mask))


@stat("mode")
def _mode(p: Partition, f: Feature) -> np.ndarray:
    return p.mode(p.key(f.params["key"]), p.rows(f.window, f.params["types"]))


@stat("peak")
def _peak(p: Partition, f: Feature) -> np.ndarray:
    return p.mode(p.key(f.params["key"]), p.within(f.window))


@stat("favourite_category")
def _favourite_category(p: Partition, f: Feature) -> np.ndarray:
    return p.mode(p.key("slot"), p.rows(f.window, SHOPPING))


def _shares(p: Partition, f: Feature) -> tuple[Groups, np.ndarray, np.ndarray]:
    """Each (persona, key value) group's share of the persona's total (count or spend) in the window."""
    g = p.groups(p.key(f.params["key"]), p.rows(f.window, f.params["types"]))
    weights = None if f.params["weight"] == "count" else p.line_value[g.rows]
    amount = np.bincount(g.inverse, weights=weights, minlength=len(g)).astype(np.float64)
    total = p.per_persona(g.persona, amount)
    share = amount / np.where(total[g.persona] != 0, total[g.persona], 1.0)
    return g, share, total


@stat("hhi")
def _hhi(p: Partition, f: Feature) -> np.ndarray:
    g, share, total = _shares(p, f)
    hhi = p.per_persona(g.persona, share**2)
    return np.where(total != 0, hhi, np.nan)


@stat("top_share")
def _top_share(p: Partition, f: Feature) -> np.ndarray:
    g, share, total = _shares(p, f)
    out = p.empty_float()
    np.fmax.at(out, g.persona, share)
    return np.where(total != 0, out, np.nan)


@stat("cat_count")
def _cat_count(p: Partition, f: Feature) -> np.ndarray:
    return p.count(p.rows(f.window, f.params["types"]) & (p.key("slot") == f.params["slot"]))


@stat("cat_spend_share")
def _cat_spend_share(p: Partition, f: Feature) -> np.ndarray:
    bought = p.rows(f.window, PURCHASE)
    return p.divide(p.total(bought & (p.key("slot") == f.params["slot"]), p.line_value), p.total(bought, p.line_value))


@stat("cat_months")
def _cat_months(p: Partition, f: Feature) -> np.ndarray:
    months = f.params["months"]
    block = p.cached("month_block", lambda: np.floor(p.age_days / MONTH_DAYS).astype(np.int64))
    mask = p.of_type(PURCHASE) & (p.key("slot") == f.params["slot"]) & (block < months)
    return p.per_persona(p.groups(block, mask).persona).astype(np.int64)


@stat("new_categories")
def _new_categories(p: Partition, f: Feature) -> np.ndarray:
    g = p.groups(p.key("category"), p.of_type(PURCHASE))
    first = np.full(len(g), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, g.inverse, p.ts[g.rows])
    return p.per_persona(g.persona[p.within(f.window, first)]).astype(np.int64)


def _multi_partner_views(p: Partition, window: int) -> tuple[Groups, np.ndarray, np.ndarray, np.ndarray]:
    """Products viewed in the window per persona: partners that showed each, its lowest and highest price."""

    def make():
        g = p.groups(p.key("product"), p.rows(window, VIEW))
        partner = p.key("partner")[g.rows]
        ok = partner >= 0
        pairs = pd.unique(g.inverse[ok] * (int(partner.max(initial=-1)) + 1) + partner[ok])
        partners = np.bincount(pairs // (int(partner.max(initial=-1)) + 1), minlength=len(g))
        low, high = np.full(len(g), np.nan), np.full(len(g), np.nan)
        np.fmin.at(low, g.inverse, p.price[g.rows])
        np.fmax.at(high, g.inverse, p.price[g.rows])
        return g, partners, low, high

    return p.cached(("multi_partner", window), make)


@stat("multi_partner_products")
def _multi_partner_products(p: Partition, f: Feature) -> np.ndarray:
    g, partners, _, _ = _multi_partner_views(p, f.window)
    return p.per_persona(g.persona[partners >= 2]).astype(np.int64)


@stat("price_spread")
def _price_spread(p: Partition, f: Feature) -> np.ndarray:
    g, partners, low, high = _multi_partner_views(p, f.window)
    keep = (partners >= 2) & (low > 0)
    spread = (high[keep] - low[keep]) / low[keep]
    return p.divide(p.per_persona(g.persona[keep], spread), p.per_persona(g.persona[keep]).astype(np.float64))


@stat("compared_purchases")
def _compared_purchases(p: Partition, f: Feature) -> np.ndarray:
    return p.count(p.comparisons["compared"] & p.within(f.window))


@stat("compared_share")
def _compared_share(p: Partition, f: Feature) -> np.ndarray:
    return p.divide(p.count(p.comparisons["compared"] & p.within(f.window)), p.count(p.rows(f.window, PURCHASE)))


@stat("cheapest_share")
def _cheapest_share(p: Partition, f: Feature) -> np.ndarray:
    c = p.comparisons
    compared = c["compared"] & p.within(f.window) & ~np.isnan(p.price) & ~np.isnan(c["lowest"])
    cheapest = compared & (p.price <= c["lowest"] + 1e-9)
    return p.divide(p.count(cheapest), p.count(compared))


def _relative_price(p: Partition, window: int, types) -> tuple[np.ndarray, np.ndarray]:
    median = p.category_median
    mask = p.rows(window, types) & (p.price > 0) & (median > 0)
    return mask, np.divide(p.price, median, out=np.zeros(len(median)), where=mask)


@stat("price_rel_median")
def _price_rel_median(p: Partition, f: Feature) -> np.ndarray:
    mask, relative = _relative_price(p, f.window, f.params["types"])
    return p.divide(p.total(mask, relative), p.count(mask).astype(np.float64))


@stat("premium_share")
def _premium_share(p: Partition, f: Feature) -> np.ndarray:
    mask, relative = _relative_price(p, f.window, PURCHASE)
    premium = p.count(mask & (relative > f.params["factor"])).astype(np.float64)
    return p.divide(premium, p.count(mask).astype(np.float64))


@stat("price_stat")
def _price_stat(p: Partition, f: Feature) -> np.ndarray:
    mask = p.rows(f.window, f.params["types"]) & ~np.isnan(p.price)
    if f.params["how"] == "max":
        out = p.empty_float()
        np.fmax.at(out, p.pidx[mask], p.price[mask])
        return out
    return p.divide(p.total(mask, p.price), p.count(mask).astype(np.float64))


def _social_count(p: Partition, window: int, role: str, measure: str) -> np.ndarray:
    """Distinct clicks / other personas / messages per persona among its forwarded-click links in the window."""
    links = p.social
    keep = pc.and_(
        pc.equal(links.column("role"), role),
        pc.greater_equal(links.column("ts").cast(pa.int64()), p.cutoff - window * DAY_US),
    )
    distinct = {
        "clicks": ["partner_id", "click_id"],
        "others": ["other_persona_id"],
        "messages": ["partner_id", "click_token"],
    }[measure]
    counted = links.filter(keep).group_by(["p", *distinct]).aggregate([]).group_by("p").aggregate([([], "count_all")])
    out = np.zeros(p.P, np.int64)
    out[counted.column("p").to_numpy()] = counted.column("count_all").to_numpy()
    return out


@stat("social")
def _social(p: Partition, f: Feature) -> np.ndarray:
    return _social_count(p, f.window, f.params["role"], f.params["measure"])


@stat("forward_rate")
def _forward_rate(p: Partition, f: Feature) -> np.ndarray:
    return p.divide(
        _social_count(p, f.window, "sender", "messages").astype(np.float64),
        p.count(p.rows(f.window, ("message_sent",))).astype(np.float64),
    )
