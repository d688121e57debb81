"""The world one seed builds (catalogue, stores, people, identifiers) and people's everyday choices in it."""

from __future__ import annotations

import numpy as np

from jobs.synthetic.catalogue import build_catalogue, build_stores
from jobs.synthetic.identifiers import issue_identifiers
from jobs.synthetic.people import build_people
from jobs.synthetic.sampling import pick


class World:
    """Everything drawn from one random sequence, in a fixed order: the same seed gives the same world."""

    def __init__(self, persons: int, partners: int, days: int, seed: int):
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, 0x5E6E]))
        self.days = int(days)
        self.catalogue = build_catalogue(self.rng)
        self.stores = build_stores(self.rng, self.catalogue, int(partners))
        self.people = build_people(self.rng, int(persons), self.days, self.catalogue, self.stores)
        self.ids = issue_identifiers(self.rng, self.people)

    def pick_email(self, person: np.ndarray, primary_p: float = 0.8) -> np.ndarray:
        """One of each person's mailboxes (the first with probability `primary_p`)."""
        second = self.ids.person_email[person, 1]
        use2 = (second >= 0) & (self.rng.random(len(person)) > primary_p)
        return np.where(use2, second, self.ids.person_email[person, 0])

    def pick_device(self, person: np.ndarray) -> np.ndarray:
        return self.ids.person_dev[person, pick(self.rng, self.ids.dev_w[person])]

    def pick_top(self, person: np.ndarray) -> np.ndarray:
        """A top category by each person's affinities."""
        return pick(self.rng, self.people.aff[person])

    def pick_leaf(self, top: np.ndarray) -> np.ndarray:
        return self.catalogue.top_leaf_start[top] + pick(self.rng, self.catalogue.top_leaf_w[top])

    def pick_product(self, person: np.ndarray, leaf: np.ndarray, loyal_scale: float = 1.0) -> np.ndarray:
        """A product of the leaf: of the person's favourite brand when loyal, else of any brand of the leaf."""
        rng, catalogue = self.rng, self.catalogue
        top = catalogue.leaf_top[leaf]
        loyal = rng.random(len(leaf)) < self.people.loyalty[person] * loyal_scale
        any_brand = rng.integers(0, 1 << 30, len(leaf)) % catalogue.top_brand_count[top]
        brand = np.where(loyal, self.people.fav_brand[person, top], any_brand)
        n = catalogue.lb_count[leaf, brand]
        return catalogue.lb_start[leaf, brand] + (rng.random(len(leaf)) * n).astype(np.int64)

    def pick_slot(self, person: np.ndarray, top: np.ndarray | None = None) -> np.ndarray:
        """A partner slot of each person (weighted to the main store), one that carries `top` when given."""
        slots = self.people.slots[person]
        w = self.people.slot_w[person]
        if top is not None:
            ok = self.stores.carry[np.where(slots >= 0, slots, 0), top[:, None]]
            w2 = w * ok
            w = np.where(w2.sum(axis=1, keepdims=True) > 0, w2, w)
        return pick(self.rng, w)
