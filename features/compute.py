"""Turns the catalogue into a feature table as of a cut-off date, on Ray.

The work is split so that one pure function does all the per-persona arithmetic:

    events (Ray Dataset) --select_events--> hash_partition(persona_id) --+--> partition_stats --> combine_stats
                                                                         |      (feature categories, category
                                                                         |       median prices: small, global)
                                                                         +--> social_tokens --hash(partner,
                                                                         |      token)--> social_links
                                                                         |      --hash(persona_id)--+
                                                                         +--------------------------+--> compute_partition
                                                                                                            --> features (Dataset)

`compute_partition(events, as_of, ...)` computes every catalogue feature for the personas of one partition
with numpy / pyarrow vectorised group arithmetic; the single-process baseline (`compute_local`) runs the
same functions over the whole table, so the two give the same table. Rows are put into a canonical order
first (persona, ts, partner, event_id) and per-persona sums run in that order, so floating-point results
do not depend on how Ray ordered blocks. Only `ts < as_of` rows with a persona are ever looked at, and
the input is reduced to `INPUT_SCHEMA` at once (`true_person_id` is never read).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.catalog import (
    EVENT_TYPES,
    PURCHASE,
    SHOPPING,
    VIEW,
    VOCABULARIES,
    Feature,
    catalog,
    country_code,
    feature_schema,
)
from jobs.config import FeaturesConfig, JobConfig
from jobs.errors import UserError

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
MONTH_DAYS = 30  # "months" of the category features are 30-day blocks counted back from the cut-off

_STR = pa.string()
# The columns the stage reads, with their contract types: every input column it needs, plus the
# identity stage's persona_id / session_key. Ground truth (true_person_id) is deliberately absent.
INPUT_SCHEMA = pa.schema(
    [
        ("persona_id", _STR),
        ("event_id", _STR),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("partner_id", _STR),
        ("event_type", _STR),
        ("session_key", _STR),
        ("device_id", _STR),
        ("email", _STR),
        ("phone", _STR),
        ("customer_id", _STR),
        ("subscriber_id", _STR),
        ("click_token", _STR),
        ("product_id", _STR),
        ("category", _STR),
        ("brand", _STR),
        ("price", pa.float64()),
        ("quantity", pa.int64()),
        ("order_id", _STR),
        ("country", _STR),
        ("city", _STR),
        ("payment_method", _STR),
        ("device_type", _STR),
        ("traffic_source", _STR),
    ]
)
INPUT_COLUMNS = INPUT_SCHEMA.names


# --------------------------------------------------------------------------------------------------
# Input selection
# --------------------------------------------------------------------------------------------------


def as_of_micros(as_of: dt.date) -> int:
    """The cut-off (midnight UTC of `as_of`) in microseconds since the epoch."""
    return (as_of - dt.date(1970, 1, 1)).days * DAY_US


def conform(table: pa.Table) -> pa.Table:
    """The table reduced to `INPUT_SCHEMA`: only those columns, cast to their types; absent ones null."""
    columns = []
    for field in INPUT_SCHEMA:
        if field.name in table.column_names:
            column = table.column(field.name)
            if column.type != field.type:
                column = pc.cast(column, field.type, safe=False)
        else:
            column = pa.nulls(table.num_rows, field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=INPUT_SCHEMA)


def select_events(table: pa.Table, as_of: dt.date) -> pa.Table:
    """The rows features may see: a persona, and `ts < as_of`."""
    table = conform(table)
    cutoff = pa.scalar(as_of_micros(as_of), pa.timestamp("us", tz="UTC"))
    keep = pc.and_kleene(pc.is_valid(table.column("persona_id")), pc.less(table.column("ts"), cutoff))
    if pc.all(keep).as_py() or table.num_rows == 0:
        return table  # already selected (the partition path selects before the shuffle): no copy
    return table.filter(keep)


def top_level(category: str | None) -> str | None:
    """The feature category of a category path: its first level ("electronics/phones" -> "electronics")."""
    if category is None:
        return None
    head = category.split("/", 1)[0].strip().lower()
    return head or None


def _normalise_email(value: str) -> str | None:
    value = value.strip().lower()
    local, at, domain = value.rpartition("@")
    if not at:
        return value or None
    local = local.split("+", 1)[0]
    if domain in ("gmail.com", "googlemail.com"):
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


_NOT_DIGIT = re.compile(r"\D")


def _normalise_phone(value: str) -> str | None:
    digits = _NOT_DIGIT.sub("", value)
    return digits[-9:] if digits else None


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


def _vocabulary_codes(column: pa.ChunkedArray, vocabulary: Sequence[str], other: bool = True) -> np.ndarray:
    """Codes from a fixed vocabulary: its index, len(vocabulary) for anything else (or -1 without `other`)."""
    index = {v: i for i, v in enumerate(vocabulary)}
    fallback = len(vocabulary) if other else None
    return _lookup(column, lambda v: index.get(v.strip().lower(), fallback))


def _sum_by_category(table: pa.Table, column: str, how: str) -> pa.Table:
    grouped = table.group_by("category").aggregate([(column, how)])
    return grouped.select(["category", f"{column}_{how}"]).rename_columns(["category", "n"])


# --------------------------------------------------------------------------------------------------
# Global statistics (tiny, computed once per run from all partitions)
# --------------------------------------------------------------------------------------------------


def partition_stats(events: pa.Table, as_of: dt.date) -> tuple[pa.Table, pa.Table]:
    """Per partition: events per top-level category, and the distinct price offers per category path.

    An offer is a distinct (category, product, partner, price) of a priced product_view or purchase; the
    category median price is the median over offers, so it is bounded by the catalogue, not by traffic.
    """
    events = select_events(events, as_of)
    counts = _sum_by_category(events.select(["category"]), "category", "count")
    heads = pa.array([top_level(c) for c in counts.column("category").to_pylist()], _STR)
    counts = _sum_by_category(pa.table({"category": heads, "n": counts.column("n")}).filter(pc.is_valid(heads)), "n", "sum")
    types = events.column("event_type")
    priced = pc.and_kleene(
        pc.is_in(types, value_set=pa.array(["product_view", "purchase"])),
        pc.and_kleene(pc.greater(events.column("price"), 0.0), pc.is_valid(events.column("category"))),
    )
    offers = (
        events.filter(pc.fill_null(priced, False))
        .select(["category", "product_id", "partner_id", "price"])
        .group_by(["category", "product_id", "partner_id", "price"])
        .aggregate([])
    )
    return counts, offers


def choose_categories(counts: pa.Table, features: FeaturesConfig, required: Sequence[str] = ()) -> list[str]:
    """The feature categories: pinned ones as given; else `required` plus the largest, sorted by name."""
    if features.categories:
        return [c.strip().lower() for c in features.categories]
    ranked = sorted(zip(counts.column("category").to_pylist(), counts.column("n").to_pylist()), key=lambda r: (-r[1], r[0]))
    chosen: list[str] = []
    for name in [*required, *(name for name, _ in ranked)]:
        if name and name not in chosen and len(chosen) < features.top_categories:
            chosen.append(name)
    return sorted(chosen)


def segment_categories(config: JobConfig) -> list[str]:
    """Top-level categories the configured segments target: always given a feature slot."""
    names = [top_level(s.category) for s in config.segments if s.category]
    return list(dict.fromkeys(n for n in names if n))


def combine_stats(stats: Sequence[tuple[pa.Table, pa.Table]], config: JobConfig) -> tuple[list[str], pa.Table]:
    """Feature categories and median offer price per category path, from every partition's stats."""
    counts = _sum_by_category(pa.concat_tables([s[0] for s in stats]), "n", "sum")
    categories = choose_categories(counts, config.features, segment_categories(config))
    offers = pa.concat_tables([s[1] for s in stats]).group_by(["category", "product_id", "partner_id", "price"]).aggregate([])
    frame = offers.select(["category", "price"]).to_pandas()
    medians = frame.groupby("category", sort=True)["price"].median()
    return categories, pa.table(
        {"category": pa.array(medians.index.tolist(), _STR), "median_price": pa.array(medians.to_numpy(), pa.float64())}
    )


