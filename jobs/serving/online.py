"""What live events change in a profile: the features the online path updates, and the intents.

Online features. The batch computes every feature as of a cut-off (`as_of`); between two runs the online
path moves the short-horizon ones with each persona's live events (events at or after `as_of`), at the
time `t` of the persona's latest live event (the same on every replica, whatever the wall clock):
  * counts of events, product views, carts, orders, items, revenue, and per feature category views and
    purchases over a window of W days: the batch value plus the live events in `[t - W days, t]`;
  * `days_since_last_*`: `t` minus the latest live event of the kind, else the batch value aged by
    `t - as_of`.
The batch part of a window is not expired between runs (the next run recomputes it), so a W-day count
may hold up to one run interval of older events. Which catalogue features follow these rules is declared
on the features themselves (`features.catalog` `Feature.online`, from their stat and parameters, never by
name): `online_features(...)` names them for a run and FEATURES.md marks them.

Intents. Per persona and category path / brand: the sum over view, cart and purchase events in the last
`intent_days` before the cut-off of `INTENT_WEIGHTS[type] * 2 ** ((ts - as_of) / half_life)`. Weights are
kept relative to `as_of`, so a live event just adds its own term and all weights of a persona share one
time scale; a profile shows each one's share of the persona's kept total (0..1), largest first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.catalog import PURCHASE, Feature, catalog
from jobs.config import FeaturesConfig
from jobs.run.plan import top_level

DAY_S = 86_400.0

INTENT_WEIGHTS = {"product_view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
INTENT_KINDS = ("categories", "brands")
INTENT_SOURCE = {"categories": "category", "brands": "brand"}


def online_features(features_config: FeaturesConfig, table_features: Sequence[str]) -> list[Feature]:
    """The catalogue features of this run that live events update (those present in its feature table)."""
    present = set(table_features)
    return [f for f in catalog(features_config) if f.online and f.name in present]


@dataclass
class LiveEvents:
    """One persona's live events since the cut-off, as parallel lists (appended in apply order)."""

    ts: list[float]
    event_type: list[str]
    slot_category: list[str | None]  # top-level category, as the feature slots name them
    order_key: list[str | None]
    quantity: list[float]
    price: list[float]

    @classmethod
    def empty(cls) -> LiveEvents:
        return cls([], [], [], [], [], [])

    def add(
        self,
        ts: float,
        event_type: str,
        category: str | None,
        order_key: str | None,
        quantity: float | None,
        price: float | None,
    ) -> None:
        self.ts.append(ts)
        self.event_type.append(event_type)
        self.slot_category.append(top_level(category) if category else None)
        self.order_key.append(order_key)
        self.quantity.append(1.0 if quantity is None or quantity != quantity else float(quantity))
        self.price.append(0.0 if price is None or price != price else float(price))


def updated_features(
    base: np.ndarray,
    names: Sequence[str],
    online: Sequence[Feature],
    live: LiveEvents,
    as_of_s: float,
    categories: Sequence[str] | None,
) -> tuple[np.ndarray, float]:
    """(the persona's feature row with the online features moved by its live events, the time t used)."""
    row = np.array(base, dtype=np.float64)
    if not live.ts:
        return row, as_of_s
    ts = np.asarray(live.ts)
    t = float(ts.max())
    kinds = np.asarray(live.event_type, dtype=object)
    slots = np.asarray(live.slot_category, dtype=object)
    purchase = kinds == PURCHASE[0]
    position = {n: i for i, n in enumerate(names)}
    for feature in online:
        i = position[feature.name]
        window = ts >= t - feature.window * DAY_S if feature.window is not None else np.ones(len(ts), bool)
        types = feature.params.get("types")
        typed = np.isin(kinds, types) if types else np.ones(len(ts), bool)
        if feature.stat == "count":
            row[i] += np.count_nonzero(window & typed)
        elif feature.stat == "cat_count":
            slot = feature.params["slot"]
            name = categories[slot] if categories is not None and slot < len(categories) else None
            row[i] += np.count_nonzero(window & typed & (slots == name)) if name else 0
        elif feature.stat == "orders":
            keys = {k for k, hit in zip(live.order_key, window & purchase) if hit}
            row[i] += len(keys)
        elif feature.stat == "items":
            row[i] += float(np.asarray(live.quantity)[window & purchase].sum())
        elif feature.stat == "revenue":
            pick = window & purchase
            row[i] += float((np.asarray(live.price)[pick] * np.asarray(live.quantity)[pick]).sum())
        elif feature.stat == "days_since":
            if typed.any():
                row[i] = (t - float(ts[typed].max())) / DAY_S
            elif not np.isnan(row[i]):
                row[i] += (t - as_of_s) / DAY_S
    return row, t


def intent_scale(ts_s: np.ndarray, as_of_s: float, half_life_days: float) -> np.ndarray:
    return np.exp2((ts_s - as_of_s) / (half_life_days * DAY_S))


INTENT_PARTIALS = pa.schema(
    [("persona_id", pa.string()), ("kind", pa.string()), ("name", pa.string()), ("weight", pa.float64())]
)


def intent_partials(events: pa.Table, as_of: dt.date, days: int, half_life_days: float) -> pa.Table:
    """events_resolved rows -> (persona_id, kind, name, weight) summed within this block."""
    end = dt.datetime.combine(as_of, dt.time(), dt.timezone.utc)
    start = end - dt.timedelta(days=days)
    keep = pc.and_(
        pc.and_(
            pc.greater_equal(events.column("ts"), pa.scalar(start, events.column("ts").type)),
            pc.less(events.column("ts"), pa.scalar(end, events.column("ts").type)),
        ),
        pc.and_(
            pc.is_in(events.column("event_type"), pa.array(list(INTENT_WEIGHTS))),
            pc.is_valid(events.column("persona_id")),
        ),
    )
    rows = events.filter(keep)
    if rows.num_rows == 0:
        return INTENT_PARTIALS.empty_table()
    ts_s = rows.column("ts").cast(pa.int64()).to_numpy() / 1e6
    kind_weight = np.array([INTENT_WEIGHTS[t] for t in rows.column("event_type").to_pylist()])
    weight = kind_weight * intent_scale(ts_s, end.timestamp(), half_life_days)
    parts = []
    for kind, column in INTENT_SOURCE.items():
        names = pc.utf8_trim_whitespace(rows.column(column))
        named = pc.fill_null(pc.greater(pc.utf8_length(names), 0), False)
        part = pa.table(
            {
                "persona_id": rows.column("persona_id").filter(named),
                "kind": pa.repeat(pa.scalar(kind), int(pc.sum(named).as_py() or 0)),
                "name": names.filter(named),
                "weight": pa.array(weight).filter(named),
            }
        )
        parts.append(part.cast(INTENT_PARTIALS))
    summed = pa.concat_tables(parts).group_by(["persona_id", "kind", "name"]).aggregate([("weight", "sum")])
    summed = summed.rename_columns(["persona_id", "kind", "name", "weight"])
    return summed.select(INTENT_PARTIALS.names).cast(INTENT_PARTIALS)


def shown_intents(kept: list[dict] | None, live: dict[str, float] | None, shown: int) -> list[dict]:
    """[{name, score}] largest first: each weight's share of the persona's kept total, live terms added."""
    weights: dict[str, float] = {}
    for item in kept or ():
        weights[item["name"]] = float(item["weight"])
    for name, weight in (live or {}).items():
        weights[name] = weights.get(name, 0.0) + weight
    total = sum(weights.values())
    if total <= 0:
        return []
    top = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:shown]
    return [{"name": name, "score": round(weight / total, 4)} for name, weight in top]
