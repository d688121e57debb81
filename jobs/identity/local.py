"""The whole resolve stage in one process: the fastest single-process implementation of the same rules and
outputs, the baseline Ray must be measured against (`scripts/bench_resolve.py`, `scripts/bench_pipeline.py`).

pyarrow reads every input file (`read_events_local`: the stage's own normaliser, so the same rows are
quarantined for the same reasons), the row rules and identity rules run as the vectorised partition steps
of `jobs.identity.steps` on whole tables (`LocalExecutor`: one partition, scipy's connected components in one
pass; identifiers dictionary-encoded and hashed once, plain emails normalised by Arrow kernels, other emails
once per distinct string, phones parsed once per number as the library reads it: digits and region),
and pyarrow writes the five tables the resolve stage publishes, with the stage's schemas.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any

import pyarrow.parquet as pq

from jobs.config import JobConfig
from jobs.contract import plan_input, read_events_local
from jobs.contract.reading import extra_columns_of, plausible_ts_range
from jobs.contract.rows import quarantine_schema, to_quarantine
from jobs.identity.junk import AUDIT_SCHEMA
from jobs.identity.personas import IDENTITY_MAP_SCHEMA, PERSONA_SCHEMA
from jobs.identity.rounds import resolve_local
from jobs.identity.steps import resolved_schema

OUTPUTS = ("quarantine", "events_resolved", "identity_map", "identity_audit", "personas")


def resolve_files(
    paths: str, config: JobConfig, out: str | None = None, run_date: dt.date | None = None
) -> dict[str, Any]:
    """Resolve the event files at `paths` (a file, folder or glob, as `events:`) in this process.

    Returns the five output tables (in the published schemas), the identity figures and `seconds` per step
    (read, resolve, write). With `out`, each table is also written as `out/NAME/part-0.parquet` (local).
    `run_date` (default: `config.run_date`, else today, UTC) bounds the plausible timestamps as in the stage.
    """
    clock = time.perf_counter()
    seconds: dict[str, float] = {}
    run_date = run_date or config.run_date or dt.datetime.now(dt.timezone.utc).date()
    plan = plan_input(paths, config.storage)
    events = read_events_local(plan, config.storage, plausible_ts_range(config.input.plausible_ts_from, run_date))
    extra = extra_columns_of(events.column_names)
    seconds["read"], clock = time.perf_counter() - clock, time.perf_counter()
    result = resolve_local(events, config.identity)
    del events
    tables = {
        "quarantine": to_quarantine(result["quarantine"], extra).cast(quarantine_schema(extra)),
        "events_resolved": result["events_resolved"].cast(resolved_schema(extra)),
        "identity_map": result["identity_map"].cast(IDENTITY_MAP_SCHEMA),
        "identity_audit": result["identity_audit"].cast(AUDIT_SCHEMA),
        "personas": result["personas"].cast(PERSONA_SCHEMA),
    }
    seconds["resolve"], clock = time.perf_counter() - clock, time.perf_counter()
    if out is not None:
        for name, table in tables.items():
            os.makedirs(os.path.join(out, name), exist_ok=True)
            pq.write_table(table, os.path.join(out, name, "part-0.parquet"))
        seconds["write"] = time.perf_counter() - clock
    return {**tables, "figures": result["figures"], "seconds": {k: round(v, 2) for k, v in seconds.items()}}