# --------------------------------------------------------------------------------------------------
# Social influence: campaign messages clicked by another persona (needs a shuffle by click token)
# --------------------------------------------------------------------------------------------------

_TOKEN_SCHEMA = pa.schema(
    [("partner_id", _STR), ("click_token", _STR), ("persona_id", _STR), ("event_type", _STR), ("event_id", _STR),
     ("ts", pa.timestamp("us", tz="UTC"))]
)
LINK_SCHEMA = pa.schema(
    [("persona_id", _STR), ("role", pa.string()), ("other_persona_id", _STR), ("partner_id", _STR),
     ("click_token", _STR), ("click_id", _STR), ("ts", pa.timestamp("us", tz="UTC"))]
)


def social_tokens(events: pa.Table, as_of: dt.date) -> pa.Table:
    """message_sent / message_click rows that carry a click token (the map side of the token shuffle)."""
    events = select_events(events, as_of)
    keep = pc.and_kleene(
        pc.is_in(events.column("event_type"), value_set=pa.array(["message_sent", "message_click"])),
        pc.is_valid(events.column("click_token")),
    )
    return events.filter(pc.fill_null(keep, False)).select(_TOKEN_SCHEMA.names).cast(_TOKEN_SCHEMA)


def social_links(tokens: pa.Table) -> pa.Table:
    """Forwarded clicks among rows that hold every row of their (partner_id, click_token).

    A click is forwarded when its persona is not one of the token's recipients (message_sent personas).
    Each forwarded click gives one row per recipient (role "sender": the recipient's message was
    forwarded) and one row for the clicker (role "clicker"); `click_id` identifies the click event.
    """
    keys = ["partner_id", "click_token"]
    sent = tokens.filter(pc.equal(tokens.column("event_type"), "message_sent")).select([*keys, "persona_id"])
    sent = sent.group_by([*keys, "persona_id"]).aggregate([]).select([*keys, "persona_id"]).rename_columns([*keys, "sender"])
    clicks = tokens.filter(pc.equal(tokens.column("event_type"), "message_click"))
    clicks = clicks.select([*keys, "persona_id", "event_id", "ts"]).rename_columns([*keys, "clicker", "click_id", "ts"])
    if sent.num_rows == 0 or clicks.num_rows == 0:
        return LINK_SCHEMA.empty_table()
    pairs = clicks.join(sent, keys=keys, join_type="inner")
    own = pairs.filter(pc.equal(pairs.column("clicker"), pairs.column("sender")))
    own_clicks = own.select([*keys, "click_id"]).group_by([*keys, "click_id"]).aggregate([])
    forwarded = pairs.join(own_clicks, keys=[*keys, "click_id"], join_type="left anti")
    if forwarded.num_rows == 0:
        return LINK_SCHEMA.empty_table()
    n = forwarded.num_rows

    def rows(persona: str, other: str, role: str) -> pa.Table:
        return pa.table(
            {
                "persona_id": forwarded.column(persona),
                "role": pa.array([role] * n, _STR),
                "other_persona_id": forwarded.column(other),
                "partner_id": forwarded.column("partner_id"),
                "click_token": forwarded.column("click_token"),
                "click_id": forwarded.column("click_id"),
                "ts": forwarded.column("ts"),
            },
            schema=LINK_SCHEMA,
        )

    senders = rows("sender", "clicker", "sender")
    # a click on a message sent to several personas is still one click of its clicker
    click_keys = ["persona_id", "role", "partner_id", "click_token", "click_id", "ts"]
    clickers = rows("clicker", "sender", "clicker").group_by(click_keys).aggregate([("other_persona_id", "min")])
    clickers = clickers.select([*click_keys, "other_persona_id_min"]).rename_columns([*click_keys, "other_persona_id"])
    return pa.concat_tables([senders, clickers.select(LINK_SCHEMA.names).cast(LINK_SCHEMA)])


