"""Segment definitions: who is a positive (labels) and who is scored (the eligible population). Pure.

A segment is a few lines of config (`config.segments`, a list of `SegmentConfig`); its `kind` picks one
of the definitions below, and the fields narrow it (category, brand, partner, horizon, thresholds):

    segments:
      - name: phones_at_p03          # a partner's own high-interest segment
        kind: high_interest
        category: electronics/phones
        brand: Samsung
        partner_id: p03
        horizon_days: 14

Two rules make every definition honest (no look-ahead, no leakage):

* **Labels** come only from events with `as_of <= ts < as_of + horizon_days` (the label window after the
  cut-off); features come only from events before the cut-off. The one exception is explicit:
  `price_hunters` also looks at product views up to `comparison_days` before a purchase in the window,
  which can fall just before the cut-off; the purchase itself is always in the window.
* **Eligibility** (who is trained on, evaluated on and scored) is decided from feature columns only, so
  scoring applies the same rule to a feature table without events (`eligible_mask`).

The kinds ("buys" = a `purchase` event; a positive needs at least `min_orders` distinct orders, an order
being partner + order_id, or the event itself when order_id is missing; non-purchase events count one
each):

* ``ecommerce_buyers``: buys online in the label window (any partner, or `partner_id` / `category` /
  `brand` when set). Eligible: everyone with a feature row.
* ``high_interest``: buys, or adds to cart (`label_event_types`, default purchase + add_to_cart), in the
  target category (a category path prefix: `electronics` matches `electronics/phones`) and/or brand,
  optionally at one partner, in the label window. Eligible: everyone.
* ``price_hunters``: in the label window buys a product after viewing the same product at
  `min_partners` (default 2) or more distinct partners within `comparison_days` (default 7) before that
  purchase. Eligible: everyone.
* ``category_virgins``: eligible = active buyers who never bought in the category: at least one order in
  the feature history (`orders_365d`, or the longest window) and no purchase in the category's feature
  slot (`catNN_purchases_365d == 0`). Label: their first purchase in the category in the label window
  (for an eligible persona any purchase in it is the first).
* ``category_lovers``: people who keep buying in a category. Eligible = has bought in the category
  before (`catNN_purchases_365d >= 1`); label = buys in the category again in the label window (at least
  `min_orders` orders). Learnable from the category history (months with a purchase in the last six,
  recency, share of spend), which is what "buys in the category most months" leaves behind.

Category-specific eligibility reads the feature table's slot of the segment's top-level category
(`catNN_*`, slot = index in the run plan's feature categories, see `features.catalog`).

Labels of several segments at one cut-off are one wide table (`wide_labels`): persona_id, as_of and one
0/1 column per segment (`label_column`), one row per persona positive in at least one of them; a persona
without a row is a negative everywhere.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from jobs.config import SegmentConfig
from jobs.contract.schema import TS_TYPE
from jobs.run.plan import top_level

DEFAULT_LABEL_EVENTS: dict[str, tuple[str, ...]] = {
    "ecommerce_buyers": ("purchase",),
    "high_interest": ("purchase", "add_to_cart"),
    "price_hunters": ("purchase",),
    "category_virgins": ("purchase",),
    "category_lovers": ("purchase",),
}

# Columns of events_resolved that labels read (the rest is never loaded).
EVENT_COLUMNS = (
    "persona_id",
    "ts",
    "event_type",
    "partner_id",
    "product_id",
    "category",
    "brand",
    "order_id",
    "event_id",
)
_EVENT_SCHEMA = pa.schema([pa.field(c, TS_TYPE if c == "ts" else pa.string()) for c in EVENT_COLUMNS])

LABEL_PREFIX = "label__"

_NEEDS_CATEGORY = ("category_virgins", "category_lovers")


# --------------------------------------------------------------------------------------------------
# Config helpers


def label_event_types(segment: SegmentConfig) -> tuple[str, ...]:
    """The event types that count towards a positive for this segment."""
    if segment.label_event_types:
        return tuple(segment.label_event_types)
    return DEFAULT_LABEL_EVENTS[segment.kind]


def check_segment(segment: SegmentConfig) -> None:
    """Fail early (ValueError) on a segment whose fields do not make a definition."""
    if segment.kind in _NEEDS_CATEGORY and not segment.category:
        raise ValueError(f"segment {segment.name}: kind {segment.kind} needs a `category`")
    if segment.kind == "high_interest" and not (segment.category or segment.brand):
        raise ValueError(f"segment {segment.name}: kind high_interest needs a `category` and/or a `brand`")


def label_column(segment_name: str) -> str:
    """The column of the labels table that holds one segment's 0/1 label."""
    return LABEL_PREFIX + segment_name


