"""Labels on Ray: every segment at every cut-off from one read and one shuffle of the resolved events.

    events_resolved ──map: rows in the union of all label windows, label columns only──▶
    hash partitions by persona_id (`jobs.raykit.shuffle`) ──one task per partition: `wide_labels` at each
    cut-off──▶ the blocks of each cut-off's table (persona_id, as_of, label__SEGMENT ...)

Every row of a persona lands in one partition, so each task decides that persona's labels alone; the driver
holds object references only, and the largest object on a worker is one partition.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import pyarrow as pa
import ray

from jobs.config import SegmentConfig
from jobs.raykit.shuffle import map_exchange
from jobs.segments.definitions import check_segment, labels_schema, scan_window, select_window, wide_labels


def _labels_at_cutoffs(
    events: pa.Table, cutoffs: Sequence[tuple[dt.date, Sequence[SegmentConfig]]]
) -> tuple[pa.Table, ...] | pa.Table:
    tables = tuple(wide_labels(events, segments, as_of) for as_of, segments in cutoffs)
    return tables if len(tables) > 1 else tables[0]


def labels_distributed(
    events: Sequence[ray.ObjectRef], cutoffs: Mapping[dt.date, Sequence[SegmentConfig]], num_partitions: int
) -> dict[dt.date, list[ray.ObjectRef]]:
    """The labels table at each cut-off (`labels_schema` of the segments listed for it), its blocks in the object
    store, of the resolved events in the blocks `events`.

    `cutoffs` maps a cut-off date to the segments whose labels are needed there. One wave of tasks keeps the
    rows any of them can depend on and splits them by persona (`map_exchange`); a task per partition labels
    every cut-off.
    """
    plan = sorted((as_of, list(segments)) for as_of, segments in cutoffs.items() if segments)
    for _, segments in plan:
        for segment in segments:
            check_segment(segment)
    if not plan:
        return {}
    if not events:
        return {as_of: [ray.put(labels_schema([s.name for s in segments]).empty_table())] for as_of, segments in plan}
    start, end, types = scan_window(
        list({s.name: s for _, segments in plan for s in segments}.values()), [as_of for as_of, _ in plan]
    )
    (partitions,) = map_exchange(
        select_window, [(block, start, end, types) for block in events], [["persona_id"]], num_partitions
    )
    task = ray.remote(num_returns=len(plan))(_labels_at_cutoffs)
    outputs = [task.remote(part, plan) for part in partitions]
    if len(plan) == 1:
        outputs = [[ref] for ref in outputs]
    return {as_of: [out[i] for out in outputs] for i, (as_of, _) in enumerate(plan)}
