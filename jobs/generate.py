"""Synthetic cross-partner event logs in the input contract, with `true_person_id` ground truth.

Synthetic tooling, not a pipeline stage: one process, vectorised numpy, deterministic per seed (same seed,
same rows, same bytes). Events start 2026-01-01 00:00 UTC and span `days`.

What the data plants (figures measured at 20k people x 8 partners x 180 days: ~1.05M events, ~34k orders;
mix: product_view 46%, page_view 21%, message_sent 9%, add_to_cart 9%, login 5%, purchase 5%,
message_click 2%, subscribe 2%):

Identity traps
  * people with 1-3 devices (UUIDs stable across partners), 1-2 emails, 0-2 phones, a country (BG, RO, GR,
    DE, PL) and a city; each uses 1-5 of the K partners, has a customer record at some of them (customer and
    subscriber ids are per-partner number sequences: the same string at two partners is two people);
  * every device of an identified person sees at least one login (email + customer id), so it can be linked;
    ~4% of people are anonymous (one device, never identified);
  * emails as typed (about half of the values differ from their normal form): case changes, surrounding
    spaces, `+tags`, gmail dots, googlemail.com;
  * phones as typed: `+CC...`, `00CC...`, national with trunk 0, spaces, dashes, brackets; ~5% of phones
    are of another country than the person's (always typed internationally); every number is a valid
    mobile number, unique to its person;
  * junk contacts typed at checkout by many unrelated people: ~1.4% of orders carry a junk email, ~1% a
    junk phone; mostly the usual blocklist values, plus a few (`x@x.com`, `nomail@abv.bg`, `0888888888`
    typed in BG) that only a fan-out rule catches;
  * shared public devices (office / internet cafe, one per 400 people, ~100 people each, ~2.5% of rows):
    mostly anonymous browsing by people of that city, ~15% of sessions with a login by the person at the
    keyboard, so anonymous rows there belong to nobody identifiable;
  * family tablets (one household per 200 people): two people of a household, each always logged in with
    their own customer record at a store they both use (two customer ids at one partner on one device);
  * campaigns: `message_sent` carries click_token + subscriber_id + email or phone (no device, no session);
    `message_click` carries the token + the clicking device and opens a landing session; ~20% of messages
    are clicked, ~2.8% of clicks come from a forwardee's device (the recipient also clicked ~70% of those);
  * 5 partners in 8 send session_id, the others (p002, p004, p007, p010, ...) leave it null; no session has
    an inner gap of 30 minutes, and sessions of different people on one shared device are >= 40 minutes
    apart, so cutting per partner + device at 30 minutes never mixes people.

Behaviour (what look-alike segments can learn: persistent traits, not only recency/frequency/money)
  * a category tree (7 top categories, 31 leaves) with brands per top category; a product is sold at every
    partner carrying its top category (general stores carry all), at partner prices +-15% around its base;
  * per person: Dirichlet category affinities with ~35% of categories never touched, brand loyalty, a
    purchase cadence class (none 28% / rare / occasional / regular / frequent: gamma-spaced orders), a
    campaign engagement level (higher for frequent buyers) and a preferred payment method;
  * intent bursts: 1-4 sessions in the 3-4 weeks before each order, denser and with more carts near it;
  * price hunters (15% of people): view the product at 2-3 partners within 4 days before buying and buy
    at the cheapest in ~85% of orders (others compare in ~4% of orders);
  * category lovers (~15% of buyers): orders about monthly, 85% of them in the favourite category;
  * life events (20% of people who never touch home / toys / sports): from a date on they browse that
    category (with carts), and 75% of them buy in it for the first time 2-8 weeks later.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.contract import CONTRACT_SCHEMA

log = logging.getLogger(__name__)

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
START_US = int(START.timestamp()) * 1_000_000
DAY = 86_400.0
ROWS_PER_FILE = 50_000
MAX_SLOTS = 5  # partners per person
MAX_DEVICES = 3

# The input contract plus the ground truth that only evaluation may read.
SCHEMA = CONTRACT_SCHEMA.append(pa.field("true_person_id", pa.string()))

EVENT_TYPES = ["page_view", "product_view", "add_to_cart", "purchase", "login", "subscribe", "message_sent", "message_click"]
PAGE_VIEW, PRODUCT_VIEW, ADD_TO_CART, PURCHASE, LOGIN, SUBSCRIBE, MESSAGE_SENT, MESSAGE_CLICK = range(8)
TRAFFIC = ["direct", "search", "social", "ads", "email", "sms", "viber", "referral"]
WEB_TRAFFIC_W = np.array([0.36, 0.30, 0.12, 0.14, 0, 0, 0, 0.08])
CHANNEL_TRAFFIC = np.array([4, 5, 6])  # email, sms, viber
PAYMENTS = ["card", "cash_on_delivery", "bank_transfer", "installments", "wallet"]
PAYMENT_W = np.array([0.45, 0.3, 0.07, 0.06, 0.12])
DEVICE_TYPES = ["desktop", "mobile", "tablet"]

# top category -> (leaf -> (typical price, weight), brands)
CATALOG: dict[str, tuple[dict[str, tuple[float, float]], list[str]]] = {
    "electronics": (
        {"phones": (420, 3), "laptops": (850, 2), "tv": (560, 1), "audio": (110, 2), "accessories": (22, 3)},
        ["Samsung", "Apple", "Xiaomi", "Lenovo", "Sony", "LG", "HP", "Asus"],
    ),
    "fashion": (
        {"women": (45, 3), "men": (42, 2), "shoes": (75, 3), "bags": (55, 1), "kids": (25, 1)},
        ["Zara", "H&M", "Mango", "Reserved", "Nike", "Adidas", "Puma", "LC Waikiki"],
    ),
    "home": (
        {"kitchen": (55, 3), "furniture": (260, 2), "decor": (28, 2), "bedding": (45, 2), "appliances": (180, 2)},
        ["IKEA", "Tefal", "Bosch", "Philips", "JYSK", "Zwilling", "Rowenta"],
    ),
    "beauty": (
        {"skincare": (24, 3), "makeup": (18, 2), "fragrance": (65, 2), "hair": (14, 2)},
        ["L'Oreal", "Nivea", "Maybelline", "Garnier", "Vichy", "La Roche-Posay", "Dior"],
    ),
    "sports": (
        {"fitness": (40, 2), "running": (85, 2), "cycling": (320, 1), "outdoor": (70, 2)},
        ["Nike", "Adidas", "Decathlon", "Salomon", "Garmin", "Under Armour"],
    ),
    "books": (
        {"fiction": (14, 3), "children": (11, 2), "business": (19, 1), "cookbooks": (22, 1)},
        ["Penguin", "HarperCollins", "Ciela", "Egmont", "Bard", "Helikon"],
    ),
    "toys": (
        {"lego": (48, 2), "dolls": (25, 2), "board_games": (30, 2), "baby": (35, 2)},
        ["LEGO", "Mattel", "Hasbro", "Ravensburger", "Chicco", "Fisher-Price"],
    ),
}
TOPS = list(CATALOG)
TOP_INDEX = {t: i for i, t in enumerate(TOPS)}
LIFE_EVENT_TOPS = np.array([TOP_INDEX["home"], TOP_INDEX["toys"], TOP_INDEX["sports"]])
LIFE_EVENT_W = np.array([0.6, 0.2, 0.2])

COUNTRIES = {
    # code: (weight, calling code, trunk prefix, [(city, weight)], mobile prefixes [(prefix, digits after)],
    #        email domains [(domain, weight)], first names, last names)
    "BG": (0.40, "359", "0", [("Sofia", 5), ("Plovdiv", 2), ("Varna", 2), ("Burgas", 1), ("Ruse", 1)],
           [("87", 7), ("88", 7), ("89", 7), ("98", 7)],
           [("gmail.com", 55), ("abv.bg", 25), ("yahoo.com", 10), ("outlook.com", 10)],
           ["ivan", "georgi", "dimitar", "maria", "elena", "nikolay", "petya", "stoyan", "desislava", "yordan",
            "teodora", "kalin", "radoslava", "martin", "viktoria"],
           ["petrov", "ivanova", "georgiev", "dimitrova", "nikolov", "stoyanova", "todorov", "angelova", "kolev",
            "marinova", "hristov", "popova", "yordanov", "vasileva"]),
    "RO": (0.20, "40", "0", [("Bucharest", 5), ("Cluj-Napoca", 2), ("Timisoara", 2), ("Iasi", 2)],
           [("72", 7), ("74", 7), ("75", 7), ("76", 7)],
           [("gmail.com", 55), ("yahoo.com", 25), ("outlook.com", 10), ("hotmail.com", 10)],
           ["andrei", "ioana", "mihai", "elena", "alexandru", "andreea", "cristian", "mihaela", "florin", "diana",
            "razvan", "bianca", "stefan", "roxana"],
           ["popescu", "ionescu", "popa", "dumitru", "stan", "stoica", "gheorghe", "matei", "ciobanu", "rusu",
            "munteanu", "constantin"]),
    "GR": (0.15, "30", "", [("Athens", 5), ("Thessaloniki", 2), ("Patras", 1), ("Heraklion", 1)],
           [("690", 7), ("693", 7), ("694", 7), ("695", 7), ("697", 7), ("698", 7), ("699", 7)],
           [("gmail.com", 60), ("yahoo.gr", 15), ("hotmail.com", 15), ("otenet.gr", 10)],
           ["giorgos", "maria", "nikos", "eleni", "kostas", "katerina", "dimitris", "sofia", "yannis", "despina",
            "panagiotis", "vasiliki"],
           ["papadopoulos", "papadaki", "nikolaou", "georgiou", "oikonomou", "karagiannis", "vlachou",
            "pappas", "makri", "antoniou"]),
    "DE": (0.10, "49", "0", [("Berlin", 4), ("Munich", 3), ("Hamburg", 3), ("Cologne", 2)],
           [("151", 8), ("152", 8), ("157", 8), ("160", 7), ("170", 7), ("171", 7), ("172", 7), ("175", 7),
            ("176", 8), ("177", 8), ("178", 8), ("179", 8)],
           [("gmail.com", 35), ("gmx.de", 25), ("web.de", 25), ("t-online.de", 15)],
           ["lukas", "anna", "maximilian", "lena", "felix", "laura", "jonas", "julia", "paul", "sarah",
            "leon", "katharina"],
           ["mueller", "schmidt", "schneider", "fischer", "weber", "meyer", "wagner", "becker", "hoffmann",
            "schulz"]),
    "PL": (0.15, "48", "", [("Warsaw", 5), ("Krakow", 3), ("Wroclaw", 2), ("Gdansk", 2), ("Poznan", 2)],
           [("50", 7), ("51", 7), ("53", 7), ("57", 7), ("60", 7), ("66", 7), ("69", 7), ("72", 7), ("73", 7),
            ("78", 7), ("79", 7), ("88", 7)],
           [("gmail.com", 45), ("wp.pl", 25), ("onet.pl", 20), ("o2.pl", 10)],
           ["jakub", "anna", "kacper", "zuzanna", "piotr", "katarzyna", "tomasz", "agnieszka", "michal",
            "magdalena", "pawel", "aleksandra"],
           ["nowak", "kowalski", "wisniewska", "wojcik", "kowalczyk", "kaminski", "lewandowska", "zielinski",
            "szymanska", "wozniak"]),
}
COUNTRY_CODES = list(COUNTRIES)

JUNK_EMAILS = ["test@test.com", "Test@test.com", "noemail@gmail.com", "a@a.com", "asd@asd.com", "no@email.com",
               "none@none.com", "email@email.com", "test@example.com", "x@x.com", "nomail@abv.bg"]
JUNK_EMAIL_W = np.array([20, 6, 14, 10, 8, 8, 5, 5, 6, 9, 9], dtype=float)
JUNK_PHONES = ["0000000000", "1111111111", "1234567890", "0123456789", "9999999999", "0888888888", "0000000"]
JUNK_PHONE_W = np.array([25, 10, 15, 10, 8, 22, 10], dtype=float)
EMAIL_VARIANT_W = np.array([0.60, 0.08, 0.07, 0.08, 0.08, 0.05, 0.04])  # see _email_variants
PHONE_VARIANT_W = np.array([0.22, 0.12, 0.12, 0.18, 0.14, 0.08, 0.07, 0.07])  # see _phone_variants
N_EMAIL_VARIANTS = len(EMAIL_VARIANT_W)
N_PHONE_VARIANTS = len(PHONE_VARIANT_W)


# ---------------------------------------------------------------------------------------------------------------
# small vectorised helpers


def _pick(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One index per row of a (n, k) non-negative weight matrix (rows with no weight give k-1)."""
    c = np.cumsum(weights, axis=1)
    u = (1.0 - rng.random(len(weights))) * c[:, -1]
    return np.minimum((c < u[:, None]).sum(axis=1), weights.shape[1] - 1)


