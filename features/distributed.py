"""Every snapshot of the run plan on Ray: one read, one shuffle by persona, every cut-off per partition.

    events (blocks) --select_events(latest cut-off) + hash split(persona_id)--------------+--> price_offers
                                                                                         |     --> median_prices
                                                                                         |         at every cut-off
    social_tokens --hash(partner_id, click_token)--> snapshot_links --hash(persona_id)---+      (one small task)
                                                                                         |
                                          partition i + its links + the medians ---------+--> compute_snapshots
                                                                                               --> one table per
                                                                                                   cut-off

The arithmetic is in pure functions (`features.compute`, `.prices`, `.social`); this module only moves
their inputs and outputs between Ray tasks. The driver holds object references; the largest object on a
worker is one partition (all snapshots' rows of its personas), whose size `num_partitions` sets.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence

import pyarrow as pa
import ray

from features.compute import compute_snapshots
from features.inputs import INPUT_SCHEMA, select_events
from features.prices import median_prices, price_offers
from features.social import TOKEN_KEYS, snapshot_links, social_tokens
from jobs.config import FeaturesConfig
from jobs.raykit.shuffle import hash_partition, map_exchange, map_partitions


@functools.cache
def _task(fn: Callable, num_returns: int = 1):
    return ray.remote(num_returns=num_returns)(fn)


def _medians_at(snapshots: Sequence[dt.date], *offers: pa.Table) -> list[pa.Table]:
    return [median_prices(offers, as_of) for as_of in snapshots]


def _snapshots_task(*args) -> pa.Table | tuple[pa.Table, ...]:
    tables = compute_snapshots(*args)
    return tables[0] if len(tables) == 1 else tables  # a task with one return value returns it bare


def features_distributed(
    events: Sequence[ray.ObjectRef],
    snapshots: Sequence[dt.date],
    categories: Sequence[str],
    config: FeaturesConfig,
    num_partitions: int,
) -> list[list[ray.ObjectRef]]:
    """The feature table as of each of `snapshots` (its blocks in the object store, one list per cut-off, in
    that order) of the events_resolved rows in the blocks `events` (extra columns are dropped), with the plan's
    `categories`.

    The events are selected (for the latest cut-off) and shuffled in one wave of tasks; every earlier cut-off
    is computed from the same partitions. The partitions' tasks start at once; the lists hold their results.
    """
    snapshots = list(snapshots)
    if not snapshots:
        return []
    n = num_partitions
    latest = max(snapshots)
    calls = [(block, latest) for block in events] or [(ray.put(INPUT_SCHEMA.empty_table()), latest)]
    (parts,) = map_exchange(select_events, calls, [["persona_id"]], n)

    medians = _task(_medians_at).remote(snapshots, *map_partitions(price_offers, parts))

    tokens = map_partitions(social_tokens, parts, latest)
    links = map_partitions(snapshot_links, hash_partition(tokens, TOKEN_KEYS, n), snapshots)
    social = hash_partition(links, ["persona_id"], n)  # same key and hash as `parts`: partition i meets i

    compute = _task(_snapshots_task, len(snapshots))
    per_partition = []
    for i in range(n):
        refs = compute.remote(parts[i], snapshots, config, list(categories), medians, social[i])
        per_partition.append(refs if isinstance(refs, list) else [refs])
    return [[refs[j] for refs in per_partition] for j in range(len(snapshots))]
