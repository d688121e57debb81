"""The features stage: every snapshot the run plan lists, as ONE `features/` table.

    features/_SUCCESS                        marker: rows, partitions, and `categories` (slot order),
                                             `snapshots` (ISO dates), `features` (catalogue columns)
    features/<write id>/as_of=YYYY-MM-DD/    one partition per snapshot: persona_id, as_of (date32), the
                                             catalogue's columns (`features.catalog.feature_schema`)

events_resolved is read once and shuffled by persona once; every cut-off is computed from those partitions
(`features.distributed`). A snapshot with no persona is written as an empty partition, except the scoring
cut-off `as_of`, which must have personas to score.
"""

from __future__ import annotations

import logging

from features.catalog import catalog, feature_schema
from features.distributed import features_distributed
from features.inputs import INPUT_COLUMNS
from jobs.config import FeaturesView
from jobs.errors import UserError
from jobs.run.plan import RunPlan
from jobs.storage import TableIn, TableOut

log = logging.getLogger(__name__)


def run(view: FeaturesView, plan: RunPlan, events_resolved: TableIn, features: TableOut) -> dict:
    config = view.features
    snapshots = plan.snapshots
    events = events_resolved.blocks(columns=INPUT_COLUMNS)  # a task per file
    tables = features_distributed(events, snapshots, plan.categories, config, view.num_partitions)
    extra = {
        "categories": list(plan.categories),
        "snapshots": [d.isoformat() for d in snapshots],
        "features": len(catalog(config)),
    }
    personas: dict[str, int] = {}
    with features.writing(extra) as writer:
        for as_of, blocks in zip(snapshots, tables):
            rows = writer.write_blocks(blocks, partition={"as_of": as_of})  # the rows stay on the workers
            if rows == 0 and as_of == plan.as_of:
                raise UserError(
                    f"no persona has events before the cut-off {as_of.isoformat()} in {events_resolved.path}: "
                    "set a later features.as_of."
                )
            if rows == 0:  # an empty snapshot is still a snapshot: readers find its partition, with no rows
                log.warning("features: no persona has events before %s (a snapshot of the plan)", as_of)
                writer.write_arrow(feature_schema(config).empty_table(), partition={"as_of": as_of})
            personas[as_of.isoformat()] = rows
    log.info("features: %s features; personas per snapshot %s", extra["features"], personas)
    return {
        "rows_in": events_resolved.marker.get("rows"),
        "rows_out": sum(personas.values()),
        "personas": personas,
        **extra,
    }