def _explode(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(parent index, position within parent) for `counts[i]` children of every parent i."""
    counts = counts.astype(np.int64)
    parent = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return parent, np.arange(parent.size) - starts[parent]


def _hex_ids(rng: np.random.Generator, n: int, nbytes: int, dashes: bool = False) -> np.ndarray:
    """`n` random lowercase hex strings (UUID-shaped with dashes when nbytes == 16) as a numpy str array."""
    b = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    lut = np.frombuffer(b"0123456789abcdef", dtype="S1")
    chars = np.empty((n, nbytes * 2), dtype="S1")
    chars[:, 0::2] = lut[b >> 4]
    chars[:, 1::2] = lut[b & 15]
    if dashes:
        cuts = [0, 8, 12, 16, 20, 32]
        parts = [chars[:, a:z] for a, z in zip(cuts, cuts[1:])]
        dash = np.full((n, 1), b"-", dtype="S1")
        chars = np.concatenate([parts[0], dash, parts[1], dash, parts[2], dash, parts[3], dash, parts[4]], axis=1)
    return chars.view(f"S{chars.shape[1]}").ravel().astype(str)


def _strings(values: Any) -> pa.Array:
    return pa.array(list(values) if not isinstance(values, np.ndarray) else values, type=pa.string())


def _take(dictionary: pa.Array, codes: np.ndarray) -> pa.Array:
    """dictionary[codes] with null where code < 0."""
    codes = np.asarray(codes, dtype=np.int64)
    mask = codes < 0
    return dictionary.take(pa.array(np.where(mask, 0, codes), mask=mask))


def _time_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    w = np.array([1, .5, .3, .2, .2, .3, .8, 1.5, 2.5, 3, 3.2, 3.3, 3.5, 3.3, 3.2, 3.2, 3.4, 3.8, 4.3, 5, 5.4, 5, 3.8, 2.2])
    hours = rng.choice(24, size=n, p=w / w.sum())
    return hours * 3600.0 + rng.random(n) * 3600.0


def _times(rng: np.random.Generator, n: int, lo_day: np.ndarray | float, hi_day: np.ndarray | float) -> np.ndarray:
    """Session start times (seconds from START) on random days in [lo, hi), at realistic hours."""
    lo = np.broadcast_to(np.asarray(lo_day, dtype=float), (n,))
    hi = np.broadcast_to(np.asarray(hi_day, dtype=float), (n,))
    day = np.floor(lo + rng.random(n) * np.maximum(hi - lo, 0))
    return day * DAY + _time_of_day(rng, n)


# ---------------------------------------------------------------------------------------------------------------
# the world: catalogue, partners, people and their identifiers


class _World:
    def __init__(self, persons: int, partners: int, days: int, seed: int):
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, 0x5E6E]))
        self.P, self.K, self.days = int(persons), int(partners), int(days)
        self._catalogue()
        self._partners()
        self._people()
        self._identifiers()

    # -- catalogue --------------------------------------------------------------------------------------------
    def _catalogue(self) -> None:
        rng = self.rng
        leaf_names, leaf_top, leaf_price, leaf_w = [], [], [], []
        brand_names, brand_top = [], []
        self.top_brand_start = np.zeros(len(TOPS), dtype=np.int64)
        self.top_brand_count = np.zeros(len(TOPS), dtype=np.int64)
        for t, (leaves, brands) in enumerate(CATALOG.values()):
            self.top_brand_start[t] = len(brand_names)
            self.top_brand_count[t] = len(brands)
            brand_names += brands
            brand_top += [t] * len(brands)
            for leaf, (price, w) in leaves.items():
                leaf_names.append(f"{TOPS[t]}/{leaf}")
                leaf_top.append(t)
                leaf_price.append(price)
                leaf_w.append(w)
        self.leaf_names = leaf_names
        self.leaf_top = np.array(leaf_top)
        self.brand_names = brand_names
        n_leaf, n_top = len(leaf_names), len(TOPS)
        max_leaf = max(len(v[0]) for v in CATALOG.values())
        self.top_leaf_start = np.array([leaf_top.index(t) for t in range(n_top)])
        self.top_leaf_w = np.zeros((n_top, max_leaf))
        for i in range(n_leaf):
            self.top_leaf_w[leaf_top[i], i - self.top_leaf_start[leaf_top[i]]] = leaf_w[i]
        # products: for every leaf and every brand of its top, 1-5 products (grouped by leaf, then brand)
        max_brand = int(self.top_brand_count.max())
        counts = np.zeros((n_leaf, max_brand), dtype=np.int64)
        for i in range(n_leaf):
            counts[i, : self.top_brand_count[leaf_top[i]]] = rng.integers(1, 6, size=self.top_brand_count[leaf_top[i]])
        self.lb_count = counts
        self.lb_start = (np.cumsum(counts.ravel()) - counts.ravel()).reshape(counts.shape)
        self.leaf_start = self.lb_start[:, 0]
        self.leaf_count = counts.sum(axis=1)
        n_prod = int(counts.sum())
        flat_leaf, flat_brand = np.divmod(np.repeat(np.arange(counts.size), counts.ravel()), max_brand)
        self.prod_leaf = flat_leaf
        self.prod_top = self.leaf_top[flat_leaf]
        self.prod_brand = self.top_brand_start[self.prod_top] + flat_brand
        self.prod_base = np.array(leaf_price)[flat_leaf] * rng.lognormal(0.0, 0.45, n_prod)
        self.prod_ids = np.array([f"SKU-{x:06d}" for x in rng.choice(900_000, size=n_prod, replace=False) + 100_000])

    # -- partners ---------------------------------------------------------------------------------------------
    def _partners(self) -> None:
        rng, K, n_top = self.rng, self.K, len(TOPS)
        width = max(3, len(str(K)))
        self.partner_ids = [f"p{k:0{width}d}" for k in range(1, K + 1)]
        # every third partner (and the first) is a general store; the others carry 2-4 top categories
        carry = np.zeros((K, n_top), dtype=bool)
        for k in range(K):
            if k % 3 == 0:
                carry[k] = True
            else:
                carry[k, rng.choice(n_top, size=rng.integers(2, 5), replace=False)] = True
        self.carry = carry
        self.popularity = 1.0 / np.arange(1, K + 1) ** 0.6
        # 3 partners in 8 leave session_id null (p002, p004, p007, ...); the first always sends it
        self.sends_session = ~np.isin(np.arange(K) % 8, [1, 3, 6])
        noise = rng.uniform(-0.15, 0.15, size=(len(self.prod_ids), K))
        price = self.prod_base[:, None] * (1.0 + noise)
        self.price = np.where(price >= 5, np.round(price) - 0.01, np.round(price, 2))

    # -- people -----------------------------------------------------------------------------------------------
    def _people(self) -> None:
        rng, P, K, n_top = self.rng, self.P, self.K, len(TOPS)
        cw = np.array([COUNTRIES[c][0] for c in COUNTRY_CODES])
        self.country = rng.choice(len(COUNTRY_CODES), size=P, p=cw / cw.sum())
        city_names, city_country, city_start = [], [], []
        self.city = np.zeros(P, dtype=np.int64)
        for ci, code in enumerate(COUNTRY_CODES):
            cities = COUNTRIES[code][3]
            city_start.append(len(city_names))
            city_names += [c for c, _ in cities]
            city_country += [ci] * len(cities)
            who = np.flatnonzero(self.country == ci)
            w = np.array([x for _, x in cities], dtype=float)
            self.city[who] = city_start[ci] + rng.choice(len(cities), size=len(who), p=w / w.sum())
        self.city_names, self.city_country = city_names, np.array(city_country)

        self.anon = rng.random(P) < 0.04  # browse anonymously on one device, never identified
        self.hunter = (rng.random(P) < 0.15) & ~self.anon
        # purchase cadence class: none, rare, occasional, regular, frequent (mean days between orders)
        klass = rng.choice(5, size=P, p=[0.28, 0.27, 0.25, 0.14, 0.06])
        klass[self.anon] = 0
        self.cadence = np.array([np.inf, 240.0, 120.0, 60.0, 28.0])[klass] * rng.lognormal(0, 0.2, P)
        self.buyer = klass > 0
        self.lover = self.buyer & (klass >= 2) & (rng.random(P) < 0.25)
        self.cadence[self.lover] = np.minimum(self.cadence[self.lover], 32.0)
        self.engagement = np.clip(rng.beta(0.8, 4.0, P) * (1.0 + 15.0 / np.where(self.buyer, self.cadence, 200.0)), 0, 0.9)
        self.browse_rate = rng.lognormal(np.log(0.010), 0.6, P) * (1.0 + 12.0 / np.where(self.buyer, self.cadence, 60.0))
        self.loyalty = rng.beta(2.0, 2.0, P)
        self.fav_brand = rng.integers(0, 1 << 30, size=(P, n_top)) % self.top_brand_count[None, :]
        self.pay_pref = rng.choice(len(PAYMENTS), size=P, p=PAYMENT_W)
        self.intent = rng.lognormal(0, 0.4, P)

        # partner slots: 1-5 distinct partners by popularity (Gumbel top-k), hunters use one more
        n_slots = rng.choice(5, size=P, p=[0.3, 0.3, 0.2, 0.12, 0.08]) + 1 + self.hunter
        n_slots = np.where(self.hunter, np.maximum(n_slots, 3), n_slots)  # hunters know several stores
        n_slots = np.minimum(n_slots, min(MAX_SLOTS, K))
        slots = np.full((P, MAX_SLOTS), -1, dtype=np.int64)
        logw = np.log(self.popularity)
        for lo in range(0, P, 50_000):
            hi = min(P, lo + 50_000)
            keys = logw[None, :] - np.log(-np.log(rng.random((hi - lo, K))))
            top = np.argsort(-keys, axis=1, kind="stable")[:, :MAX_SLOTS]
            slots[lo:hi, : top.shape[1]] = top
        slots[np.arange(MAX_SLOTS)[None, :] >= n_slots[:, None]] = -1
        self.slots = slots
        self.n_slots = n_slots
        self.slot_w = np.where(slots >= 0, np.array([0.45, 0.25, 0.15, 0.1, 0.05])[None, :], 0.0)

        # category affinity: Dirichlet, some categories never touched, only what the person's stores carry
        aff = rng.dirichlet(np.full(n_top, 0.6), size=P)
        fav = aff.argmax(axis=1)
        aff[(rng.random((P, n_top)) < 0.35) & (np.arange(n_top)[None, :] != fav[:, None])] = 0.0
        carried = self._carried()
        aff = np.where(carried, aff, 0.0)
        empty = aff.sum(axis=1) <= 0
        aff[empty] = carried[empty] * rng.random((int(empty.sum()), n_top))
        aff /= aff.sum(axis=1, keepdims=True)
        self.fav = aff.argmax(axis=1)
        lov = np.flatnonzero(self.lover)
        aff[lov] *= 0.15
        aff[lov, self.fav[lov]] += 0.85
        self.aff = aff
        # life event: a never-touched category (home / toys / sports) opens at some day
        self.life_cat = np.full(P, -1)
        self.life_day = np.full(P, np.inf)
        cand = (aff[:, LIFE_EVENT_TOPS] == 0) & carried[:, LIFE_EVENT_TOPS]
        has = cand.any(axis=1) & ~self.anon & (rng.random(P) < 0.2)
        who = np.flatnonzero(has)
        pick = _pick(rng, cand[who] * LIFE_EVENT_W[None, :])
        self.life_cat[who] = LIFE_EVENT_TOPS[pick]
        self.life_day[who] = rng.uniform(-20, self.days, size=len(who))
        # most make a first purchase in it 2-8 weeks later, after weeks of browsing it
        self.life_first = self.life_day + rng.uniform(14, 56, size=P)
        self.life_buys = (self.life_cat >= 0) & (rng.random(P) < 0.75)

    def _carried(self) -> np.ndarray:
        s = np.where(self.slots >= 0, self.slots, 0)
        return (self.carry[s] & (self.slots >= 0)[:, :, None]).any(axis=1)

    # -- identifiers ------------------------------------------------------------------------------------------
    def _identifiers(self) -> None:
        rng, P = self.rng, self.P
        # devices
        n_dev = np.where(self.anon, 1, rng.choice(3, size=P, p=[0.45, 0.4, 0.15]) + 1)
        dev_owner, dev_pos = _explode(n_dev)
        n_personal = len(dev_owner)
        self.person_dev = np.full((P, MAX_DEVICES), -1, dtype=np.int64)
        self.person_dev[dev_owner, dev_pos] = np.arange(n_personal)
        self.dev_w = np.where(self.person_dev >= 0, np.array([0.6, 0.28, 0.12])[None, :], 0.0)
        dev_type = np.where(dev_pos == 0, rng.choice(3, size=n_personal, p=[0.3, 0.65, 0.05]),
                            rng.choice(3, size=n_personal, p=[0.55, 0.2, 0.25]))
        # shared public devices (office / internet cafe) and family tablets
        self.n_public = max(4, P // 400)
        city_w = np.bincount(self.city, minlength=len(self.city_names)).astype(float)
        self.public_city = rng.choice(len(self.city_names), size=self.n_public, p=city_w / city_w.sum())
        ident = np.flatnonzero(~self.anon)
        n_house = max(2, P // 200) if len(ident) >= 4 else 0
        pairs = rng.choice(ident, size=2 * n_house, replace=False).reshape(-1, 2) if n_house else np.zeros((0, 2), int)
        self.households = pairs
        self.public_dev = n_personal + np.arange(self.n_public)
        self.family_dev = n_personal + self.n_public + np.arange(len(pairs))
        n_all = n_personal + self.n_public + len(pairs)
        self.dev_type = np.concatenate([dev_type, np.zeros(self.n_public, int), np.full(len(pairs), 2)])
        self.dev_ids = _hex_ids(rng, n_all, 16, dashes=True)

        # customer / subscriber records per partner slot
        valid = self.slots >= 0
        self.cust = valid & (rng.random((P, MAX_SLOTS)) < 0.6) & ~self.anon[:, None]
        self.cust[:, 0] = ~self.anon  # everyone identified has an account at their main store
        self.sub = valid & (rng.random((P, MAX_SLOTS)) < 0.35) & ~self.anon[:, None]
        # households: both members use the first store of the first member, each with an own account
        for a, b in pairs:
            k = self.slots[a, 0]
            where = np.flatnonzero(self.slots[b] == k)
            j = int(where[0]) if len(where) else int(self.n_slots[b] - 1)
            self.slots[b, j] = k
            self.cust[b, j] = True
        self.slot_w = np.where(self.slots >= 0, self.slot_w, 0.0)
        self.cust_ids = self._per_partner_numbers(self.cust, 10_000)
        self.sub_ids = self._per_partner_numbers(self.sub, 500_000)

        # emails: 1-2 mailboxes, unique after normalisation (a unique number in every local part)
        n_em = np.where(self.anon, 0, rng.choice(2, size=P, p=[0.7, 0.3]) + 1)
        em_owner, em_pos = _explode(n_em)
        self.person_email = np.full((P, 2), -1, dtype=np.int64)
        self.person_email[em_owner, em_pos] = np.arange(len(em_owner))
        numbers = rng.choice(len(em_owner) * 20 + 1000, size=len(em_owner), replace=False) + 7
        styles = rng.integers(0, 5, size=len(em_owner))
        tags = ["shop", "promo", "news", "deals", "orders"]
        variants: list[str] = []
        u_first = rng.random(len(em_owner))
        u_last = rng.random(len(em_owner))
        u_dom = rng.random(len(em_owner))
        u_misc = rng.integers(0, 1 << 30, size=len(em_owner))
        for i, p in enumerate(em_owner):
            c = COUNTRIES[COUNTRY_CODES[self.country[p]]]
            first = c[6][int(u_first[i] * len(c[6]))]
            last = c[7][int(u_last[i] * len(c[7]))]
            doms, dw = zip(*c[5])
            cum = np.cumsum(dw) / sum(dw)
            domain = doms[int(np.searchsorted(cum, u_dom[i], side="right"))]
            n = numbers[i]
            local = [f"{first}.{last}{n}", f"{first}{last}{n}", f"{first[0]}{last}{n}", f"{first}_{last}{n}",
                     f"{last}.{first}{n}"][styles[i]]
            variants += _email_variants(local, domain, tags[u_misc[i] % len(tags)], int(u_misc[i]))
        self.email_strings = np.array(variants + JUNK_EMAILS, dtype=object)
        self.n_emails = len(em_owner)

        # phones: 0-2 valid mobile numbers; ~5% of people carry a foreign one (typed internationally)
        n_ph = np.where(self.anon, 0, rng.choice(3, size=P, p=[0.3, 0.6, 0.1]))
        ph_owner, ph_pos = _explode(n_ph)
        self.person_phone = np.full((P, 2), -1, dtype=np.int64)
        self.person_phone[ph_owner, ph_pos] = np.arange(len(ph_owner))
        foreign = rng.random(len(ph_owner)) < 0.05
        ph_country = np.where(foreign, rng.integers(0, len(COUNTRY_CODES), len(ph_owner)), self.country[ph_owner])
        foreign &= ph_country != self.country[ph_owner]
        u_pre = rng.random(len(ph_owner))
        digits = rng.integers(0, 10, size=(len(ph_owner), 8))
        pvariants: list[str] = []
        used: set[str] = set()
        for i in range(len(ph_owner)):
            c = COUNTRIES[COUNTRY_CODES[ph_country[i]]]
            prefix, nd = c[4][int(u_pre[i] * len(c[4]))]
            nsn = prefix + "".join(map(str, digits[i, :nd]))
            while c[1] + nsn in used:  # unique numbers (a rare clash gets its last digit bumped)
                nsn = nsn[:-1] + str((int(nsn[-1]) + 1) % 10)
            used.add(c[1] + nsn)
            pvariants += _phone_variants(c[1], nsn, c[2], bool(foreign[i]))
        self.phone_strings = np.array(pvariants + JUNK_PHONES, dtype=object)
        self.n_phones = len(ph_owner)

        # subscription channel per record: email, sms, viber (sms / viber need a phone)
        has_phone = (self.person_phone[:, 0] >= 0)[:, None]
        ch = rng.choice(3, size=(P, MAX_SLOTS), p=[0.6, 0.2, 0.2])
        self.sub_channel = np.where(has_phone, ch, 0)

    def _per_partner_numbers(self, flags: np.ndarray, base: int) -> np.ndarray:
        """Per-partner sequence numbers (as strings) for the flagged (person, slot) records, in random order."""
        out = np.full(flags.shape, -1, dtype=np.int64)
        rows, cols = np.nonzero(flags)
        partner = self.slots[rows, cols]
        order = np.lexsort((self.rng.random(len(rows)), partner))
        sorted_partner = partner[order]
        first = np.searchsorted(sorted_partner, sorted_partner, side="left")
        rank = np.empty(len(rows), dtype=np.int64)
        rank[order] = np.arange(len(rows)) - first
        out[rows, cols] = base + rank * 3 + self.rng.integers(0, 3, size=len(rows))
        return out

    # -- typed identifiers ------------------------------------------------------------------------------------
    def email_code(self, email: np.ndarray, junk_p: float = 0.0) -> np.ndarray:
        """Codes into email_strings for the given mailbox indices (-1 stays null), as typed; some junk."""
        rng = self.rng
        var = rng.choice(N_EMAIL_VARIANTS, size=len(email), p=EMAIL_VARIANT_W)
        code = np.where(email >= 0, email * N_EMAIL_VARIANTS + var, -1)
        if junk_p > 0:
            junk = rng.random(len(email)) < junk_p
            j = rng.choice(len(JUNK_EMAILS), size=len(email), p=JUNK_EMAIL_W / JUNK_EMAIL_W.sum())
            code = np.where(junk, self.n_emails * N_EMAIL_VARIANTS + j, code)
        return code

    def phone_code(self, phone: np.ndarray, junk: np.ndarray | None = None, clean: bool = False) -> np.ndarray:
        rng = self.rng
        if clean:  # systems (SMS gateways) store numbers internationally
            var = rng.choice(3, size=len(phone), p=[0.7, 0.2, 0.1])
        else:
            var = rng.choice(N_PHONE_VARIANTS, size=len(phone), p=PHONE_VARIANT_W)
        code = np.where(phone >= 0, phone * N_PHONE_VARIANTS + var, -1)
        if junk is not None:
            j = rng.choice(len(JUNK_PHONES), size=len(phone), p=JUNK_PHONE_W / JUNK_PHONE_W.sum())
            code = np.where(junk, self.n_phones * N_PHONE_VARIANTS + j, code)
        return code

    def pick_email(self, person: np.ndarray, primary_p: float = 0.8) -> np.ndarray:
        second = self.person_email[person, 1]
        use2 = (second >= 0) & (self.rng.random(len(person)) > primary_p)
        return np.where(use2, second, self.person_email[person, 0])

    def pick_device(self, person: np.ndarray) -> np.ndarray:
        return self.person_dev[person, _pick(self.rng, self.dev_w[person])]

    def pick_top(self, person: np.ndarray) -> np.ndarray:
        return _pick(self.rng, self.aff[person])

    def pick_leaf(self, top: np.ndarray) -> np.ndarray:
        return self.top_leaf_start[top] + _pick(self.rng, self.top_leaf_w[top])

    def pick_product(self, person: np.ndarray, leaf: np.ndarray, loyal_scale: float = 1.0) -> np.ndarray:
        rng = self.rng
        top = self.leaf_top[leaf]
        loyal = rng.random(len(leaf)) < self.loyalty[person] * loyal_scale
        brand = np.where(loyal, self.fav_brand[person, top], rng.integers(0, 1 << 30, len(leaf)) % self.top_brand_count[top])
        n = self.lb_count[leaf, brand]
        return self.lb_start[leaf, brand] + (rng.random(len(leaf)) * n).astype(np.int64)

    def pick_slot(self, person: np.ndarray, top: np.ndarray | None = None) -> np.ndarray:
        """A partner slot of each person (weighted to the main store), one that carries `top` when given."""
        w = self.slot_w[person]
        if top is not None:
            s = np.where(self.slots[person] >= 0, self.slots[person], 0)
            ok = self.carry[s, top[:, None]]
            w2 = w * ok
            w = np.where(w2.sum(axis=1, keepdims=True) > 0, w2, w)
        return _pick(self.rng, w)


def _email_variants(local: str, domain: str, tag: str, r: int) -> list[str]:
    """Seven ways one mailbox gets typed (index 0 is the clean one)."""
    gmail = domain == "gmail.com"
    cap = ".".join(x.capitalize() for x in local.split(".")) + "@" + domain.capitalize()
    if gmail:
        if "." in local:
            dots = local.replace(".", "")
        else:
            k = 1 + r % max(1, len(local) - 2)
            dots = local[:k] + "." + local[k:]
        v4 = f"{dots}@gmail.com"
        v5 = f"{local}@googlemail.com"
    else:
        v4 = f"{local.capitalize()}@{domain.upper()}"
        v5 = f"{local}+{tag}2@{domain}"
    return [f"{local}@{domain}", cap, f" {local}@{domain} ", f"{local}+{tag}@{domain}", v4, v5,
            f"{local}@{domain}".upper()]


def _phone_variants(cc: str, nsn: str, trunk: str, international_only: bool) -> list[str]:
    """Eight ways one number gets typed (index 0 is E.164)."""
    a, b, c = nsn[:3], nsn[3:6], nsn[6:]
    v = [f"+{cc}{nsn}", f"+{cc} {a} {b} {c}", f"00{cc}{nsn}", f"{trunk}{nsn}", f"{trunk}{a} {b} {c}",
         f"{trunk}{a}-{b}-{c}", f"({trunk}{a}) {b} {c}", f"+{cc} ({a}) {b}-{c}"]
    if international_only:
        v[3], v[4], v[5], v[6] = f"00{cc} {a} {b} {c}", f"+{cc}-{a}-{b}-{c}", f"+{cc}{nsn}", f"00 {cc} {nsn}"
    return v


# ---------------------------------------------------------------------------------------------------------------
# events


_INT_COLS = {"etype": -1, "person": -1, "partner": -1, "session": -1, "device": -1, "email": -1, "phone": -1,
             "customer": -1, "subscriber": -1, "token": -1, "product": -1, "leaf": -1, "qty": 0, "order": -1,
             "pay": -1, "traffic": -1}


class _Events:
    """Accumulates event blocks as integer-coded numpy columns; strings are made once at the end."""

    def __init__(self, world: _World):
        self.w = world
        self.blocks: list[dict[str, np.ndarray]] = []
        self.session_partner: list[np.ndarray] = []
        self.n_sessions = 0
        self.n_tokens = 0
        self.n_orders = 0

    def add(self, **cols: np.ndarray) -> None:
        n = len(cols["ts"])
        block = {"ts": np.asarray(cols["ts"], dtype=np.float64)}
        for name, default in _INT_COLS.items():
            v = cols.get(name)
            block[name] = np.full(n, default, dtype=np.int64) if v is None else np.broadcast_to(np.asarray(v, dtype=np.int64), (n,))
        block["price"] = np.asarray(cols["price"], dtype=np.float64) if "price" in cols else np.full(n, np.nan)
        self.blocks.append(block)

    def new_sessions(self, partner: np.ndarray) -> np.ndarray:
        ids = self.n_sessions + np.arange(len(partner))
        self.n_sessions += len(partner)
        self.session_partner.append(partner)
        return ids

    def web(self, *, person, slot, partner, device, start, n_views, leaf, focus=None, focus_p=0.0, cart_p=0.05,
            logged=None, login=None, login_email=None, traffic=None, first=PAGE_VIEW, token=None, space=False):
        """Web sessions: a first event (page_view or message_click), product views, some carts, a login.

        `slot` is the person's partner slot (-1 when the store is not one of theirs); logged-in sessions carry
        the customer id on every event. Returns (session ids, session end times).
        """
        w, rng = self.w, self.w.rng
        n = len(person)
        person = np.asarray(person)
        start = np.asarray(start, dtype=float).copy()
        n_ev = 1 + np.asarray(n_views)
        idx, pos = _explode(n_ev)
        gaps = np.where(pos == 0, 0.0, np.clip(rng.exponential(75.0, idx.size), 3.0, 900.0))
        c = np.cumsum(gaps)
        first_at = np.cumsum(n_ev) - n_ev
        off = c - c[first_at][idx]
        duration = off[first_at + n_ev - 1] + 120.0
        if space:  # different people on one device: >= 40 minutes between their sessions
            order = np.lexsort((start, device))
            last_dev, last_end = -1, -np.inf
            for i in order:
                if device[i] == last_dev and start[i] < last_end + 2400.0:
                    start[i] = last_end + 2400.0 + rng.random() * 3600.0
                last_dev, last_end = device[i], start[i] + duration[i]
        sess = self.new_sessions(partner)
        ts = start[idx] + off
        is_first = pos == 0
        first_arr = np.broadcast_to(np.asarray(first), (n,))
        etype = np.where(is_first, first_arr[idx], PRODUCT_VIEW)
        leaf_e = leaf[idx]
        p_e = person[idx]
        prod = w.pick_product(p_e, leaf_e)
        if focus is not None:
            fp = np.broadcast_to(np.asarray(focus_p, dtype=float), (n,))[idx]
            use = (focus[idx] >= 0) & ((rng.random(idx.size) < fp) | (pos == 1))
            prod = np.where(use, focus[idx], prod)
        prod = np.where(is_first, -1, prod)
        page_leaf = np.where(is_first & (etype == PAGE_VIEW) & (rng.random(idx.size) < 0.6), leaf_e, -1)
        part_e = partner[idx]
        price = np.where(prod >= 0, w.price[np.maximum(prod, 0), part_e], np.nan)
        if logged is None:
            logged = np.zeros(n, dtype=bool)
        cust = np.where(logged & (slot >= 0), w.cust_ids[person, np.maximum(slot, 0)], -1)
        cust = np.where(logged & (slot >= 0) & w.cust[person, np.maximum(slot, 0)], cust, -1)
        if traffic is None:
            traffic = rng.choice(len(TRAFFIC), size=n, p=WEB_TRAFFIC_W)
        tok = np.full(idx.size, -1) if token is None else np.where(is_first, token[idx], -1)
        dev_e = device[idx]
        common = dict(person=p_e, partner=part_e, session=sess[idx], device=dev_e, customer=cust[idx],
                      traffic=traffic[idx])
        self.add(ts=ts, etype=etype, product=prod, leaf=page_leaf, price=price, token=tok, **common)
        # carts (more likely on the focus product)
        cp = np.broadcast_to(np.asarray(cart_p, dtype=float), (n,))[idx]
        if focus is not None:
            cp = np.where(prod == focus[idx], cp * 2.0, cp)
        cart = (prod >= 0) & (rng.random(idx.size) < cp)
        k = np.flatnonzero(cart)
        self.add(ts=ts[k] + rng.uniform(8, 90, k.size), etype=ADD_TO_CART, product=prod[k], price=price[k],
                 qty=np.where(rng.random(k.size) < 0.9, 1, 2), **{a: b[k] for a, b in common.items()})
        # explicit logins (email + customer id) in logged-in sessions
        if login is not None:
            k = np.flatnonzero(login & (cust >= 0))
            em = w.pick_email(person[k]) if login_email is None else login_email[k]
            if login_email is None:  # a remembered account: customer id only
                em = np.where(rng.random(k.size) < 0.2, -1, em)
            self.add(ts=start[k] + rng.uniform(1, 15, k.size), etype=LOGIN, person=person[k], partner=partner[k],
                     session=sess[k], device=device[k], customer=cust[k], traffic=traffic[k], email=w.email_code(em))
        return sess, start + duration


def generate_events(persons: int, partners: int, days: int, seed: int) -> pa.Table:
    """The whole synthetic log as one table (sorted by partner, then time), columns exactly as SCHEMA."""
    if persons < 1 or partners < 1 or days < 1:
        raise ValueError("persons, partners and days must be >= 1")
    w = _World(persons, partners, days, seed)
    ev = _Events(w)
    _purchases(w, ev)
    _browsing(w, ev)
    _backbone_logins(w, ev)
    _subscriptions_and_campaigns(w, ev)
    _shared_devices(w, ev)
    return _assemble(w, ev)


# ---------------------------------------------------------------------------------------------------------------
# behaviour blocks


def _browsing(w: _World, ev: _Events) -> None:
    """Background browsing by affinity; life-event people start browsing their new category."""
    rng, P, days = w.rng, w.P, w.days
    n = rng.poisson(w.browse_rate * days)
    person, _ = _explode(n)
    start = _times(rng, len(person), 0, days)
    top = w.pick_top(person)
    explore = rng.random(len(person)) < 0.05  # a look at any carried category
    top = np.where(explore, rng.integers(0, len(TOPS), len(person)), top)
    # life events: after the day, a good share of browsing goes to the new category
    life = w.life_cat[person] >= 0
    after = life & (start >= w.life_day[person] * DAY) & (rng.random(len(person)) < 0.4)
    top = np.where(after, w.life_cat[person], top)
    # extra "getting ready" sessions: rising towards the first purchase in the new category
    lp = np.flatnonzero(w.life_cat >= 0)
    k = rng.poisson(7.0, len(lp))
    lpp, _ = _explode(k)
    who = lp[lpp]
    lead = np.where(w.life_buys[who], w.life_first[who] - w.life_day[who], 40.0)
    span = lead * rng.random(len(who)) ** 0.5
    extra_start = (w.life_day[who] + span) * DAY + _time_of_day(rng, len(who))
    getting_ready = np.r_[np.zeros(len(person), bool), np.ones(len(who), bool)]
    person = np.concatenate([person, who])
    start = np.concatenate([start, extra_start])
    top = np.concatenate([top, w.life_cat[who]])
    slot = w.pick_slot(person, top)
    partner = w.slots[person, slot]
    ok = partner >= 0
    carried = w.carry[np.maximum(partner, 0), top]
    top = np.where(carried, top, w.fav[person])
    person, start, top, slot, partner = person[ok], start[ok], top[ok], slot[ok], partner[ok]
    getting_ready = getting_ready[ok]
    leaf = w.pick_leaf(top)
    anon = w.anon[person]
    logged = ~anon & w.cust[person, slot] & (rng.random(len(person)) < 0.35)
    login = logged & (rng.random(len(person)) < 0.3)
    n_views = np.minimum(rng.geometric(0.4, len(person)), 12)
    ev.web(person=person, slot=slot, partner=partner, device=w.pick_device(person), start=start, n_views=n_views,
           leaf=leaf, cart_p=np.where(getting_ready, 0.12, 0.05), logged=logged, login=login)


def _backbone_logins(w: _World, ev: _Events) -> None:
    """Everyone identified logs in on each of their devices at least once (and with each email)."""
    rng = w.rng
    rows, cols = np.nonzero((w.person_dev >= 0) & ~w.anon[:, None])
    device = w.person_dev[rows, cols]
    email = w.person_email[rows, 0]
    second = np.flatnonzero(w.person_email[:, 1] >= 0)
    rows = np.concatenate([rows, second])
    device = np.concatenate([device, w.person_dev[second, 0]])
    email = np.concatenate([email, w.person_email[second, 1]])
    slot = np.where(rng.random(len(rows)) < 0.6, 0, w.pick_slot(rows))
    slot = np.where(w.cust[rows, slot], slot, 0)
    n = len(rows)
    ev.web(person=rows, slot=slot, partner=w.slots[rows, slot], device=device, start=_times(rng, n, 0, w.days),
           n_views=rng.integers(0, 3, n), leaf=w.pick_leaf(w.pick_top(rows)), logged=np.ones(n, bool),
           login=np.ones(n, bool), login_email=email)


def _purchases(w: _World, ev: _Events) -> None:
    """Orders with their intent bursts (views, carts rising before), price comparisons and life events."""
    rng, P, days = w.rng, w.P, w.days
    buyers = np.flatnonzero(w.buyer)
    cad = w.cadence[buyers]
    M = int(np.ceil(days / 10.0 * 1.6)) + 3
    gaps = rng.gamma(3.0, 1.0, size=(len(buyers), M)) * (cad / 3.0)[:, None]
    t = -rng.random(len(buyers))[:, None] * cad[:, None] + np.cumsum(gaps, axis=1)
    keep = (t >= -21) & (t < days + 0)  # orders after the window still show their intent before its end
    rr, cc = np.nonzero(keep)
    person = buyers[rr]
    tday = t[rr, cc]
    # category of each order
    top = w.pick_top(person)
    lov = w.lover[person] & (rng.random(len(person)) < 0.85)
    top = np.where(lov, w.fav[person], top)
    life = w.life_buys[person] & (tday > w.life_first[person]) & (rng.random(len(person)) < 0.25)
    top = np.where(life, w.life_cat[person], top)
    # the first order in a life-event category, 1-5 weeks after the event (75% of them)
    lp = np.flatnonzero(w.life_buys)
    person = np.concatenate([person, lp])
    tday = np.concatenate([tday, w.life_first[lp]])
    top = np.concatenate([top, w.life_cat[lp]])
    keep = (tday >= -21) & (tday < days + 30)
    person, tday, top = person[keep], tday[keep], top[keep]
    n = len(person)
    leaf = w.pick_leaf(top)
    product = w.pick_product(person, leaf, loyal_scale=1.2)
    t_buy = np.floor(tday) * DAY + _time_of_day(rng, n)

    # where: a store of theirs that carries the category; hunters (and a few others) compare 2-3 stores
    slots_p = w.slots[person]
    s0 = np.where(slots_p >= 0, slots_p, 0)
    ok = w.carry[s0, top[:, None]] & (slots_p >= 0)
    n_ok = ok.sum(axis=1)
    compare = (n_ok >= 2) & (rng.random(n) < np.where(w.hunter[person], 0.9, 0.04))
    n_cmp = np.where(compare, np.minimum(n_ok, 2 + (rng.random(n) < 0.4)), 0)
    # random order of the eligible slots; the first n_cmp are compared
    keys = np.where(ok, rng.random((n, MAX_SLOTS)) + w.slot_w[person] * 0.5, -1.0)
    order = np.argsort(-keys, axis=1, kind="stable")
    cmp_slots = np.where(np.arange(MAX_SLOTS)[None, :] < n_cmp[:, None], order, -1)
    cmp_partner = np.where(cmp_slots >= 0, w.slots[person[:, None], np.maximum(cmp_slots, 0)], -1)
    cmp_price = np.where(cmp_slots >= 0, w.price[product[:, None], np.maximum(cmp_partner, 0)], np.inf)
    cheapest = cmp_slots[np.arange(n), cmp_price.argmin(axis=1)]
    other = cmp_slots[np.arange(n), (rng.random(n) * np.maximum(n_cmp, 1)).astype(int)]
    buy_slot_cmp = np.where(rng.random(n) < 0.85, cheapest, other)
    buy_slot = np.where(compare, buy_slot_cmp, w.pick_slot(person, top))
    buy_partner = w.slots[person, buy_slot]

    # intent burst: 1-4 sessions in the 3 weeks before, denser and with more carts near the order
    n_pre = np.minimum(1 + rng.poisson(0.8 * w.intent[person]), 4)
    n_pre = np.maximum(n_pre, n_cmp)
    o, k = _explode(n_pre)
    delta = 24.0 * rng.random(len(o)) ** 2 * DAY + 600.0
    cmp_k = k < n_cmp[o]
    delta = np.where(cmp_k, rng.uniform(0.02, 4.0, len(o)) * DAY + 600.0, delta)
    pre_slot = np.where(cmp_k, cmp_slots[o, np.minimum(k, MAX_SLOTS - 1)],
                        np.where(rng.random(len(o)) < 0.6, buy_slot[o], w.pick_slot(person[o], top[o])))
    pre_partner = w.slots[person[o], pre_slot]
    pre_start = t_buy[o] - delta
    pp = person[o]
    near = 1.0 - np.minimum(delta / (24 * DAY), 1.0)
    logged = w.cust[pp, pre_slot] & (rng.random(len(o)) < 0.3)
    ev.web(person=pp, slot=pre_slot, partner=pre_partner, device=w.pick_device(pp), start=pre_start,
           n_views=1 + rng.poisson(0.4 + 1.6 * near), leaf=leaf[o], focus=product[o], focus_p=0.3 + 0.4 * near,
           cart_p=0.03 + 0.15 * near, logged=logged, login=logged & (rng.random(len(o)) < 0.3))

    # the order session: views, a cart, the order lines (with the identifiers typed at checkout)
    logged = w.cust[person, buy_slot] & (rng.random(n) < 0.6)
    login = logged & (rng.random(n) < 0.4)
    device = w.pick_device(person)
    sess, end = ev.web(person=person, slot=buy_slot, partner=buy_partner, device=device, start=t_buy,
                       n_views=1 + (rng.random(n) < 0.4), leaf=leaf, focus=product, focus_p=1.0, cart_p=0.05,
                       logged=logged, login=login)
    ev.add(ts=end - 100.0, etype=ADD_TO_CART, person=person, partner=buy_partner, session=sess, device=device,
           product=product, price=w.price[product, buy_partner], qty=1,
           customer=np.where(logged, w.cust_ids[person, buy_slot], -1))
    n_lines = 1 + np.minimum(rng.poisson(0.45, n), 4)
    o, k = _explode(n_lines)
    line_prod = np.where(k == 0, product[o], w.pick_product(person[o], w.pick_leaf(top[o])))
    qty = np.where(k == 0, 1, rng.choice([1, 1, 1, 2, 3], size=len(o)))
    order_ids = ev.n_orders + np.arange(n)
    ev.n_orders += n
    cust = np.where(logged, w.cust_ids[person, buy_slot], -1)
    email = np.where(~logged | (rng.random(n) < 0.5), w.pick_email(person, 0.85), -1)
    email = np.where(rng.random(n) < 0.04, -1, email)  # a phone-only checkout
    email_c = w.email_code(email, junk_p=0.0)
    junk_e = rng.random(n) < 0.015
    j = rng.choice(len(JUNK_EMAILS), size=n, p=JUNK_EMAIL_W / JUNK_EMAIL_W.sum())
    email_c = np.where(junk_e, w.n_emails * N_EMAIL_VARIANTS + j, email_c)
    ph = w.person_phone[person, np.where(rng.random(n) < 0.85, 0, 1)]
    ph = np.where(ph >= 0, ph, w.person_phone[person, 0])
    phone = np.where((~logged | (rng.random(n) < 0.3)) & (rng.random(n) < 0.65), ph, -1)
    junk_p = rng.random(n) < 0.01
    phone_c = w.phone_code(phone, junk=junk_p)
    # the valid-looking junk number is a Bulgarian habit; elsewhere people type zeros
    fake = w.n_phones * N_PHONE_VARIANTS + JUNK_PHONES.index("0888888888")
    phone_c = np.where((phone_c == fake) & (w.country[person] != 0), w.n_phones * N_PHONE_VARIANTS, phone_c)
    pay = np.where(rng.random(n) < 0.8, w.pay_pref[person], rng.choice(len(PAYMENTS), size=n, p=PAYMENT_W))
    ev.add(ts=end[o] - 60.0 + k * 0.5, etype=PURCHASE, person=person[o], partner=buy_partner[o], session=sess[o],
           device=device[o], product=line_prod, price=w.price[line_prod, buy_partner[o]], qty=qty,
           order=order_ids[o], customer=cust[o], email=email_c[o], phone=phone_c[o], pay=pay[o])


def _subscriptions_and_campaigns(w: _World, ev: _Events) -> None:
    """Subscribe events, campaign sends, clicks (likelier for engaged people) and forwarded clicks."""
    rng, days, K = w.rng, w.days, w.K
    rows, cols = np.nonzero(w.sub)
    partner = w.slots[rows, cols]
    chan = w.sub_channel[rows, cols]
    email = w.person_email[rows, 0]
    phone = w.person_phone[rows, 0]
    sub_id = w.sub_ids[rows, cols]
    # subscribing: early in the window for most (on a device of theirs)
    t_sub = _times(rng, len(rows), -10, days * 0.7 * rng.random(len(rows)) ** 2)
    t_sub = np.maximum(t_sub, rng.uniform(0, 3 * DAY, len(rows)))
    device = w.pick_device(rows)
    sess, _ = ev.web(person=rows, slot=cols, partner=partner, device=device, start=t_sub,
                     n_views=rng.integers(0, 3, len(rows)), leaf=w.pick_leaf(w.pick_top(rows)))
    ev.add(ts=t_sub + rng.uniform(20, 200, len(rows)), etype=SUBSCRIBE, person=rows, partner=partner, session=sess,
           device=device, subscriber=sub_id, email=np.where(chan == 0, w.email_code(email), -1),
           phone=np.where(chan > 0, w.phone_code(phone), -1), traffic=0)

    # campaigns: each partner sends about weekly, each to about half of its subscribers
    n_camp = np.maximum(1, rng.poisson(days / 8.0, K))
    camp_partner, _ = _explode(n_camp)
    camp_t = np.floor(rng.random(len(camp_partner)) * days) * DAY + rng.uniform(9, 12, len(camp_partner)) * 3600
    camp_start = np.concatenate([[0], np.cumsum(n_camp)])
    # (subscriber, campaign of their partner) pairs
    sub_n = n_camp[partner]
    s, k = _explode(sub_n)
    camp = camp_start[partner[s]] + k
    send_t = camp_t[camp] + rng.uniform(0, 1800, len(s))
    take = (rng.random(len(s)) < 0.28) & (send_t > t_sub[s] + 3600)
    s, send_t = s[take], send_t[take]
    n = len(s)
    tokens = ev.n_tokens + np.arange(n)
    ev.n_tokens += n
    p = rows[s]
    ev.add(ts=send_t, etype=MESSAGE_SENT, person=p, partner=partner[s], subscriber=sub_id[s], token=tokens,
           email=np.where(chan[s] == 0, w.email_code(email[s]), -1),
           phone=np.where(chan[s] > 0, w.phone_code(phone[s], clean=True), -1))
    # clicks: own device (engaged people click more), forwarded to another person's device sometimes
    chan_f = np.array([1.0, 0.7, 1.3])[chan[s]]
    fwd = rng.random(n) < 0.006
    own = np.where(fwd, rng.random(n) < 0.7, rng.random(n) < w.engagement[p] * chan_f)
    households = {}
    for a, b in w.households:
        households[a], households[b] = b, a
    ident = np.flatnonzero(~w.anon)
    other = ident[rng.integers(0, len(ident), n)]
    hh = np.array([households.get(int(x), -1) for x in p[fwd]], dtype=np.int64) if fwd.any() else np.zeros(0, int)
    fwd_to = other.copy()
    fwd_to[np.flatnonzero(fwd)] = np.where(hh >= 0, hh, other[fwd])
    fwd &= fwd_to != p
    clicks = []
    for mask, who in ((own, p), (fwd, fwd_to)):
        i = np.flatnonzero(mask)
        clicks.append((i, who[i]))
    ci = np.concatenate([c[0] for c in clicks])
    cp = np.concatenate([c[1] for c in clicks])
    m = len(ci)
    click_t = send_t[ci] + np.clip(rng.exponential(3 * 3600.0, m), 30, 3 * DAY)
    part = partner[s][ci]
    # the clicking person's slot at this partner, if they use it (forwardees often do not)
    match = w.slots[cp] == part[:, None]
    slot = np.where(match.any(axis=1), match.argmax(axis=1), -1)
    logged = (slot >= 0) & w.cust[cp, np.maximum(slot, 0)] & (rng.random(m) < 0.3)
    top = w.pick_top(cp)
    any_carried = np.argmax(w.carry[part] * rng.random((m, len(TOPS))), axis=1)
    top = np.where(w.carry[part, top], top, any_carried)
    ev.web(person=cp, slot=slot, partner=part, device=w.pick_device(cp), start=click_t,
           n_views=rng.integers(0, 5, m), leaf=w.pick_leaf(top), logged=logged, first=MESSAGE_CLICK,
           token=tokens[ci], traffic=CHANNEL_TRAFFIC[chan[s][ci]])


def _shared_devices(w: _World, ev: _Events) -> None:
    """Public devices (mostly anonymous, sometimes a login) and family tablets (always logged in)."""
    rng, days = w.rng, w.days
    # public devices: people of the device's city, ~0.6 sessions a day per device
    n = rng.poisson(0.6 * days, w.n_public)
    d, _ = _explode(n)
    city = w.public_city[d]
    by_city = np.argsort(w.city, kind="stable")
    city_sorted = w.city[by_city]
    lo = np.searchsorted(city_sorted, city, side="left")
    hi = np.searchsorted(city_sorted, city, side="right")
    person = by_city[lo + (rng.random(len(d)) * (hi - lo)).astype(np.int64)]
    slot = w.pick_slot(person)
    logged = ~w.anon[person] & w.cust[person, slot] & (rng.random(len(d)) < 0.22)
    ev.web(person=person, slot=slot, partner=w.slots[person, slot], device=w.public_dev[d],
           start=_times(rng, len(d), 0, days), n_views=rng.integers(1, 7, len(d)),
           leaf=w.pick_leaf(w.pick_top(person)), logged=logged, login=logged, space=True)
    # family tablets: both members, always logged in to their own account at their common store
    if len(w.households):
        n = rng.poisson(0.08 * days, len(w.households))
        h, _ = _explode(n)
        person = w.households[h, (rng.random(len(h)) < 0.5).astype(int)]
        k = w.slots[w.households[h, 0], 0]
        slot = (w.slots[person] == k[:, None]).argmax(axis=1)
        ev.web(person=person, slot=slot, partner=k, device=w.family_dev[h], start=_times(rng, len(h), 0, days),
               n_views=rng.integers(1, 6, len(h)), leaf=w.pick_leaf(w.pick_top(person)),
               logged=np.ones(len(h), bool), login=rng.random(len(h)) < 0.3, space=True)


# ---------------------------------------------------------------------------------------------------------------
# assembly


def _assemble(w: _World, ev: _Events) -> pa.Table:
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

    partner_ids = _strings(w.partner_ids)
    # event ids: per partner running number
    first = np.searchsorted(partner, partner, side="left")
    seq = np.arange(n) - first
    event_id = pc.binary_join_element_wise(_take(partner_ids, partner), pc.cast(pa.array(seq + 1), pa.string()), "-")

    session_partner = np.concatenate(ev.session_partner) if ev.session_partner else np.zeros(0, int)
    session_strings = _strings(_hex_ids(rng, ev.n_sessions, 16))
    sess = cols["session"]
    sends = w.sends_session[partner] & (sess >= 0)
    session_code = np.where(sends, sess, -1)
    del session_partner

    token_strings = _strings(_hex_ids(rng, max(ev.n_tokens, 1), 10))
    order_strings = _strings(np.char.add("O", _hex_ids(rng, max(ev.n_orders, 1), 6)))

    product = cols["product"]
    has_prod = product >= 0
    leaf = np.where(has_prod, w.prod_leaf[np.maximum(product, 0)], cols["leaf"])
    brand = np.where(has_prod, w.prod_brand[np.maximum(product, 0)], -1)
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
        "device_id": _take(_strings(w.dev_ids), device),
        "email": _take(_strings(w.email_strings), cols["email"]),
        "phone": _take(_strings(w.phone_strings), cols["phone"]),
        "customer_id": numbers(cols["customer"]),
        "subscriber_id": numbers(cols["subscriber"]),
        "click_token": _take(token_strings, cols["token"]),
        "product_id": _take(_strings(w.prod_ids), product),
        "category": _take(_strings(w.leaf_names), leaf),
        "brand": _take(_strings(w.brand_names), brand),
        "price": pa.array(price, mask=np.isnan(price), type=pa.float64()),
        "quantity": pa.array(qty, mask=qty <= 0, type=pa.int64()),
        "order_id": _take(order_strings, cols["order"]),
        "currency": _take(_strings(["EUR"]), np.where(np.isnan(price), -1, 0)),
        "country": _take(_strings(COUNTRY_CODES), w.country[person]),
        "city": _take(_strings(w.city_names), w.city[person]),
        "payment_method": _take(_strings(PAYMENTS), cols["pay"]),
        "device_type": _take(_strings(DEVICE_TYPES), np.where(device >= 0, w.dev_type[np.maximum(device, 0)], -1)),
        "traffic_source": _take(_strings(TRAFFIC), cols["traffic"]),
        "true_person_id": true_ids,
    }
    return pa.Table.from_arrays([arrays[f.name] for f in SCHEMA], schema=SCHEMA)


# ---------------------------------------------------------------------------------------------------------------
# the command


def run_generate(config, out: str, persons: int = 2000, partners: int = 8, days: int = 180, seed: int = 7) -> dict:
    """Generate and write `OUT/events-<partner_id>-<chunk:04d>.parquet` (about 50k rows a file)."""
    from jobs import io

    io.check_bucket(out, config.storage)  # a missing bucket is a one-line user error, before the work
    started = time.perf_counter()
    table = generate_events(persons, partners, days, seed)
    generated = time.perf_counter() - started
    fs, base = io.filesystem_for(out, config.storage)
    fs.create_dir(base, recursive=True)
    partner = table.column("partner_id").to_numpy(zero_copy_only=False)
    bounds = np.flatnonzero(np.r_[True, partner[1:] != partner[:-1], True])
    files = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        pid = str(partner[lo])
        n_chunks = max(1, int(np.ceil((hi - lo) / ROWS_PER_FILE)))
        edges = np.linspace(lo, hi, n_chunks + 1).astype(np.int64)
        for c, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            name = f"events-{pid}-{c:04d}.parquet"
            pq.write_table(table.slice(a, b - a), io.join(base, name), filesystem=fs)
            files.append(io.join(out, name))
    seconds = time.perf_counter() - started
    log.info("generated %d events of %d people at %d partners over %d days in %.1fs (%.1fs generating), %d files",
             table.num_rows, persons, partners, days, seconds, generated, len(files))
    return {"rows": table.num_rows, "files": len(files), "persons": persons, "partners": partners, "days": days,
            "seed": seed, "path": out, "seconds": round(seconds, 2)}
