"""Category median prices: the one global statistic features need beyond a persona's own events.

An offer is a distinct (category path, product, partner, price) of a priced product_view or purchase; a
category's median price is the median over its offers seen before the cut-off, so it is bounded by the
catalogue, not by traffic. Each persona partition lists its offers with the time each was first seen
(`price_offers`); one small merge gives the medians at every cut-off (`median_prices`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from features.inputs import as_of_micros, conform
from jobs.contract.schema import TS_TYPE

OFFER_KEYS = ["category", "product_id", "partner_id", "price"]
OFFER_SCHEMA = pa.schema(
    [
        ("category", pa.string()),
        ("product_id", pa.string()),
        ("partner_id", pa.string()),
        ("price", pa.float64()),
        ("first_seen", TS_TYPE),
    ]
)
MEDIAN_SCHEMA = pa.schema([("category", pa.string()), ("median_price", pa.float64())])


def price_offers(events: pa.Table) -> pa.Table:
    """The distinct offers of these (selected) events, each with the first time it was seen."""
    events = conform(events)
    priced = pc.and_kleene(
        pc.is_in(events.column("event_type"), value_set=pa.array(["product_view", "purchase"])),
        pc.and_kleene(pc.greater(events.column("price"), 0.0), pc.is_valid(events.column("category"))),
    )
    offers = events.filter(pc.fill_null(priced, False)).select([*OFFER_KEYS, "ts"])
    offers = offers.group_by(OFFER_KEYS).aggregate([("ts", "min")])
    return offers.select([*OFFER_KEYS, "ts_min"]).rename_columns(OFFER_SCHEMA.names).cast(OFFER_SCHEMA)


def median_prices(offers: Sequence[pa.Table], as_of: dt.date) -> pa.Table:
    """Median offer price per category path over the offers (of every partition) first seen before `as_of`."""
    merged = pa.concat_tables([o.cast(OFFER_SCHEMA) for o in offers]) if offers else OFFER_SCHEMA.empty_table()
    before = merged.filter(pc.less(merged.column("first_seen").cast(pa.int64()), as_of_micros(as_of)))
    distinct = before.select(OFFER_KEYS).group_by(OFFER_KEYS).aggregate([])  # an offer seen in several partitions
    medians = distinct.select(["category", "price"]).to_pandas().groupby("category", sort=True)["price"].median()
    return pa.table(
        [pa.array(medians.index.tolist(), pa.string()), pa.array(medians.to_numpy(), pa.float64())],
        schema=MEDIAN_SCHEMA,
    )