# --------------------------------------------------------------------------------------------------
# The per-partition computation
# --------------------------------------------------------------------------------------------------


@dataclass
class _Groups:
    """Distinct (persona, code) pairs of selected rows, numbered in order of first appearance."""

    persona: np.ndarray  # persona index of each group
    code: np.ndarray  # code of each group
    inverse: np.ndarray  # group of each selected row
    rows: np.ndarray  # the selected rows

    def __len__(self) -> int:
        return len(self.persona)


class Partition:
    """One partition's events in canonical order, with the cached arrays the statistics share."""

    def __init__(
        self,
        events: pa.Table,
        as_of: dt.date,
        config: FeaturesConfig,
        categories: Sequence[str],
        medians: pa.Table | None = None,
        social: pa.Table | None = None,
    ) -> None:
        self.config = config
        self.as_of = as_of
        self.cutoff = as_of_micros(as_of)
        self.categories = list(categories)
        table = select_events(events, as_of)
        persona = pc.dictionary_encode(table.column("persona_id").combine_chunks())
        order = np.asarray(pc.sort_indices(persona.dictionary), dtype=np.int64)
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        pidx = rank[persona.indices.to_numpy(zero_copy_only=False).astype(np.int64)]
        self.persona_ids = persona.dictionary.take(pa.array(order, pa.int64()))
        self.P = len(order)
        # Canonical row order: per-persona float sums then never depend on the order rows arrived in.
        keyed = pa.table({"p": pidx, "ts": table.column("ts"), "partner_id": table.column("partner_id"),
                          "event_id": table.column("event_id")})
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
        return self.cached(("types", tuple(types)), lambda: np.isin(self.event_type, [EVENT_TYPES.index(t) for t in types]))

    def rows(self, window: int | None, types: Sequence[str] | None) -> np.ndarray:
        return self.within(window) & self.of_type(types)

    def count(self, mask: np.ndarray) -> np.ndarray:
        return np.bincount(self.pidx[mask], minlength=self.P).astype(np.int64)

    def total(self, mask: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return np.bincount(self.pidx[mask], weights=weights[mask], minlength=self.P)

    def groups(self, codes: np.ndarray, mask: np.ndarray) -> _Groups:
        rows = np.flatnonzero(mask & (codes >= 0))
        width = int(codes.max(initial=-1)) + 1
        inverse, keys = pd.factorize(self.pidx[rows] * width + codes[rows])
        keys = np.asarray(keys, dtype=np.int64)
        return _Groups(keys // max(width, 1), keys % max(width, 1), inverse.astype(np.int64), rows)

    def latest(self, g: _Groups, ts: np.ndarray | None = None) -> np.ndarray:
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
        if name == "email":
            return self.encode("email", _normalise_email)
        if name == "phone":
            return self.encode("phone", _normalise_phone)
        if name == "category":
            return self.encode("category", top_level)
        if name == "slot":  # feature category slot; len(categories) = another category
            slots = {c: i for i, c in enumerate(self.categories)}
            return self.lookup("category", lambda v: None if top_level(v) is None else slots.get(top_level(v), len(slots)))
        if name in ("customer", "subscriber", "city"):  # scoped identifiers: (scope, value) pairs
            scope, value, normalise = {
                "customer": ("partner", "customer_id", lambda v: v.strip() or None),
                "subscriber": ("partner", "subscriber_id", lambda v: v.strip() or None),
                "city": ("country", "city", lambda v: v.strip().lower() or None),
            }[name]
            inner, outer = self.encode(value, normalise), self.key(scope)
            return np.where((inner >= 0) & (outer >= 0), outer * (int(inner.max(initial=-1)) + 1) + inner, -1)
        source = {"session": "session_key", "device": "device_id", "partner": "partner_id", "brand": "brand",
                  "product": "product_id"}[name]
        return self.encode(source)

    @property
    def category_median(self) -> np.ndarray:
        """Median offer price of each row's category path (NaN when unknown)."""
        def make() -> np.ndarray:
            medians = self._medians
            lookup = {} if medians is None else dict(
                zip(medians.column("category").to_pylist(), medians.column("median_price").to_pylist())
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
        """Per purchase row with a product: partners that showed the product within comparison_days before, lowest price."""
        def make() -> dict[str, np.ndarray]:
            product = self.key("product")
            width = int(product.max(initial=-1)) + 1
            key = self.pidx * width + product
            purchase = np.flatnonzero(self.of_type(PURCHASE) & (product >= 0))
            view = np.flatnonzero(self.of_type(VIEW) & (product >= 0))
            view = view[np.isin(key[view], key[purchase])]
            bought = pa.table({"k": key[purchase], "row": purchase, "pts": self.ts[purchase]})
            seen = pa.table({"k": key[view], "vts": self.ts[view], "partner": self.key("partner")[view],
                             "vprice": self.price[view]})
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
        """This partition's forwarded-click links (`social_links` rows), with `p` = persona index, before the cut-off."""
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
        arrays = [self.persona_ids.cast(_STR), pa.array(np.full(self.P, (self.as_of - dt.date(1970, 1, 1)).days, np.int32), pa.date32())]
        for field in list(schema)[2:]:
            dtype = np.int64 if field.type == pa.int64() else np.float64
            arrays.append(pa.array(np.asarray(values[field.name]).astype(dtype, copy=False), field.type))
        return pa.Table.from_arrays(arrays, schema=schema)


# --------------------------------------------------------------------------------------------------
# The statistics named by the catalogue (`Feature.stat`): each returns one value per persona
# --------------------------------------------------------------------------------------------------

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


def _sessions(p: Partition, window: int) -> _Groups:
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


def _shares(p: Partition, f: Feature) -> tuple[_Groups, np.ndarray, np.ndarray]:
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


def _multi_partner_views(p: Partition, window: int) -> tuple[_Groups, np.ndarray, np.ndarray, np.ndarray]:
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
    return p.divide(p.count(mask & (relative > f.params["factor"])).astype(np.float64), p.count(mask).astype(np.float64))


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
    keep = pc.and_(pc.equal(links.column("role"), role),
                   pc.greater_equal(links.column("ts").cast(pa.int64()), p.cutoff - window * DAY_US))
    distinct = {"clicks": ["partner_id", "click_id"], "others": ["other_persona_id"],
                "messages": ["partner_id", "click_token"]}[measure]
    counted = links.filter(keep).group_by(["p", *distinct]).aggregate([]).group_by("p").aggregate([([], "count_all")])
    out = np.zeros(p.P, np.int64)
    out[counted.column("p").to_numpy()] = counted.column("count_all").to_numpy()
    return out


@stat("social")
def _social(p: Partition, f: Feature) -> np.ndarray:
    return _social_count(p, f.window, f.params["role"], f.params["measure"])


@stat("forward_rate")
def _forward_rate(p: Partition, f: Feature) -> np.ndarray:
    return p.divide(_social_count(p, f.window, "sender", "messages").astype(np.float64),
                    p.count(p.rows(f.window, ("message_sent",))).astype(np.float64))


def compute_partition(
    events: pa.Table,
    as_of: dt.date,
    config: FeaturesConfig,
    categories: Sequence[str],
    medians: pa.Table | None = None,
    social: pa.Table | None = None,
) -> pa.Table:
    """Every catalogue feature for the personas in `events` (all rows of each persona; `ts < as_of` only).

    `categories` / `medians` come from `combine_stats`, `social` from `social_links` (rows of these
    personas); both are global facts, so a partition's result does not depend on the other partitions.
    Rows are sorted by persona_id.
    """
    part = Partition(events, as_of, config, categories, medians, social)
    features = catalog(config)
    missing = sorted({f.stat for f in features} - STATS.keys())
    if missing:
        raise ValueError(f"the catalogue names statistics that do not exist: {missing}")
    return part.to_table({f.name: STATS[f.stat](part, f) for f in features})


# --------------------------------------------------------------------------------------------------
# Single process and Ray
# --------------------------------------------------------------------------------------------------


def compute_local(events: pa.Table, as_of: dt.date, config: JobConfig) -> pa.Table:
    """The single-process baseline: the same functions as the Ray path, over one in-memory table."""
    events = select_events(events, as_of)
    categories, medians = combine_stats([partition_stats(events, as_of)], config)
    social = social_links(social_tokens(events, as_of))
    return compute_partition(events, as_of, config.features, categories, medians, social)


@functools.cache
def _task(fn: Callable, num_returns: int = 1):
    import ray

    return ray.remote(num_returns=num_returns)(fn)


def _combine_stats_task(config: JobConfig, *stats: tuple[pa.Table, pa.Table]) -> tuple[list[str], pa.Table]:
    return combine_stats(stats, config)


def compute_features_with_categories(
    events: "ray.data.Dataset", as_of: dt.date, config: JobConfig
) -> tuple["ray.data.Dataset", list[str]]:
    """`compute_features`, also returning the feature categories (slot order) that the table used."""
    import ray
    import ray.data

    from jobs.raykit.shuffle import hash_partition, map_partitions

    n = config.ray.num_partitions
    known = events.columns(fetch_if_missing=False)  # no execution just to learn the schema
    if known is not None:  # project early (pushed into the read); select_events drops the rest anyway
        events = events.select_columns([c for c in INPUT_COLUMNS if c in known])
    selected = events.map_batches(select_events, batch_format="pyarrow", batch_size=None, fn_kwargs={"as_of": as_of})
    blocks = selected.to_arrow_refs() or [ray.put(INPUT_SCHEMA.empty_table())]
    parts = hash_partition(blocks, ["persona_id"], n)

    stats = map_partitions(partition_stats, parts, as_of)
    categories_ref, medians_ref = _task(_combine_stats_task, 2).remote(config, *stats)

    tokens = map_partitions(social_tokens, parts, as_of)
    links = map_partitions(social_links, hash_partition(tokens, ["partner_id", "click_token"], n))
    social = hash_partition(links, ["persona_id"], n)  # same key and hash as `parts`: partition i meets i

    compute = _task(compute_partition)
    refs = [compute.remote(parts[i], as_of, config.features, categories_ref, medians_ref, social[i]) for i in range(n)]
    categories = ray.get(categories_ref)
    return ray.data.from_arrow_refs(refs), categories


def compute_features(
    events: "ray.data.Dataset", as_of: dt.date, config: JobConfig, personas: "ray.data.Dataset | None" = None
) -> "ray.data.Dataset":
    """The feature table of every persona with events before `as_of`, as a Ray Dataset.

    `events` are events_resolved rows (any extra columns are dropped unread); rows with `ts >= as_of` or
    no persona are ignored here. `personas` is accepted for the interface but not read: personas/ counts
    identifiers over all time, which would leak the future into the features.
    """
    del personas
    return compute_features_with_categories(events, as_of, config)[0]


def _last_ts(batch: pa.Table) -> pa.Table:
    ts = pc.cast(batch.column("ts"), pa.timestamp("us", tz="UTC"), safe=False)
    return pa.table({"last": pa.array([pc.max(ts).as_py()], pa.timestamp("us", tz="UTC"))})


def default_as_of(events: "ray.data.Dataset") -> dt.date:
    """The day after the last event (so every event is before the cut-off); one small row per block."""
    rows = events.select_columns(["ts"]).map_batches(_last_ts, batch_format="pyarrow", batch_size=None).take_all()
    last = [row["last"] for row in rows if row["last"] is not None]
    if not last:
        raise UserError("the events table has no rows with a timestamp: nothing to compute features from.")
    return pd.Timestamp(max(last)).tz_convert("UTC").date() + dt.timedelta(days=1)


def run_features(config: JobConfig, run_dir: str) -> dict[str, Any]:
    """`segments features`: write features/ of the run at config.features.as_of (default: day after the last event)."""
    from jobs.io import RunLayout, read_dataset, read_marker, write_dataset
    from jobs.raykit.session import ray_session

    started = time.perf_counter()
    layout = RunLayout(run_dir)
    source = layout.table("events_resolved")
    rows_in = read_marker(source, config.storage).get("rows")
    with ray_session(config.ray):
        events = read_dataset(source, config.storage, columns=INPUT_COLUMNS)
        as_of = config.features.as_of or default_as_of(events)
        features, categories = compute_features_with_categories(events, as_of, config)
        if features.count() == 0:  # from block metadata: the rows stay on the workers
            raise UserError(f"no persona has events before {as_of.isoformat()} in {source}: pick a later --as-of.")
        extra = {"as_of": as_of.isoformat(), "categories": categories, "features": len(catalog(config.features)),
                 "config_hash": config.section_hash("features")}
        marker = write_dataset(features, layout.table("features"), config.storage, extra=extra)
    summary = {
        "stage": "features",
        "as_of": as_of.isoformat(),
        "rows_in": rows_in,
        "personas": marker["rows"],
        "features": len(catalog(config.features)),
        "categories": categories,
        "seconds": round(time.perf_counter() - started, 3),
        "path": layout.table("features"),
    }
    log.info("features: %s personas x %s features as of %s", summary["personas"], summary["features"], summary["as_of"])
    return summary
