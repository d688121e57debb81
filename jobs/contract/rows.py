"""Row rules of the input contract: valid or not, duplicates, the quarantine's shape, reasons counted.

A canonical batch (`jobs.contract.reading.normalise_batch`) carries `_reason` (null for a valid row).
Duplicates of `(partner_id, event_id)` are found by `dedupe` on a table that holds every row of its keys (a
hash partition on that key). Quarantined rows keep every column they came with, plus `ts_raw`, `reason` and
`source_file`, so a user can find and fix them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.arrays import whole
from jobs.contract.reading import fill_ts_text
from jobs.contract.schema import LINE, RAW, REASON, SOURCE, TS_RAW, canonical_schema
from jobs.errors import UserError
from jobs.raykit.shuffle import hash_columns

# internal column -> its name in the quarantine table
_QUARANTINE_NAMES = {TS_RAW: "ts_raw", REASON: "reason", SOURCE: "source_file", LINE: "line", RAW: "raw"}


def split_invalid(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(valid rows, rows with a reason)."""
    bad = pc.is_valid(table.column(REASON))
    if not pc.any(bad).as_py():  # the usual batch: no copy of its columns
        return table, table.slice(0, 0)
    return table.filter(pc.invert(bad)), table.filter(bad)


def dedupe(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(kept, quarantined) for rows whose (partner_id, event_id) all live in this table.

    The row kept is the first by (ts, source file, content hash): deterministic whatever the block order.
    Rows already carrying a reason are passed to the quarantine side untouched; the other copies of a
    duplicate get `duplicate_event_id` (and their raw ts text, `fill_ts_text`).
    """
    valid, invalid = split_invalid(table)
    if valid.num_rows == 0:
        return valid, invalid
    key = hash_columns(valid, ["partner_id", "event_id"])
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    repeated = np.flatnonzero(counts[inverse] > 1)
    if len(repeated) == 0:
        return valid, invalid
    # Only the rows of a repeated key are ordered: the content hash of every row would cost most of the step.
    copies = fill_ts_text(valid.take(pa.array(repeated)))
    content = hash_columns(copies, [c for c in copies.column_names if c not in (REASON, LINE, RAW)])
    ts = copies.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
    src = copies.column(SOURCE).fill_null("").to_numpy(zero_copy_only=False).astype(str)
    src_rank = np.unique(src, return_inverse=True)[1]
    repeated_key = key[repeated]
    order = np.lexsort((content, src_rank, ts, repeated_key))
    sorted_key = repeated_key[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    later = np.sort(order[~first])
    drop = np.zeros(valid.num_rows, dtype=bool)
    drop[repeated[later]] = True
    dups = copies.take(pa.array(later))
    dups = dups.set_column(
        dups.schema.get_field_index(REASON), REASON, pa.array(["duplicate_event_id"] * dups.num_rows, pa.string())
    )
    return valid.filter(pa.array(~drop)), pa.concat_tables([invalid, dups])


def quarantine_schema(extra_columns: list[str]) -> pa.Schema:
    """The quarantine table: contract + extra columns, then ts_raw, reason, source_file, line, raw."""
    canonical = canonical_schema(extra_columns)
    fields = [f for f in canonical if f.name not in _QUARANTINE_NAMES]
    internal = [canonical.field(c).with_name(_QUARANTINE_NAMES[c]) for c in (TS_RAW, REASON, SOURCE, LINE, RAW)]
    return pa.schema(fields + internal)


def to_quarantine(rows: pa.Table, extra_columns: list[str]) -> pa.Table:
    """Quarantined rows (canonical batch shape) in the quarantine table's shape."""
    schema = quarantine_schema(extra_columns)
    internal_of = {public: internal for internal, public in _QUARANTINE_NAMES.items()}
    columns = []
    for f in schema:
        source = internal_of.get(f.name, f.name)
        columns.append(rows.column(source) if source in rows.column_names else pa.nulls(rows.num_rows, f.type))
    return pa.table(columns, schema=schema)


def reason_counts(rows: pa.Table, column: str = REASON) -> dict[str, int]:
    """Rows per reason (or per value of another reason column, such as identity_audit's `rule`)."""
    if rows.num_rows == 0:
        return {}
    counts = pc.value_counts(whole(rows.column(column)))
    return {v["values"].as_py(): v["counts"].as_py() for v in counts}


def quarantine_examples(rows: pa.Table) -> dict[str, str]:
    """The first row of each reason as `FILE line N` (or `FILE` for Parquet): where a user looks first."""
    if rows.num_rows == 0:
        return {}
    first = (
        rows.select([REASON, SOURCE, LINE])
        .group_by(REASON, use_threads=False)
        .aggregate([(SOURCE, "first"), (LINE, "min")])
    )
    out = {}
    for row in first.to_pylist():
        where = row[f"{SOURCE}_first"] or "?"
        out[row[REASON]] = where if row[f"{LINE}_min"] is None else f"{where} line {row[f'{LINE}_min']}"
    return out


def merge_counts(parts: Iterable[dict[str, int]]) -> dict[str, int]:
    """The sum of per-partition counts, sorted by key."""
    total: dict[str, int] = {}
    for part in parts:
        for key, n in part.items():
            total[key] = total.get(key, 0) + n
    return dict(sorted(total.items()))


def check_quarantine_share(
    rows_in: int,
    reasons: dict[str, int],
    max_share: float,
    source: str,
    quarantine_table: str,
    examples: dict[str, str] | None = None,
    ts_range: tuple[dt.datetime, dt.datetime] | None = None,
) -> float:
    """The quarantined share of the input; a UserError when there are no rows or the share passes the limit.

    The message counts every reason, the first place each was seen (`examples`, from `quarantine_examples`)
    and, for `bad_type:FIELD`, the field; with `ts_range` (the plausible times) an `implausible_ts` count says
    the range and what sets it: one paragraph, no row content.
    """
    if rows_in == 0:
        raise UserError(f"input {source} holds no rows.")
    quarantined = sum(reasons.values())
    share = quarantined / rows_in
    if share > max_share:
        examples = examples or {}
        by_reason = ", ".join(
            f"{k}: {v}" + (f" (first: {examples[k]})" if k in examples else "")
            for k, v in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        plausible = (
            f" A plausible time lies from {ts_range[0]:%Y-%m-%d} to {ts_range[1]:%Y-%m-%d %H:%M:%S} UTC "
            "(input.plausible_ts_from, and the run date + 1 day: set --run-date for a log that runs past today)."
            if ts_range and "implausible_ts" in reasons
            else ""
        )
        raise UserError(
            f"{quarantined} of {rows_in} input rows ({share:.2%}) broke the input contract, more than "
            f"input.max_quarantine_share={max_share:.2%} ({by_reason}); the rows and their reasons are in "
            f"{quarantine_table}.{plausible}"
        )
    return share
