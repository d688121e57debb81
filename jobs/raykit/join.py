"""Joining a dataset with another on key columns: by broadcast while the other side is small, else by Ray
Data's hash-shuffle join.

A hash-shuffle join starts aggregator actors and exchanges every block: a fixed cost of several seconds on
2 cores however few the rows. When the right side has at most `BROADCAST_ROWS` rows (a count known without
reading it: a table marker's rows, or the metadata of the right side's materialized blocks), its blocks stay
in the object store and every left block's task receives their references and joins locally (pyarrow): no
shuffle, and the left side's blocks keep their layout. Above the bound the hash join with `num_partitions`
partitions, so no task ever has to hold a side that grows with the data.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import ray
import ray.data

# the right side's rows at most for a broadcast: each left block's task holds all of them at once
BROADCAST_ROWS = 1_000_000
# Ray Data's join types and pyarrow's names for them
JOIN_TYPES = {"inner": "inner", "left_outer": "left outer"}


def join_datasets(
    left: ray.data.Dataset,
    right: ray.data.Dataset,
    on: Sequence[str],
    join_type: str,
    num_partitions: int,
    right_rows: int | None = None,
) -> ray.data.Dataset:
    """`left` joined with `right` on the `on` columns (`join_type` "inner" or "left_outer", Ray Data's names).

    `right_rows`: the right side's row count, or a bound on it, known without reading it (a marker's rows).
    None: `right` is materialized (in the object store) and its count read from its blocks' metadata. The
    broadcast's rows are the same as the hash join's (in no set order, like the hash join's), one output block
    per left block; its columns are the left's, then the right's other columns."""
    if join_type not in JOIN_TYPES:
        raise ValueError(f"join_type must be one of {sorted(JOIN_TYPES)}, not {join_type!r}")
    if right_rows is None:
        right = right.materialize()
        right_rows = right.count()  # the blocks' metadata: no pass, nothing on the driver
    if right_rows > BROADCAST_ROWS:
        return left.join(right, join_type=join_type, num_partitions=num_partitions, on=tuple(on))
    right = right.materialize()  # computed once; its blocks stay in the object store
    return broadcast_join(left, right.to_arrow_refs(), on, join_type, right.schema().base_schema)


def join_labels(
    features_ds: ray.data.Dataset, label_blocks: Sequence[ray.ObjectRef], num_partitions: int, label_rows: int
) -> ray.data.Dataset:
    """The feature snapshot left-joined with the labels at the same cut-off.

    `label_blocks`: the labels partition in the object store (`TableIn.blocks`: a task per file, not a Ray Data
    pass, whose streaming executor's start-up costs 0.3-0.7 s on 2 cores for a few small files); it holds the
    positives only, `label_rows` of them (the labels marker's count)."""
    if label_rows <= BROADCAST_ROWS:
        return broadcast_join(features_ds, label_blocks, ["persona_id"])
    labels_ds = ray.data.from_arrow_refs(list(label_blocks))
    return join_datasets(features_ds, labels_ds, ["persona_id"], "left_outer", num_partitions, label_rows)


def broadcast_join(
    left: ray.data.Dataset,
    blocks: Sequence[ray.ObjectRef],
    on: Sequence[str],
    join_type: str = "left_outer",
    schema: pa.Schema | None = None,
) -> ray.data.Dataset:
    """`left` joined with the right side's `blocks` (in the object store): every left block's task receives
    their references and joins locally. `schema`: the right side's columns, for blocks that may have none (Ray
    Data's empty blocks); blocks read from files always carry theirs."""
    return left.map_batches(
        join_broadcast,
        batch_format="pyarrow",
        fn_kwargs={"blocks": list(blocks), "on": list(on), "join_type": join_type, "schema": schema},
    )


def join_broadcast(
    batch: pa.Table,
    blocks: list,
    on: Sequence[str] = ("persona_id",),
    join_type: str = "left_outer",
    schema: pa.Schema | None = None,
) -> pa.Table:
    """A left block joined with the right side's blocks (object references) on the `on` columns; the right
    key columns take the left's types (a string key may be read as large_string on one side)."""
    tables = [t for t in ray.get(blocks) if t.num_columns]
    if not tables:
        tables = [schema.empty_table()]
    right = pa.concat_tables(tables, promote_options="permissive")
    for name in on:
        wanted = batch.schema.field(name).type
        if right.schema.field(name).type != wanted:
            index = right.schema.get_field_index(name)
            right = right.set_column(index, name, right.column(name).cast(wanted))
    return batch.join(right, keys=list(on), join_type=JOIN_TYPES[join_type])
