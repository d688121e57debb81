"""The event log being built: integer-coded numpy blocks (strings are made once, at assembly), and web
sessions, the unit most behaviours are made of.

No session has an inner gap of 30 minutes, and sessions of different people on one shared device are >= 40
minutes apart, so cutting per partner + device at 30 minutes never mixes people.
"""

from __future__ import annotations

import numpy as np

from jobs.contract.schema import TRAFFIC_SOURCES
from jobs.synthetic.reference import ADD_TO_CART, LOGIN, PAGE_VIEW, PRODUCT_VIEW, WEB_TRAFFIC_W
from jobs.synthetic.sampling import explode
from jobs.synthetic.world import World

# every integer column of a block and its "none" value
INT_COLUMNS = {
    "etype": -1,
    "person": -1,
    "partner": -1,
    "session": -1,
    "device": -1,
    "email": -1,
    "phone": -1,
    "customer": -1,
    "subscriber": -1,
    "token": -1,
    "product": -1,
    "leaf": -1,
    "qty": 0,
    "order": -1,
    "pay": -1,
    "traffic": -1,
}


class EventLog:
    """Accumulates event blocks as integer-coded numpy columns; strings are made once at the end."""

    def __init__(self, world: World):
        self.w = world
        self.blocks: list[dict[str, np.ndarray]] = []
        self.n_sessions = 0
        self.n_tokens = 0
        self.n_orders = 0

    def add(self, **cols: np.ndarray) -> None:
        n = len(cols["ts"])
        block = {"ts": np.asarray(cols["ts"], dtype=np.float64)}
        for name, default in INT_COLUMNS.items():
            v = cols.get(name)
            block[name] = (
                np.full(n, default, dtype=np.int64)
                if v is None
                else np.broadcast_to(np.asarray(v, dtype=np.int64), (n,))
            )
        block["price"] = np.asarray(cols["price"], dtype=np.float64) if "price" in cols else np.full(n, np.nan)
        self.blocks.append(block)

    def new_sessions(self, partner: np.ndarray) -> np.ndarray:
        """Ids for one new session at each of `partner`."""
        ids = self.n_sessions + np.arange(len(partner))
        self.n_sessions += len(partner)
        return ids

    def web(
        self,
        *,
        person,
        slot,
        partner,
        device,
        start,
        n_views,
        leaf,
        focus=None,
        focus_p=0.0,
        cart_p=0.05,
        logged=None,
        login=None,
        login_email=None,
        traffic=None,
        first=PAGE_VIEW,
        token=None,
        space=False,
    ):
        """Web sessions: a first event (page_view or message_click), product views, some carts, a login.

        `slot` is the person's partner slot (-1 when the store is not one of theirs); logged-in sessions carry
        the customer id on every event. Returns (session ids, session end times).
        """
        w, rng = self.w, self.w.rng
        n = len(person)
        person = np.asarray(person)
        start = np.asarray(start, dtype=float).copy()
        n_ev = 1 + np.asarray(n_views)
        idx, pos = explode(n_ev)
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
        price = np.where(prod >= 0, w.stores.price[np.maximum(prod, 0), part_e], np.nan)
        if logged is None:
            logged = np.zeros(n, dtype=bool)
        cust = np.where(logged & (slot >= 0), w.ids.cust_ids[person, np.maximum(slot, 0)], -1)
        cust = np.where(logged & (slot >= 0) & w.ids.cust[person, np.maximum(slot, 0)], cust, -1)
        if traffic is None:
            traffic = rng.choice(len(TRAFFIC_SOURCES), size=n, p=WEB_TRAFFIC_W)
        tok = np.full(idx.size, -1) if token is None else np.where(is_first, token[idx], -1)
        dev_e = device[idx]
        common = dict(
            person=p_e, partner=part_e, session=sess[idx], device=dev_e, customer=cust[idx], traffic=traffic[idx]
        )
        self.add(ts=ts, etype=etype, product=prod, leaf=page_leaf, price=price, token=tok, **common)
        # carts (more likely on the focus product)
        cp = np.broadcast_to(np.asarray(cart_p, dtype=float), (n,))[idx]
        if focus is not None:
            cp = np.where(prod == focus[idx], cp * 2.0, cp)
        cart = (prod >= 0) & (rng.random(idx.size) < cp)
        k = np.flatnonzero(cart)
        self.add(
            ts=ts[k] + rng.uniform(8, 90, k.size),
            etype=ADD_TO_CART,
            product=prod[k],
            price=price[k],
            qty=np.where(rng.random(k.size) < 0.9, 1, 2),
            **{a: b[k] for a, b in common.items()},
        )
        # explicit logins (email + customer id) in logged-in sessions
        if login is not None:
            k = np.flatnonzero(login & (cust >= 0))
            em = w.pick_email(person[k]) if login_email is None else login_email[k]
            if login_email is None:  # a remembered account: customer id only
                em = np.where(rng.random(k.size) < 0.2, -1, em)
            self.add(
                ts=start[k] + rng.uniform(1, 15, k.size),
                etype=LOGIN,
                person=person[k],
                partner=partner[k],
                session=sess[k],
                device=device[k],
                customer=cust[k],
                traffic=traffic[k],
                email=w.ids.email_code(em),
            )
        return sess, start + duration