def window_bounds(as_of: dt.date, horizon_days: int) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of the label window in UTC."""
    start = dt.datetime.combine(as_of, dt.time(0), tzinfo=dt.timezone.utc)
    return start, start + dt.timedelta(days=horizon_days)


# --------------------------------------------------------------------------------------------------
# Eligibility: from feature columns only


def category_slot(segment: SegmentConfig, categories: Sequence[str]) -> int | None:
    """Slot NN of the segment's top-level category in the feature category list, or None if absent."""
    target = top_level(segment.category)
    names = [top_level(c) for c in categories]
    return names.index(target) if target is not None and target in names else None


def _history_orders_column(columns: Sequence[str]) -> str:
    if "orders_365d" in columns:
        return "orders_365d"
    windows = sorted((int(m.group(1)), c) for c in columns if (m := re.fullmatch(r"orders_(\d+)d", c)))
    if not windows:
        raise ValueError("the feature table has no orders_<N>d column: cannot tell who has bought before")
    return windows[-1][1]


def _values(features: pa.Table, column: str) -> np.ndarray:
    values = features.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
    return np.nan_to_num(values, nan=0.0)


def eligible_mask(segment: SegmentConfig, features: pa.Table, categories: Sequence[str] | None) -> np.ndarray:
    """Who is trained on, evaluated on and scored for `segment`: a bool per row of `features`.

    Reads feature columns only (see the module docstring for each kind). `categories` is the run's
    feature category list in slot order (the run plan's, recorded in the model card); category_virgins /
    category_lovers need it. A segment whose category has no feature slot makes nobody eligible for
    category_lovers and nobody for category_virgins (no way to tell a virgin), rather than guessing.
    """
    n = features.num_rows
    if segment.kind not in _NEEDS_CATEGORY:
        return np.ones(n, dtype=bool)
    check_segment(segment)
    if categories is None:
        raise ValueError(
            f"segment {segment.name}: eligibility needs the feature category list (slot order): the run plan's "
            "categories or the model card's 'feature_categories'"
        )
    slot = category_slot(segment, categories)
    if slot is None:
        return np.zeros(n, dtype=bool)
    cat_column = f"cat{slot:02d}_purchases_365d"
    if cat_column not in features.column_names:
        raise ValueError(f"segment {segment.name}: the feature table has no column {cat_column}")
    in_category = _values(features, cat_column)
    if segment.kind == "category_lovers":
        return in_category >= 1
    bought_before = _values(features, _history_orders_column(features.column_names))
    return (bought_before >= 1) & (in_category == 0)


# --------------------------------------------------------------------------------------------------
# Labels: from events in the label window only


