"""The labels stage: every segment's labels at every cut-off the run plan gives it, as ONE `labels/` table.

    labels/_SUCCESS                         marker: rows, partitions, and `cutoffs`: {YYYY-MM-DD: [SEGMENT ...]},
                                            the segments that have a label column at each cut-off
    labels/<write id>/as_of=YYYY-MM-DD/     persona_id, as_of (date32), label__SEGMENT (int64 0/1) for each
                                            segment listed for that cut-off; only personas positive in at
                                            least one of them (absent = 0). A cut-off without any positive
                                            is an empty partition.

A segment's cut-offs are its train_as_of, eval_as_of and refit_as_of (`RunPlan.cutoffs`). events_resolved is
read once and shuffled by persona once for all of them (`jobs.segments.distributed`).
"""

from __future__ import annotations

import datetime as dt
import logging

from jobs.config import LabelsView, SegmentConfig
from jobs.errors import UserError
from jobs.run.plan import RunPlan
from jobs.segments.definitions import EVENT_COLUMNS, check_segment, labels_schema
from jobs.segments.distributed import labels_distributed
from jobs.storage import TableIn, TableOut

log = logging.getLogger(__name__)


def cutoff_segments(segments: list[SegmentConfig], plan: RunPlan) -> dict[dt.date, list[SegmentConfig]]:
    """The segments whose labels each cut-off needs, in config order."""
    needed: dict[dt.date, list[SegmentConfig]] = {}
    for segment in segments:
        cut = plan.for_segment(segment.name)
        for as_of in sorted({cut.train_as_of, cut.eval_as_of, cut.refit_as_of}):
            needed.setdefault(as_of, []).append(segment)
    return dict(sorted(needed.items()))


def run(view: LabelsView, plan: RunPlan, events_resolved: TableIn, labels: TableOut) -> dict:
    for segment in view.segments:
        try:
            check_segment(segment)
        except ValueError as exc:
            raise UserError(f"{exc} (config `segments`)") from None
    needed = cutoff_segments(view.segments, plan)
    events = events_resolved.blocks(columns=list(EVENT_COLUMNS))  # a task per file
    tables = labels_distributed(events, needed, view.num_partitions)
    extra = {"cutoffs": {as_of.isoformat(): [s.name for s in segments] for as_of, segments in needed.items()}}
    positives: dict[str, int] = {}
    with labels.writing(extra) as writer:
        for as_of, blocks in tables.items():
            rows = writer.write_blocks(blocks, partition={"as_of": as_of})  # the rows stay on the workers
            if rows == 0:  # readers still find the cut-off's partition, with its columns and no rows
                writer.write_arrow(
                    labels_schema([s.name for s in needed[as_of]]).empty_table(), partition={"as_of": as_of}
                )
            positives[as_of.isoformat()] = rows
    log.info("labels: personas with a positive per cut-off %s", positives)
    return {"rows_in": events_resolved.marker.get("rows"), "rows_out": sum(positives.values()), "positives": positives}
