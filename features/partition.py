"""One partition's events as of a cut-off, in canonical order, with the arrays every statistic shares.

`Partition` turns the rows of some personas (all rows of each, `ts < as_of`) into numpy arrays: a persona
index per row, timestamps, event types, prices, and integer codes of key columns (devices, sessions,
products, normalised emails and phones, category slots ...) made on demand and cached. The statistics
(`features.stats`) are group arithmetic over these arrays.

Rows are put into a canonical order first (persona, ts, partner, event_id) and per-persona sums run in
that order, so floating-point results do not depend on how rows arrived.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.catalog import PURCHASE, VIEW, VOCABULARIES, category_slots, country_code, feature_schema
from features.inputs import DAY_US, as_of_micros, select_events
from features.social import LINK_SCHEMA
from jobs.arrays import member
from jobs.config import FeaturesConfig
from jobs.contract.normalise import normalise_emails, normalise_phones
from jobs.contract.schema import EVENT_TYPES
from jobs.run.plan import top_level

HOUR_US = 3_600_000_000


def _dictionary(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list]:
    """Per-row indices into the distinct values (-1 = null) and those values."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(column)
    return encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary.to_pylist()


def _lookup(column: pa.ChunkedArray, fn: Callable[[str], Any], dtype: Any = np.int64, missing: Any = -1) -> np.ndarray:
    """`fn(value)` per row (`missing` where the value is null or fn gives None); fn runs per distinct value."""
    indices, values = _dictionary(column)
    mapped = [fn(v) for v in values]
    return np.array([missing if m is None else m for m in mapped] + [missing], dtype)[indices]


def _encode(column: pa.ChunkedArray, normalise: Callable[[str], str | None] | None = None) -> np.ndarray:
    """Identity codes of a string column (-1 = null): equal (normalised) values get equal codes.

    Codes carry no order or meaning, so nothing computed from them depends on how rows were ordered.
    """
    indices, values = _dictionary(column)
    if normalise is None:
        return indices
    codes, _ = pd.factorize(pd.array([normalise(v) for v in values], dtype="object"), use_na_sentinel=True)
    return np.append(codes.astype(np.int64), -1)[indices]


def _identifier_codes(normalised: pa.Array, valid: pa.Array) -> np.ndarray:
    """Identity codes of normalised identifiers; a value that cannot be an identifier (flagged invalid by
    `jobs.contract.normalise`, as identity resolution never links it) is no identifier here either (-1)."""
    return _dictionary(pc.if_else(valid, normalised, pa.scalar(None, pa.string())))[0]


def _vocabulary_codes(column: pa.ChunkedArray, vocabulary: Sequence[str], other: bool = True) -> np.ndarray:
    """Codes from a fixed vocabulary: its index, len(vocabulary) for anything else (or -1 without `other`)."""
    index = {v: i for i, v in enumerate(vocabulary)}
    fallback = len(vocabulary) if other else None
    return _lookup(column, lambda v: index.get(v.strip().lower(), fallback))


@dataclass
class Groups:
    """Distinct (persona, code) pairs of selected rows, numbered in order of first appearance."""

    persona: np.ndarray  # persona index of each group
    code: np.ndarray  # code of each group
    inverse: np.ndarray  # group of each selected row
    rows: np.ndarray  # the selected rows

    def __len__(self) -> int:
        return len(self.persona)


