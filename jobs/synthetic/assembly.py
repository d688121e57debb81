"""Assembly: the integer-coded event log becomes the contract's table (plus `true_person_id`, the ground
truth only evaluation may read), and the one entry point, `generate_events`.

Events start 2026-01-01 00:00 UTC and span `days`; event ids are per-partner running numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.contract.schema import CONTRACT_SCHEMA, DEVICE_TYPES, EVENT_TYPES, PAYMENT_METHODS, TRAFFIC_SOURCES
from jobs.synthetic.behaviours import BEHAVIOURS
from jobs.synthetic.reference import COUNTRY_CODES, DAY, START_US
from jobs.synthetic.sampling import hex_ids
from jobs.synthetic.sessions import EventLog
from jobs.synthetic.world import World

# The input contract plus the ground truth that only evaluation may read.
SCHEMA = CONTRACT_SCHEMA.append(pa.field("true_person_id", pa.string()))


def generate_events(persons: int, partners: int, days: int, seed: int) -> pa.Table:
    """The whole synthetic log as one table (sorted by partner, then time), columns exactly as SCHEMA."""
    if persons < 1 or partners < 1 or days < 1:
        raise ValueError("persons, partners and days must be >= 1")
    world = World(persons, partners, days, seed)
    events = EventLog(world)
    for behaviour in BEHAVIOURS:
        behaviour(world, events)
    return assemble(world, events)


def assemble(w: World, ev: EventLog) -> pa.Table:
    """The log as one contract table: sorted by partner, then time; ids and strings made here, once."""
    ts = np.concatenate([b["ts"] for b in ev.blocks])
    keep = np.flatnonzero((ts >= 0) & (ts < w.days * DAY))
    ts_ms = np.round(ts[keep] * 1000.0).astype(np.int64)
    partner_all = np.concatenate([b["partner"] for b in ev.blocks])
    order = keep[np.lexsort((ts_ms, partner_all[keep]))]
    ts_us = START_US + np.round(ts[order] * 1000.0).astype(np.int64) * 1000
    del ts, ts_ms, partner_all
    cols = {name: np.concatenate([b[name] for b in ev.blocks])[order] for name in ev.blocks[0] if name != "ts"}
    ev.blocks.clear()
    partner = cols["partner"]
    n = len(ts_us)
    rng = w.rng

    partner_ids = _strings(w.stores.partner_ids)
    # event ids: per partner running number
    first = np.searchsorted(partner, partner, side="left")
    seq = np.arange(n) - first
    event_id = pc.binary_join_element_wise(_take(partner_ids, partner), pc.cast(pa.array(seq + 1), pa.string()), "-")

    session_strings = _strings(hex_ids(rng, ev.n_sessions, 16))
    sess = cols["session"]
    sends = w.stores.sends_session[partner] & (sess >= 0)
    session_code = np.where(sends, sess, -1)

    token_strings = _strings(hex_ids(rng, max(ev.n_tokens, 1), 10))
    order_strings = _strings(np.char.add("O", hex_ids(rng, max(ev.n_orders, 1), 6)))

    product = cols["product"]
    has_prod = product >= 0
    leaf = np.where(has_prod, w.catalogue.prod_leaf[np.maximum(product, 0)], cols["leaf"])
    brand = np.where(has_prod, w.catalogue.prod_brand[np.maximum(product, 0)], -1)
    price = cols["price"]
    qty = cols["qty"]
    device = cols["device"]
    person = cols["person"]
    numbers = lambda v: pc.cast(pa.array(v, mask=v < 0), pa.string())  # noqa: E731
    true_ids = pc.binary_join_element_wise("P", pc.utf8_lpad(pc.cast(pa.array(person), pa.string()), 7, "0"), "")

    arrays = {
        "event_id": event_id,
        "ts": pa.array(ts_us, type=pa.timestamp("us", tz="UTC")),
        "partner_id": _take(partner_ids, partner),
        "event_type": _take(_strings(EVENT_TYPES), cols["etype"]),
        "session_id": _take(session_strings, session_code),
        "device_id": _take(_strings(w.ids.dev_ids), device),
        "email": _take(_strings(w.ids.email_strings), cols["email"]),
        "phone": _take(_strings(w.ids.phone_strings), cols["phone"]),
        "customer_id": numbers(cols["customer"]),
        "subscriber_id": numbers(cols["subscriber"]),
        "click_token": _take(token_strings, cols["token"]),
        "product_id": _take(_strings(w.catalogue.prod_ids), product),
        "category": _take(_strings(w.catalogue.leaf_names), leaf),
        "brand": _take(_strings(w.catalogue.brand_names), brand),
        "price": pa.array(price, mask=np.isnan(price), type=pa.float64()),
        "quantity": pa.array(qty, mask=qty <= 0, type=pa.int64()),
        "order_id": _take(order_strings, cols["order"]),
        "currency": _take(_strings(["EUR"]), np.where(np.isnan(price), -1, 0)),
        "country": _take(_strings(COUNTRY_CODES), w.people.country[person]),
        "city": _take(_strings(w.people.city_names), w.people.city[person]),
        "payment_method": _take(_strings(PAYMENT_METHODS), cols["pay"]),
        "device_type": _take(_strings(DEVICE_TYPES), np.where(device >= 0, w.ids.dev_type[np.maximum(device, 0)], -1)),
        "traffic_source": _take(_strings(TRAFFIC_SOURCES), cols["traffic"]),
        "true_person_id": true_ids,
    }
    return pa.Table.from_arrays([arrays[f.name] for f in SCHEMA], schema=SCHEMA)


def _strings(values: Any) -> pa.Array:
    return pa.array(list(values) if not isinstance(values, np.ndarray) else values, type=pa.string())


def _take(dictionary: pa.Array, codes: np.ndarray) -> pa.Array:
    """dictionary[codes] with null where code < 0."""
    codes = np.asarray(codes, dtype=np.int64)
    mask = codes < 0
    return dictionary.take(pa.array(np.where(mask, 0, codes), mask=mask))
