"""The people behind the events and their persistent traits: what look-alike segments can learn.

Per person: a country and a city; anonymous (~4%: one device, never identified) or not; a purchase cadence
class (none 28% / rare / occasional / regular / frequent, gamma-spaced orders), category lovers (~15% of
buyers), price hunters (15%), a campaign engagement level (higher for frequent buyers), brand loyalty, a
preferred payment method; 1-5 partner stores by popularity; Dirichlet category affinities with ~35% of
categories never touched; and for 20% of those who never touch home / toys / sports, a life event that
opens that category at some day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jobs.contract.schema import PAYMENT_METHODS
from jobs.synthetic.catalogue import Catalogue, Stores
from jobs.synthetic.reference import (
    COUNTRIES,
    COUNTRY_CODES,
    LIFE_EVENT_TOPS,
    LIFE_EVENT_W,
    MAX_SLOTS,
    PAYMENT_W,
    TOPS,
)
from jobs.synthetic.sampling import pick

# main store first: how a person's visits spread over their partner slots
SLOT_WEIGHTS = np.array([0.45, 0.25, 0.15, 0.1, 0.05])


@dataclass
class People:
    country: np.ndarray  # person -> index in COUNTRY_CODES
    city: np.ndarray  # person -> index in city_names
    city_names: list[str]
    anon: np.ndarray
    hunter: np.ndarray
    cadence: np.ndarray  # mean days between orders (inf: never buys)
    buyer: np.ndarray
    lover: np.ndarray
    engagement: np.ndarray  # campaign click propensity
    browse_rate: np.ndarray  # browsing sessions a day
    loyalty: np.ndarray  # share of picks from the favourite brand
    fav_brand: np.ndarray  # (person, top) -> brand within top
    pay_pref: np.ndarray
    intent: np.ndarray  # how many sessions lead up to an order
    slots: np.ndarray  # (person, slot) -> partner, -1 for none
    n_slots: np.ndarray
    slot_w: np.ndarray  # (person, slot) -> visit weight
    aff: np.ndarray  # (person, top) -> category affinity
    fav: np.ndarray  # person -> favourite top category
    life_cat: np.ndarray  # person -> the category a life event opens (-1: none)
    life_day: np.ndarray
    life_first: np.ndarray  # the day of the first purchase in it
    life_buys: np.ndarray


def build_people(rng: np.random.Generator, persons: int, days: int, catalogue: Catalogue, stores: Stores) -> People:
    P, K, n_top = persons, len(stores.partner_ids), len(TOPS)
    cw = np.array([COUNTRIES[c][0] for c in COUNTRY_CODES])
    country = rng.choice(len(COUNTRY_CODES), size=P, p=cw / cw.sum())
    city_names, city_start = [], []
    city = np.zeros(P, dtype=np.int64)
    for ci, code in enumerate(COUNTRY_CODES):
        cities = COUNTRIES[code][3]
        city_start.append(len(city_names))
        city_names += [c for c, _ in cities]
        who = np.flatnonzero(country == ci)
        w = np.array([x for _, x in cities], dtype=float)
        city[who] = city_start[ci] + rng.choice(len(cities), size=len(who), p=w / w.sum())

    anon = rng.random(P) < 0.04  # browse anonymously on one device, never identified
    hunter = (rng.random(P) < 0.15) & ~anon
    # purchase cadence class: none, rare, occasional, regular, frequent (mean days between orders)
    klass = rng.choice(5, size=P, p=[0.28, 0.27, 0.25, 0.14, 0.06])
    klass[anon] = 0
    cadence = np.array([np.inf, 240.0, 120.0, 60.0, 28.0])[klass] * rng.lognormal(0, 0.2, P)
    buyer = klass > 0
    lover = buyer & (klass >= 2) & (rng.random(P) < 0.25)
    cadence[lover] = np.minimum(cadence[lover], 32.0)
    engagement = np.clip(rng.beta(0.8, 4.0, P) * (1.0 + 15.0 / np.where(buyer, cadence, 200.0)), 0, 0.9)
    browse_rate = rng.lognormal(np.log(0.010), 0.6, P) * (1.0 + 12.0 / np.where(buyer, cadence, 60.0))
    loyalty = rng.beta(2.0, 2.0, P)
    fav_brand = rng.integers(0, 1 << 30, size=(P, n_top)) % catalogue.top_brand_count[None, :]
    pay_pref = rng.choice(len(PAYMENT_METHODS), size=P, p=PAYMENT_W)
    intent = rng.lognormal(0, 0.4, P)

    # partner slots: 1-5 distinct partners by popularity (Gumbel top-k), hunters use one more
    n_slots = rng.choice(5, size=P, p=[0.3, 0.3, 0.2, 0.12, 0.08]) + 1 + hunter
    n_slots = np.where(hunter, np.maximum(n_slots, 3), n_slots)  # hunters know several stores
    n_slots = np.minimum(n_slots, min(MAX_SLOTS, K))
    slots = np.full((P, MAX_SLOTS), -1, dtype=np.int64)
    logw = np.log(stores.popularity)
    for lo in range(0, P, 50_000):
        hi = min(P, lo + 50_000)
        keys = logw[None, :] - np.log(-np.log(rng.random((hi - lo, K))))
        top = np.argsort(-keys, axis=1, kind="stable")[:, :MAX_SLOTS]
        slots[lo:hi, : top.shape[1]] = top
    slots[np.arange(MAX_SLOTS)[None, :] >= n_slots[:, None]] = -1
    slot_w = np.where(slots >= 0, SLOT_WEIGHTS[None, :], 0.0)

    # category affinity: Dirichlet, some categories never touched, only what the person's stores carry
    aff = rng.dirichlet(np.full(n_top, 0.6), size=P)
    fav = aff.argmax(axis=1)
    aff[(rng.random((P, n_top)) < 0.35) & (np.arange(n_top)[None, :] != fav[:, None])] = 0.0
    carried = (stores.carry[np.where(slots >= 0, slots, 0)] & (slots >= 0)[:, :, None]).any(axis=1)
    aff = np.where(carried, aff, 0.0)
    empty = aff.sum(axis=1) <= 0
    aff[empty] = carried[empty] * rng.random((int(empty.sum()), n_top))
    aff /= aff.sum(axis=1, keepdims=True)
    fav = aff.argmax(axis=1)
    lov = np.flatnonzero(lover)
    aff[lov] *= 0.15
    aff[lov, fav[lov]] += 0.85
    # life event: a never-touched category (home / toys / sports) opens at some day
    life_cat = np.full(P, -1)
    life_day = np.full(P, np.inf)
    cand = (aff[:, LIFE_EVENT_TOPS] == 0) & carried[:, LIFE_EVENT_TOPS]
    has = cand.any(axis=1) & ~anon & (rng.random(P) < 0.2)
    who = np.flatnonzero(has)
    life_cat[who] = LIFE_EVENT_TOPS[pick(rng, cand[who] * LIFE_EVENT_W[None, :])]
    life_day[who] = rng.uniform(-20, days, size=len(who))
    # most make a first purchase in it 2-8 weeks later, after weeks of browsing it
    life_first = life_day + rng.uniform(14, 56, size=P)
    life_buys = (life_cat >= 0) & (rng.random(P) < 0.75)
    return People(
        country=country,
        city=city,
        city_names=city_names,
        anon=anon,
        hunter=hunter,
        cadence=cadence,
        buyer=buyer,
        lover=lover,
        engagement=engagement,
        browse_rate=browse_rate,
        loyalty=loyalty,
        fav_brand=fav_brand,
        pay_pref=pay_pref,
        intent=intent,
        slots=slots,
        n_slots=n_slots,
        slot_w=slot_w,
        aff=aff,
        fav=fav,
        life_cat=life_cat,
        life_day=life_day,
        life_first=life_first,
        life_buys=life_buys,
    )