class Partition:
    """One partition's events in canonical order, with the cached arrays the statistics share.

    `categories` are the run plan's feature categories (slot order); `medians` the category median prices
    as of this cut-off (`features.prices`); `social` this partition's forwarded-click links as of this
    cut-off (`features.social`).
    """

    def __init__(
        self,
        events: pa.Table,
        as_of: dt.date,
        config: FeaturesConfig,
        categories: Sequence[str],
        medians: pa.Table | None = None,
        social: pa.Table | None = None,
    ) -> None:
        slots = category_slots(config)
        if len(categories) > slots:
            raise ValueError(f"{len(categories)} feature categories for {slots} category slots: {list(categories)}")
        self.config = config
        self.as_of = as_of
        self.cutoff = as_of_micros(as_of)
        self.categories = list(categories)
        self.other_slot = slots  # "another category": the code past the last slot, whatever slots are filled
        table = select_events(events, as_of)
        persona = pc.dictionary_encode(table.column("persona_id").combine_chunks())
        order = np.asarray(pc.sort_indices(persona.dictionary), dtype=np.int64)
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        pidx = rank[persona.indices.to_numpy(zero_copy_only=False).astype(np.int64)]
        self.persona_ids = persona.dictionary.take(pa.array(order, pa.int64()))
        self.P = len(order)
        # Canonical row order: per-persona float sums then never depend on the order rows arrived in.
        keyed = pa.table(
            {
                "p": pidx,
                "ts": table.column("ts"),
                "partner_id": table.column("partner_id"),
                "event_id": table.column("event_id"),
            }
        )
        # Columns stay in arrival order; every per-row array derived from them is permuted by `_order`
        # (integer codes are far cheaper to permute than strings).
        self._rows = table
        self._order = pc.sort_indices(keyed, [(k, "ascending") for k in keyed.column_names]).to_numpy().astype(np.int64)
        self.pidx = pidx[self._order]
        self.ts = table.column("ts").cast(pa.int64()).to_numpy()[self._order]
        self.age_days = (self.cutoff - self.ts) / DAY_US
        self.event_type = _vocabulary_codes(table.column("event_type"), EVENT_TYPES, other=False)[self._order]
        self.price = table.column("price").to_numpy(zero_copy_only=False).astype(np.float64)[self._order]
        self.quantity = pc.fill_null(table.column("quantity"), 1).to_numpy().astype(np.int64)[self._order]
        self.line_value = np.where(np.isnan(self.price), 0.0, self.price) * self.quantity
        self._medians = medians
        self._social = social
        self._cache: dict[Any, Any] = {}

    # ---- small helpers -------------------------------------------------------------------------

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def encode(self, name: str, normalise: Callable[[str], str | None] | None = None) -> np.ndarray:
        """Identity codes of a column (see `_encode`), in canonical row order."""
        return _encode(self._rows.column(name), normalise)[self._order]

    def lookup(self, name: str, fn: Callable[[str], Any], dtype: Any = np.int64, missing: Any = -1) -> np.ndarray:
        """`fn(value)` of a column per row (see `_lookup`), in canonical row order."""
        return _lookup(self._rows.column(name), fn, dtype, missing)[self._order]

    def empty_float(self) -> np.ndarray:
        return np.full(self.P, np.nan)

    def within(self, window: int | None, ts: np.ndarray | None = None) -> np.ndarray:
        """Rows (or the given timestamps) inside the window: as_of - window days <= ts (< as_of always)."""
        ts = self.ts if ts is None else ts
        if window is None:
            return np.ones(len(ts), bool)
        return ts >= self.cutoff - window * DAY_US

    def of_type(self, types: Sequence[str] | None) -> np.ndarray:
        if types is None:
            return np.ones(len(self.ts), bool)
        codes = [EVENT_TYPES.index(t) for t in types]
        return self.cached(("types", tuple(types)), lambda: np.isin(self.event_type, codes))

    def rows(self, window: int | None, types: Sequence[str] | None) -> np.ndarray:
        return self.within(window) & self.of_type(types)

    def count(self, mask: np.ndarray) -> np.ndarray:
        return np.bincount(self.pidx[mask], minlength=self.P).astype(np.int64)

    def total(self, mask: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return np.bincount(self.pidx[mask], weights=weights[mask], minlength=self.P)

    def groups(self, codes: np.ndarray, mask: np.ndarray) -> Groups:
        rows = np.flatnonzero(mask & (codes >= 0))
        width = int(codes.max(initial=-1)) + 1
        inverse, keys = pd.factorize(self.pidx[rows] * width + codes[rows])
        keys = np.asarray(keys, dtype=np.int64)
        return Groups(keys // max(width, 1), keys % max(width, 1), inverse.astype(np.int64), rows)

    def latest(self, g: Groups, ts: np.ndarray | None = None) -> np.ndarray:
        """The latest timestamp of each group."""
        ts = self.ts if ts is None else ts
        out = np.full(len(g), np.iinfo(np.int64).min, np.int64)
        np.maximum.at(out, g.inverse, ts[g.rows])
        return out

    def per_persona(self, persona: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(persona, weights=weights, minlength=self.P)

    @staticmethod
    def divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        out = np.full(len(num), np.nan)
        np.divide(num, den, out=out, where=den != 0)
        return out

    def mode(self, codes: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Most frequent code per persona among the masked rows (lowest code on ties); NaN when none."""
        g = self.groups(codes, mask)
        counts = np.bincount(g.inverse, minlength=len(g))
        order = np.lexsort((g.code, -counts, g.persona))
        first = np.unique(g.persona[order], return_index=True)[1]
        out = self.empty_float()
        out[g.persona[order][first]] = g.code[order][first]
        return out

    # ---- cached derived columns ------------------------------------------------------------------

    def key(self, name: str) -> np.ndarray:
        """Integer codes (-1 = none) of a derived key column."""
        return self.cached(("key", name), lambda: self._make_key(name))

    def _make_key(self, name: str) -> np.ndarray:
        if name == "day":
            return self.ts // DAY_US
        if name == "hour":
            return (self.ts // HOUR_US) % 24
        if name == "weekday":  # 1970-01-01 was a Thursday: Monday = 0
            return (self.ts // DAY_US + 3) % 7
        if name in VOCABULARIES:
            return _vocabulary_codes(self._rows.column(name), VOCABULARIES[name])[self._order]
        if name == "country":
            return self.lookup("country", country_code)
        if name == "email":  # the identity stage's rules (jobs.contract.normalise)
            return _identifier_codes(*normalise_emails(self._rows.column("email")))[self._order]
        if name == "phone":  # E.164, the event's country as the region of a number typed without one
            phones = normalise_phones(self._rows.column("phone"), self._rows.column("country"))
            return _identifier_codes(*phones)[self._order]
        if name == "category":
            return self.encode("category", top_level)
        if name == "slot":  # feature category slot; `other_slot` = another category
            slots = {c: i for i, c in enumerate(self.categories)}
            return self.lookup(
                "category", lambda v: None if top_level(v) is None else slots.get(top_level(v), self.other_slot)
            )
        if name in ("customer", "subscriber", "city"):  # scoped identifiers: (scope, value) pairs
            scope, value, normalise = {
                "customer": ("partner", "customer_id", lambda v: v.strip() or None),
                "subscriber": ("partner", "subscriber_id", lambda v: v.strip() or None),
                "city": ("country", "city", lambda v: v.strip().lower() or None),
            }[name]
            inner, outer = self.encode(value, normalise), self.key(scope)
            return np.where((inner >= 0) & (outer >= 0), outer * (int(inner.max(initial=-1)) + 1) + inner, -1)
        source = {
            "session": "session_key",
            "device": "device_id",
            "partner": "partner_id",
            "brand": "brand",
            "product": "product_id",
        }[name]
        return self.encode(source)

    @property
    def category_median(self) -> np.ndarray:
        """Median offer price of each row's category path (NaN when unknown)."""

        def make() -> np.ndarray:
            medians = self._medians
            lookup = (
                {}
                if medians is None
                else dict(zip(medians.column("category").to_pylist(), medians.column("median_price").to_pylist()))
            )
            return self.lookup("category", lookup.get, np.float64, np.nan)

        return self.cached("category_median", make)

    @property
    def orders(self) -> dict[str, np.ndarray]:
        """One entry per order (partner + order_id; a purchase row without order_id is its own order)."""

        def make() -> dict[str, np.ndarray]:
            purchase = self.of_type(PURCHASE)
            rows = np.flatnonzero(purchase)
            order_code = self.encode("order_id")[rows]
            partner = self.key("partner")[rows]
            local = np.where(order_code >= 0, partner * (int(order_code.max(initial=-1)) + 1) + order_code, -1 - rows)
            local_code = pd.factorize(local)[0].astype(np.int64)
            inverse, keys = pd.factorize(self.pidx[rows] * (int(local_code.max(initial=-1)) + 1) + local_code)
            keys = np.asarray(keys, np.int64)
            width = int(local_code.max(initial=-1)) + 1
            n = len(keys)
            ts = np.full(n, np.iinfo(np.int64).max, np.int64)
            np.minimum.at(ts, inverse, self.ts[rows])
            payment = np.full(n, -1, np.int64)
            np.maximum.at(payment, inverse, self.key("payment_method")[rows])
            return {
                "persona": keys // max(width, 1),
                "ts": ts,
                "value": np.bincount(inverse, weights=self.line_value[rows], minlength=n),
                "payment": payment,
            }

        return self.cached("orders", make)

    @property
    def comparisons(self) -> dict[str, np.ndarray]:
        """Per purchase row with a product: the partners that showed the product within comparison_days before
        it, and the lowest price they showed."""

        def make() -> dict[str, np.ndarray]:
            product = self.key("product")
            width = int(product.max(initial=-1)) + 1
            key = self.pidx * width + product
            purchase = np.flatnonzero(self.of_type(PURCHASE) & (product >= 0))
            view = np.flatnonzero(self.of_type(VIEW) & (product >= 0))
            view = view[member(key[view], key[purchase])]
            bought = pa.table({"k": key[purchase], "row": purchase, "pts": self.ts[purchase]})
            seen = pa.table(
                {"k": key[view], "vts": self.ts[view], "partner": self.key("partner")[view], "vprice": self.price[view]}
            )
            pairs = bought.join(seen, keys="k", join_type="inner")
            gap = pc.subtract(pairs.column("pts"), pairs.column("vts"))
            keep = pc.and_(pc.greater_equal(gap, 0), pc.less_equal(gap, self.config.comparison_days * DAY_US))
            stats = pairs.filter(keep).group_by("row").aggregate([("partner", "count_distinct"), ("vprice", "min")])
            partners = np.zeros(len(self.ts), np.int64)
            lowest = np.full(len(self.ts), np.nan)
            rows = stats.column("row").to_numpy()
            partners[rows] = stats.column("partner_count_distinct").to_numpy()
            lowest[rows] = stats.column("vprice_min").to_numpy(zero_copy_only=False)
            compared = self.of_type(PURCHASE) & (partners >= 2)
            return {"compared": compared, "lowest": lowest}

        return self.cached("comparisons", make)

    @property
    def social(self) -> pa.Table:
        """This partition's forwarded-click links (`social_links` rows) before the cut-off, `p` = persona index."""

        def make() -> pa.Table:
            links = LINK_SCHEMA.empty_table() if self._social is None else self._social.cast(LINK_SCHEMA)
            index = pc.index_in(links.column("persona_id"), value_set=self.persona_ids)
            links = links.append_column("p", index).filter(pc.is_valid(index))
            return links.filter(pc.less(links.column("ts").cast(pa.int64()), self.cutoff))

        return self.cached("social", make)

    # ---- output --------------------------------------------------------------------------------

    def to_table(self, values: dict[str, np.ndarray]) -> pa.Table:
        # the slot -> category list travels with the table (also in the features/ marker)
        schema = feature_schema(self.config).with_metadata({"feature_categories": json.dumps(self.categories)})
        days = (self.as_of - dt.date(1970, 1, 1)).days
        arrays = [self.persona_ids.cast(pa.string()), pa.array(np.full(self.P, days, np.int32), pa.date32())]
        for field in list(schema)[2:]:
            dtype = np.int64 if field.type == pa.int64() else np.float64
            arrays.append(pa.array(np.asarray(values[field.name]).astype(dtype, copy=False), field.type))
        return pa.Table.from_arrays(arrays, schema=schema)
