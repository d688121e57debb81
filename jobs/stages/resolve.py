"""The resolve stage: event files -> quarantine, events_resolved, identity_map, identity_audit, personas.

Input files are checked, read by Ray tasks and hash-partitioned by (partner_id, event_id); the row rules
quarantine what breaks the contract (the quarantine is published before the share limit is checked, so a
failed run still shows its rows); identity resolution runs as Ray tasks (`jobs.identity.rounds` over
`RayExecutor`). The driver holds only object references and small figures. Rows in = resolved + quarantined.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psutil
import pyarrow as pa

from jobs.config import ResolveView
from jobs.contract.reading import plan_input, plausible_ts_range, read_events
from jobs.contract.rows import (
    check_quarantine_share,
    merge_counts,
    quarantine_examples,
    quarantine_schema,
    reason_counts,
    to_quarantine,
)
from jobs.identity import steps
from jobs.identity.distributed import RayExecutor
from jobs.identity.junk import AUDIT_SCHEMA, blocklists
from jobs.identity.personas import IDENTITY_MAP_SCHEMA, PERSONA_SCHEMA
from jobs.identity.rounds import attach_personas, check_rows, count_rows, resolve_identity
from jobs.run.stage import InputEvents, RunIdentity
from jobs.storage import TableOut

log = logging.getLogger(__name__)


def run(
    view: ResolveView,
    run_identity: RunIdentity,
    events: InputEvents,
    quarantine: TableOut,
    events_resolved: TableOut,
    identity_map: TableOut,
    identity_audit: TableOut,
    personas: TableOut,
) -> dict[str, Any]:
    clock = _Clock()
    plan = plan_input(events.path, events.storage)
    if plan.empty_files:
        log.warning(
            "%d input files are empty (0 bytes) and hold no events: %s", len(plan.empty_files), plan.empty_files[:5]
        )
    ex = RayExecutor(view.num_partitions, view.components_one_task_edges)
    ts_range = plausible_ts_range(view.input.plausible_ts_from, run_identity.run_date)
    read = read_events(plan, events.storage, ts_range, ["partner_id", "event_id"], view.num_partitions)
    parts, rows_in, extra_columns = read.partitions, read.rows, read.extra_columns
    clock.mark("read")
    rows = check_rows(ex, parts, blocklists(view.identity))
    del parts
    rows_quarantined = sum(rows.reasons.values())
    if rows.rows_kept + rows_quarantined != rows_in:
        raise AssertionError(f"rows in {rows_in} != kept {rows.rows_kept} + quarantined {rows_quarantined}")
    (quarantined,) = ex.map(to_quarantine, [(b, extra_columns) for b in rows.quarantined], [None])
    _publish(quarantine, quarantined, rows_quarantined, quarantine_schema(extra_columns))
    log.info("read %d rows: %d valid, %d quarantined %s", rows_in, rows.rows_kept, rows_quarantined, rows.reasons)
    examples = _first_examples(ex, rows.quarantined) if rows_quarantined else {}
    share = check_quarantine_share(
        rows_in, rows.reasons, view.input.max_quarantine_share, events.path, quarantine.path, examples, ts_range
    )
    clock.mark("validate+quarantine")
    identity = resolve_identity(ex, rows.slim, view.identity)
    resolved = attach_personas(ex, rows.kept, identity.event_personas)
    clock.mark("identity+attach")
    _publish(events_resolved, resolved.parts, resolved.rows, steps.resolved_schema(extra_columns))
    _publish(identity_map, identity.identity_map, identity.figures["identifiers_linked"], IDENTITY_MAP_SCHEMA)
    audited = count_rows(ex, identity.audit)
    _publish(identity_audit, identity.audit, audited, AUDIT_SCHEMA)
    _publish(personas, identity.personas, identity.figures["personas"], PERSONA_SCHEMA)
    if resolved.rows + rows_quarantined != rows_in:
        raise AssertionError(f"rows in {rows_in} != resolved {resolved.rows} + quarantined {rows_quarantined}")
    (rule_counts,) = ex.map(reason_counts, [(a, "rule") for a in identity.audit], [None])
    clock.mark("write")
    return {
        "rows_in": rows_in,
        "rows_out": resolved.rows,
        "quarantined": rows_quarantined,
        "reasons": rows.reasons,
        "quarantined_share": round(share, 6),
        "rows_with_persona": resolved.rows_with_persona,
        "identifiers_audited": audited,
        "audited_by_rule": merge_counts(ex.get(rule_counts)),
        "files": len(plan.files),
        "empty_files": plan.empty_files,
        "partitions": view.num_partitions,
        **identity.figures,
        "stage_seconds": clock.seconds,
        "driver_rss_mb_after": clock.rss_mb,
    }


def _first_examples(ex: RayExecutor, quarantined: list) -> dict[str, str]:
    """Where each reason was first seen (file and line), for the share limit's message."""
    (found,) = ex.map(quarantine_examples, [(b,) for b in quarantined], [None])
    examples: dict[str, str] = {}
    for part in ex.get(found):
        for reason, where in part.items():
            examples.setdefault(reason, where)
    return examples


def _publish(table: TableOut, parts: list, rows: int, schema: pa.Schema) -> None:
    """Publish partitions held by Ray, a file each; an empty table still gets a (schema-only) file readers can
    open."""
    with table.writing() as writer:
        if rows == 0:
            writer.write_arrow(schema.empty_table())
        else:
            writer.write_blocks(parts)


class _Clock:
    """Seconds and the driver's memory after each step: the summary shows where time went and that the
    driver stays flat."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.rss_mb: dict[str, float] = {}

    def mark(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._last, 2)
        self.rss_mb[step] = round(psutil.Process().memory_info().rss / 2**20, 1)
        self._last = now
