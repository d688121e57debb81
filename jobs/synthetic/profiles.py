"""Generator profiles: the shape of log a run is given, from the rich cross-partner default to a bare retail log.

    cross-partner    every event type, K partners, devices, emails, phones, campaigns (`generate_events`)
    purchases-only   what a single retailer's order history looks like: one partner, purchase rows only,
                     identified by customer_id alone (no device, email, phone, session, subscriber, click,
                     traffic or device type), and customers that arrive over the whole span in cohorts and
                     lapse: each customer's purchases fall between an acquisition date and a lapse date

The purchases-only log is the default world's purchases at one partner (the same people, cadences, category
habits and price behaviour), thinned to each customer's active span: acquisition is uniform over the first
`ACQUIRED_WITHIN` of the span (so most of the history holds several cohorts), and the active life after it
is exponential with a mean of `MEAN_ACTIVE_SHARE` of the span, so every cohort declines (a customer who
lapsed never comes back), as buy-till-you-die models assume. Guest purchases (no customer record) are not in
such a log and are dropped.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.synthetic.assembly import generate_events
from jobs.synthetic.reference import START_US

Profile = Literal["cross-partner", "purchases-only"]
PROFILES: tuple[str, ...] = ("cross-partner", "purchases-only")

ACQUIRED_WITHIN = 0.75  # acquisitions spread over the first three quarters of the span
MEAN_ACTIVE_SHARE = 0.5  # mean active life after acquisition, as a share of the span
# the purchases-only log keeps these columns; every other column is null
KEPT_COLUMNS = (
    "event_id",
    "ts",
    "partner_id",
    "event_type",
    "customer_id",
    "product_id",
    "category",
    "brand",
    "price",
    "quantity",
    "order_id",
    "currency",
    "country",
    "true_person_id",
)
_DAY_US = 86_400 * 1_000_000


def generate_profile(profile: Profile, persons: int, partners: int, days: int, seed: int) -> pa.Table:
    """The log of a profile, columns exactly as `jobs.synthetic.SCHEMA` (purchases-only: one partner)."""
    if profile == "cross-partner":
        return generate_events(persons, partners, days, seed)
    if profile == "purchases-only":
        return purchases_only(generate_events(persons, 1, days, seed), days, seed)
    raise ValueError(f"unknown generator profile {profile!r}: one of {', '.join(PROFILES)}")


def purchases_only(table: pa.Table, days: int, seed: int) -> pa.Table:
    """A one-partner log reduced to identified purchase rows within each customer's active span."""
    purchases = table.filter(
        pc.and_(pc.equal(table.column("event_type"), "purchase"), pc.is_valid(table.column("customer_id")))
    )
    people, person = np.unique(purchases.column("true_person_id").to_numpy(zero_copy_only=False), return_inverse=True)
    # one draw per person, in the order of the sorted person ids: the same seed gives the same spans
    rng = np.random.default_rng([seed, 0x5EED])
    acquired = rng.random(len(people)) * ACQUIRED_WITHIN * days
    active = rng.exponential(MEAN_ACTIVE_SHARE * days, len(people))
    age = (purchases.column("ts").cast(pa.int64()).to_numpy() - START_US) / _DAY_US
    keep = (age >= acquired[person]) & (age <= acquired[person] + active[person])
    kept = purchases.filter(pa.array(keep))
    return pa.table(
        [kept.column(f.name) if f.name in KEPT_COLUMNS else pa.nulls(kept.num_rows, f.type) for f in kept.schema],
        schema=kept.schema,
    )
