"""The feature table of some personas as of a cut-off: the catalogue turned into one partition's computation.

    compute_partition   every catalogue feature for the personas of one partition (all rows of each), given
                        the global facts it needs: the plan's categories, the category median prices and the
                        partition's forwarded-click links as of that cut-off
    compute_snapshots   the same partition at every cut-off of the run plan, one table per cut-off
    compute_local       the single-process baseline: global facts and features of one in-memory table

The distributed path (`features.distributed`) runs `compute_snapshots` on hash partitions by persona, with
the global facts merged from every partition first, so a partition's result does not depend on the others
and the two paths give the same table. Only `ts < as_of` rows with a persona are ever looked at.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pyarrow as pa

from features.catalog import catalog
from features.inputs import select_events
from features.partition import Partition
from features.prices import median_prices, price_offers
from features.social import links_as_of, social_links, social_tokens
from features.stats import STATS
from jobs.config import FeaturesConfig


def compute_partition(
    events: pa.Table,
    as_of: dt.date,
    config: FeaturesConfig,
    categories: Sequence[str],
    medians: pa.Table | None = None,
    social: pa.Table | None = None,
) -> pa.Table:
    """Every catalogue feature for the personas in `events` (all rows of each; `ts < as_of` only).

    `categories` are the run plan's feature categories (slot order), `medians` the category median prices
    as of `as_of` (`features.prices`), `social` the forwarded-click links of these personas as of `as_of`
    (`features.social`). One row per persona with an event before `as_of`, sorted by persona_id.
    """
    part = Partition(events, as_of, config, categories, medians, social)
    features = catalog(config)
    missing = sorted({f.stat for f in features} - STATS.keys())
    if missing:
        raise ValueError(f"the catalogue names statistics that do not exist: {missing}")
    return part.to_table({f.name: STATS[f.stat](part, f) for f in features})


def compute_snapshots(
    events: pa.Table,
    snapshots: Sequence[dt.date],
    config: FeaturesConfig,
    categories: Sequence[str],
    medians: Sequence[pa.Table],
    links: pa.Table,
) -> tuple[pa.Table, ...]:
    """`compute_partition` at every cut-off: `medians[j]` and the `links` tagged `snapshots[j]` (`snapshot_links`)
    belong to `snapshots[j]`. The rows are read once; each cut-off selects its own."""
    return tuple(
        compute_partition(events, as_of, config, categories, at, links_as_of(links, as_of))
        for as_of, at in zip(snapshots, medians)
    )


def compute_local(events: pa.Table, as_of: dt.date, config: FeaturesConfig, categories: Sequence[str]) -> pa.Table:
    """The single-process baseline: the same functions as the distributed path, over one in-memory table."""
    events = select_events(events, as_of)
    medians = median_prices([price_offers(events)], as_of)
    social = social_links(social_tokens(events, as_of))
    return compute_partition(events, as_of, config, categories, medians, social)
