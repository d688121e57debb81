"""The export's distributed part: partner keys joined with the members, written as staged parts by workers.

identity_map rows become (persona_id, partner_id, key_type, key) rows in a map (`keys.partner_keys`),
materialised once; the member scores are joined with them (`jobs.raykit.join`: every key goes by reference
to each members block's task while there are at most `BROADCAST_ROWS` keys, counted from the materialised
blocks' metadata; else Ray Data's hash join), and every joined block writes one Parquet part per (partner,
segment) it holds into a staging folder, returning the part's rows and sha256. Either way all the keys of a
persona meet its member row in one block, so a part holds each key once. The driver only sees that list of
parts (and the partner ids), never a row of the data.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from jobs.config import StorageConfig
from jobs.exports.keys import IDENTITY_COLUMNS, partner_keys
from jobs.exports.parts import COMPRESSION, PART_ROWS, SCORE_COLUMNS, export_parts, export_schema, members
from jobs.raykit.join import join_datasets
from jobs.storage import TableIn, join, write_parquet


def keys_distributed(identity_map: TableIn):
    """Every partner's keys, materialised once: the partner list and the join both read them (sha256 runs
    once per identifier)."""
    return (
        identity_map.dataset(columns=IDENTITY_COLUMNS).map_batches(partner_keys, batch_format="pyarrow").materialize()
    )


def partners_distributed(keys) -> list[str]:
    """The partner ids that hold at least one key, sorted."""
    tables = _tables(keys.map_batches(_partners_of_block, batch_format="pyarrow", batch_size=None))
    return sorted({p for table in tables for p in table.column("partner_id").to_pylist() if p is not None})


def stage_parts_distributed(
    keys, scores: TableIn, staging: str, storage: StorageConfig, num_partitions: int, reasons: bool = False
) -> list[dict[str, Any]]:
    """Join the keys with the member scores and write the parts under `staging`; returns one row per part."""
    columns = SCORE_COLUMNS + (["reasons"] if reasons else [])
    # a block per file of the scores (the score stage sizes them): an export's parts are its members in each
    # joined block, and Ray Data would split a few small files into 2 x CPUs blocks, each a part of every export
    member_rows = scores.dataset(columns=columns, override_num_blocks=len(scores.files())).map_batches(
        members, fn_kwargs={"reasons": reasons}, batch_format="pyarrow"
    )
    joined = join_datasets(member_rows, keys, ["persona_id"], "inner", num_partitions, keys.count())
    written = joined.map_batches(
        _stage_block,
        fn_kwargs={"staging": staging, "storage": storage, "reasons": reasons},
        batch_format="pyarrow",
        batch_size=None,
    )
    return [row for table in _tables(written) for row in table.to_pylist()]


def stage_empty_part(
    staging: str, partner: str, segment: str, storage: StorageConfig, reasons: bool = False
) -> dict[str, Any]:
    """An empty part for an export with no member (the partner still gets a manifest saying so)."""
    return _stage(staging, partner, segment, export_schema(reasons).empty_table(), storage)


def _stage_block(batch: pa.Table, staging: str, storage: StorageConfig, reasons: bool) -> pa.Table:
    parts = export_parts(batch, reasons)
    rows = [_stage(staging, partner, segment, part, storage) for partner, segment, part in parts]
    return pa.Table.from_pylist(rows, schema=PART_ROWS)


def _stage(staging: str, partner: str, segment: str, part: pa.Table, storage: StorageConfig) -> dict[str, Any]:
    path = join(staging, partner, segment, f"part-{uuid.uuid4().hex}.parquet")
    data = write_parquet(path, part, storage, compression=COMPRESSION)
    return {
        "partner_id": partner,
        "segment": segment,
        "path": path,
        "rows": part.num_rows,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _partners_of_block(batch: pa.Table) -> pa.Table:
    values = pc.unique(batch.column("partner_id")) if batch.num_rows else pa.array([], pa.string())
    return pa.table({"partner_id": values.cast(pa.string())})


def _tables(ds) -> list[pa.Table]:
    """The (small) result blocks of a dataset of per-block summaries."""
    return [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
