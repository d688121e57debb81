"""One export: its Parquet parts (`key_type, key, score, percentile` [, `reasons`]) and the manifest that lists them.

`reasons` (the members' partner-safe labels from `scores/`) is a column only when `export.reasons` is on.

A part holds one row per key: a key names one persona, so a duplicated identity row never doubles a key.
The manifest lists every part with its row count, size and sha256, so a partner can check what it pulled.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from jobs.exports.keys import KEY_RECIPE, KEY_TYPES
from jobs.run.naming import validate_partner_id, validate_segment_name

FORMAT_VERSION = 1
COMPRESSION = "zstd"

EXPORT_SCHEMA = pa.schema(
    [("key_type", pa.string()), ("key", pa.string()), ("score", pa.float64()), ("percentile", pa.float64())]
)
REASONS_FIELD = pa.field("reasons", pa.list_(pa.string()))
# joins take no list columns (Arrow's hash join, and Ray Data's on top of it): reasons cross the join as one
# string, labels separated by the ASCII unit separator (never in a label), and become a list again per part
_REASONS_SEP = "\x1f"
# the scores columns an export reads
SCORE_COLUMNS = ["persona_id", "segment", "score", "percentile", "member"]


def export_schema(reasons: bool = False) -> pa.Schema:
    return EXPORT_SCHEMA.append(REASONS_FIELD) if reasons else EXPORT_SCHEMA


# what writing one part reports back to the driver
PART_ROWS = pa.schema(
    [
        ("partner_id", pa.string()),
        ("segment", pa.string()),
        ("path", pa.string()),
        ("rows", pa.int64()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
    ]
)


def members(scores: pa.Table, reasons: bool = False) -> pa.Table:
    """Scores rows of segment members only: (persona_id, segment, score, percentile [, reasons])."""
    chosen = scores.filter(pc.fill_null(scores.column("member"), False))
    out = chosen.select(["persona_id", "segment", "score", "percentile"])
    if reasons:
        out = out.append_column("reasons", pc.binary_join(chosen.column("reasons"), _REASONS_SEP))
    return out


def export_parts(joined: pa.Table, reasons: bool = False) -> Iterator[tuple[str, str, pa.Table]]:
    """(partner, segment, part) for every (partner, segment) in a block of keys joined with members.

    Partner ids and segment names become path components: anything that is not a plain name is refused.
    """
    if joined.num_rows == 0:
        return
    for group in joined.group_by(["partner_id", "segment"]).aggregate([]).to_pylist():
        partner = validate_partner_id(group["partner_id"])
        segment = validate_segment_name(group["segment"])
        mask = pc.and_(pc.equal(joined.column("partner_id"), partner), pc.equal(joined.column("segment"), segment))
        part = joined.filter(mask)
        if reasons:  # a key names one persona: a duplicated identity row repeats it, its first row is kept
            first = part.append_column("_row", pa.array(range(part.num_rows), pa.int64()))
            first = first.group_by(["key_type", "key"], use_threads=False).aggregate([("_row", "min")])
            part = part.take(first.column("_row_min"))
            text = pc.fill_null(part.column("reasons"), "")
            listed = pc.if_else(
                pc.equal(text, ""), pa.scalar([], REASONS_FIELD.type), pc.split_pattern(text, _REASONS_SEP)
            )
            part = part.set_column(part.schema.get_field_index("reasons"), "reasons", listed)
            part = part.select(export_schema(True).names).cast(export_schema(True))
        else:
            part = part.select(EXPORT_SCHEMA.names).cast(EXPORT_SCHEMA)
            # one row per key (max() only guards against a duplicated identity row)
            part = part.group_by(["key_type", "key"]).aggregate([("score", "max"), ("percentile", "max")])
            part = part.select(["key_type", "key", "score_max", "percentile_max"])
            part = part.rename_columns(EXPORT_SCHEMA.names).cast(EXPORT_SCHEMA)
        yield partner, segment, part.sort_by([("key_type", "ascending"), ("key", "ascending")])


def part_name(index: int, write_id: str) -> str:
    """A part's name in the export folder: its place and the write it belongs to."""
    return f"part-{index:05d}-{write_id}.parquet"


def manifest(
    *,
    run_id: str,
    run_date: str,
    partner_id: str,
    segment: str,
    model_version: str,
    write_id: str,
    created_at: str,
    membership: str,
    parts: Sequence[Mapping[str, Any]],
    reasons: bool = False,
) -> dict[str, Any]:
    """The manifest of one export; `parts` are (path, rows, bytes, sha256) with the path in the folder."""
    listed = [{"path": p["path"], "rows": p["rows"], "bytes": p["bytes"], "sha256": p["sha256"]} for p in parts]
    return {
        "format_version": FORMAT_VERSION,
        "run_id": run_id,
        "run_date": run_date,
        "partner_id": partner_id,
        "segment": segment,
        "model_version": model_version,
        "write_id": write_id,
        "created_at": created_at,
        "schema": [{"name": f.name, "type": str(f.type)} for f in export_schema(reasons)],
        "key_types": KEY_TYPES,
        "key_recipe": KEY_RECIPE,
        "membership": membership,
        "parts": listed,
        "rows": sum(p["rows"] for p in listed),
    }