def label_scan_bounds(segment: SegmentConfig, as_of: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The events a segment's labels at `as_of` can depend on: its window, plus price hunters' look-back."""
    start, end = window_bounds(as_of, segment.horizon_days)
    if segment.kind == "price_hunters":
        start = start - dt.timedelta(days=segment.comparison_days)
    return start, end


def event_types_needed(segment: SegmentConfig) -> tuple[str, ...]:
    types = set(label_event_types(segment))
    if segment.kind == "price_hunters":
        types.add("product_view")
    return tuple(sorted(types))


def _matches_target(df: pd.DataFrame, segment: SegmentConfig, *, partner: bool = True) -> np.ndarray:
    keep = np.ones(len(df), dtype=bool)
    if segment.category:
        prefix = segment.category.strip("/")
        cat = df["category"].fillna("").astype(str)
        keep &= (cat == prefix).to_numpy() | cat.str.startswith(prefix + "/").to_numpy()
    if segment.brand:
        keep &= (df["brand"].fillna("").astype(str).str.casefold() == segment.brand.casefold()).to_numpy()
    if partner and segment.partner_id:
        keep &= (df["partner_id"].astype(str) == segment.partner_id).to_numpy()
    return keep


def select_window(batch: pa.Table, start: dt.datetime, end: dt.datetime, event_types: Sequence[str]) -> pa.Table:
    """Rows with a persona, `start <= ts < end` and one of `event_types`, in the label columns (map side)."""
    columns = [c for c in EVENT_COLUMNS if c in batch.column_names]
    batch = batch.select(columns)
    ts = batch.column("ts")
    if not pa.types.is_timestamp(ts.type):
        raise TypeError(f"events ts must be a timestamp, not {ts.type}")
    ts_type = ts.type
    mask = pc.and_(
        pc.and_(pc.greater_equal(ts, pa.scalar(start, type=ts_type)), pc.less(ts, pa.scalar(end, type=ts_type))),
        pc.and_(
            pc.is_valid(batch.column("persona_id")),
            pc.is_in(batch.column("event_type"), pa.array(list(event_types), pa.string())),
        ),
    )
    out = batch.filter(mask)
    for name in EVENT_COLUMNS:  # a stable schema for the shuffle, whatever the input carried
        if name not in out.column_names:
            out = out.append_column(name, pa.nulls(out.num_rows, pa.string()))
    return out.select(list(EVENT_COLUMNS)).cast(_EVENT_SCHEMA)


def scan_window(
    segments: Sequence[SegmentConfig], cutoffs: Sequence[dt.date]
) -> tuple[dt.datetime, dt.datetime, list[str]]:
    """One [start, end) and event type list that covers every segment's labels at every cut-off."""
    bounds = [label_scan_bounds(s, as_of) for s in segments for as_of in cutoffs]
    types = sorted({t for s in segments for t in event_types_needed(s)})
    return min(b[0] for b in bounds), max(b[1] for b in bounds), types


def _action_keys(df: pd.DataFrame) -> pd.Series:
    """One key per qualifying action: partner + order_id for purchases with an order, else the event."""
    order = df["order_id"]
    event_key = "e:" + df["partner_id"].astype(str) + "|" + df["event_id"].astype(str) + "|" + df["ts"].astype(str)
    order_key = "o:" + df["partner_id"].astype(str) + "|" + order.astype(str)
    use_order = (df["event_type"] == "purchase") & order.notna()
    return order_key.where(use_order, event_key)


def positives(events: pa.Table, segment: SegmentConfig, as_of: dt.date) -> list[str]:
    """The personas among `events` (all of a persona's rows) that are positives of `segment` at `as_of`.

    Vectorised pandas over one hash partition (every row of a persona is in the same partition).
    """
    if events.num_rows == 0:
        return []
    df = events.to_pandas()
    start, end = window_bounds(as_of, segment.horizon_days)
    in_window = (df["ts"] >= pd.Timestamp(start)) & (df["ts"] < pd.Timestamp(end))

    if segment.kind == "price_hunters":
        buys = df[in_window & (df["event_type"] == "purchase") & df["product_id"].notna()]
        buys = buys[_matches_target(buys, segment)]
        views = df[(df["event_type"] == "product_view") & df["product_id"].notna()]
        if buys.empty or views.empty:
            return []
        buys = buys.assign(buy_key=_action_keys(buys))[["persona_id", "product_id", "ts", "buy_key"]]
        pairs = buys.merge(
            views[["persona_id", "product_id", "partner_id", "ts"]].rename(columns={"ts": "view_ts"}),
            on=["persona_id", "product_id"],
        )
        lookback = pd.Timedelta(days=segment.comparison_days)
        pairs = pairs[(pairs["view_ts"] <= pairs["ts"]) & (pairs["view_ts"] >= pairs["ts"] - lookback)]
        compared = pairs.groupby(["persona_id", "buy_key"])["partner_id"].nunique()
        compared = compared[compared >= segment.min_partners].reset_index()
        counts = compared.groupby("persona_id")["buy_key"].nunique()
    else:
        rows = df[in_window & df["event_type"].isin(set(label_event_types(segment)))]
        rows = rows[_matches_target(rows, segment)]
        if rows.empty:
            return []
        counts = rows.assign(key=_action_keys(rows)).groupby("persona_id")["key"].nunique()
    return sorted(str(p) for p in counts[counts >= segment.min_orders].index)


def labels_schema(segment_names: Sequence[str]) -> pa.Schema:
    """The labels table at one cut-off: persona_id, as_of, one int64 0/1 column per segment."""
    return pa.schema(
        [pa.field("persona_id", pa.string()), pa.field("as_of", pa.date32())]
        + [pa.field(label_column(name), pa.int64()) for name in segment_names]
    )


def wide_labels(events: pa.Table, segments: Sequence[SegmentConfig], as_of: dt.date) -> pa.Table:
    """Labels of several segments at one cut-off (`labels_schema`): a row per persona positive in at least
    one of them. Each segment reads only its own window and event types from `events`."""
    ts = events.column("ts")
    per_segment = {}
    for segment in segments:
        start, end = label_scan_bounds(segment, as_of)
        mask = pc.and_(pc.greater_equal(ts, pa.scalar(start, type=ts.type)), pc.less(ts, pa.scalar(end, type=ts.type)))
        per_segment[segment.name] = positives(events.filter(mask), segment, as_of)
    ids = pa.array(sorted(set().union(*per_segment.values())), pa.string())
    columns = {"persona_id": ids, "as_of": pa.array([as_of] * len(ids), pa.date32())}
    for name, found in per_segment.items():
        columns[label_column(name)] = pc.is_in(ids, value_set=pa.array(found, pa.string())).cast(pa.int64())
    return pa.table(columns, schema=labels_schema([s.name for s in segments]))


def labels_table(events: pa.Table, segment: SegmentConfig, as_of: dt.date) -> pa.Table:
    """Single-process labels of one segment on a small in-memory events table (tests, notebooks)."""
    check_segment(segment)
    start, end = label_scan_bounds(segment, as_of)
    return wide_labels(select_window(events, start, end, event_types_needed(segment)), [segment], as_of)
