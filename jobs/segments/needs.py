"""What a segment kind needs from the data, and a plain sentence when the data lacks it. Pure.

A segment that cannot train says so in its own words ("0 positives at the training cut-off"); on a log that
lacks a whole kind of behaviour (a single retailer's purchase history: no views, no carts, one partner) that
figure does not say why. `data_facts` counts, over a feature snapshot, the personas who show each behaviour
(per-block partials, summed by the caller); `unmet_need` turns a kind's needs and those counts into one line,
e.g. "no product views before the cut-off: price_hunters needs views of one product at 2+ partners".
The rules follow the definitions (`jobs.segments.definitions`), not the data: a need is unmet only when no
persona at all shows the behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.config import SegmentConfig
from jobs.segments.definitions import label_event_types

# behaviour -> (feature column, least value that shows it)
BEHAVIOURS: dict[str, tuple[str, int]] = {
    "buyers": ("orders_lifetime", 1),
    "viewers": ("product_views_365d", 1),
    "carters": ("carts_365d", 1),
    "multi_partner": ("partners_visited_365d", 2),
}
FACT_COLUMNS = sorted({column for column, _ in BEHAVIOURS.values()})
# the behaviour that shows an event type (types without one are never called missing)
SHOWN_BY = {"purchase": "buyers", "product_view": "viewers", "add_to_cart": "carters"}


def data_facts(batch: pa.Table) -> pa.Table:
    """Map side: one row, the personas of the block showing each behaviour (a missing column counts none)."""
    row = {"personas": [batch.num_rows]}
    for name, (column, least) in BEHAVIOURS.items():
        if column in batch.column_names:
            values = pc.fill_null(batch.column(column), 0).to_numpy(zero_copy_only=False)
            row[name] = [int(np.sum(values >= least))]
        else:
            row[name] = [0]
    return pa.table(row)


def unmet_need(segment: SegmentConfig, facts: Mapping[str, int]) -> str | None:
    """Why the data cannot have positives for this segment, in one line; None when nothing is missing."""
    kind = segment.kind
    if not facts.get("personas"):
        return "no personas in the feature snapshot"
    if kind == "price_hunters":
        needs = f"{kind} needs views of one product at {segment.min_partners}+ partners"
        if not facts.get("viewers"):
            return f"no product views before the cut-off: {needs}"
        if not facts.get("multi_partner"):
            return f"every persona is seen at one partner only: {needs}"
    if kind == "high_interest":
        types = label_event_types(segment)
        if not any(facts.get(SHOWN_BY[t], 0) if t in SHOWN_BY else True for t in types):
            return f"no {' or '.join(types)} events before the cut-off: {kind} labels need them"
        return None
    if not facts.get("buyers"):
        return f"no purchases before the cut-off: {kind} needs buyers"
    return None
