"""Labels on Ray: every segment at every cut-off from one read and one shuffle of the resolved events.

    events_resolved ──map: rows in the union of all label windows, label columns only──▶
    hash partitions by persona_id (`jobs.raykit.shuffle`) ──one task per partition: `wide_labels` at each
    cut-off──▶ one Ray Dataset per cut-off (persona_id, as_of, label__SEGMENT ...)

Every row of a persona lands in one partition, so each task decides that persona's labels alone; the driver
holds object references only, and the largest object on a worker is one partition.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import pyarrow as pa
import ray
import ray.data

from jobs.config import SegmentConfig
from jobs.raykit.shuffle import hash_partition
from jobs.segments.definitions import check_segment, labels_schema, scan_window, select_window, wide_labels


def _labels_at_cutoffs(
    events: pa.Table, cutoffs: Sequence[tuple[dt.date, Sequence[SegmentConfig]]]
) -> tuple[pa.Table, ...] | pa.Table:
    tables = tuple(wide_labels(events, segments, as_of) for as_of, segments in cutoffs)
    return tables if len(tables) > 1 else tables[0]


def labels_distributed(
    events_ds: ray.data.Dataset, cutoffs: Mapping[dt.date, Sequence[SegmentConfig]], num_partitions: int
) -> dict[dt.date, ray.data.Dataset]:
    """The labels table at each cut-off (`labels_schema` of the segments listed for it) as a Ray Dataset.

    `cutoffs` maps a cut-off date to the segments whose labels are needed there. One pass over
    `events_ds`: the map keeps the rows any of them can depend on, one shuffle groups them by persona.
    """
    plan = sorted((as_of, list(segments)) for as_of, segments in cutoffs.items() if segments)
    for _, segments in plan:
        for segment in segments:
            check_segment(segment)
    if not plan:
        return {}
    start, end, types = scan_window(
        list({s.name: s for _, segments in plan for s in segments}.values()), [as_of for as_of, _ in plan]
    )
    selected = events_ds.map_batches(
        select_window,
        batch_format="pyarrow",
        zero_copy_batch=True,
        fn_kwargs={"start": start, "end": end, "event_types": types},
    )
    blocks = selected.to_arrow_refs()
    if not blocks:
        return {
            as_of: ray.data.from_arrow(labels_schema([s.name for s in segments]).empty_table())
            for as_of, segments in plan
        }
    partitions = hash_partition(blocks, ["persona_id"], num_partitions)
    task = ray.remote(num_returns=len(plan))(_labels_at_cutoffs)
    outputs = [task.remote(part, plan) for part in partitions]
    if len(plan) == 1:
        outputs = [[ref] for ref in outputs]
    return {as_of: ray.data.from_arrow_refs([out[i] for out in outputs]) for i, (as_of, _) in enumerate(plan)}
