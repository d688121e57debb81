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

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import ray

from jobs.raykit.session import configure_data_context

if TYPE_CHECKING:  # ray.data (with pandas, ~1 s on 2 cores) only where a Dataset is joined: not in join tasks
    import ray.data

    from jobs.storage import TableIn

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
    features: TableIn,
    columns: list[str],
    partition: Mapping[str, Any],
    label_blocks: Sequence[ray.ObjectRef],
    label_rows: int,
    num_partitions: int,
    then: Callable[..., pa.Table],
    then_kwargs: dict[str, Any],
    task_bytes: int = 0,
) -> list[ray.ObjectRef]:
    """`then(rows, **then_kwargs)` of a partition of the features table (its `columns`) left-joined on persona_id
    with the labels at the same cut-off, as blocks in the object store.

    `label_blocks`: the labels partition in the object store (`TableIn.blocks`); it holds the positives only,
    `label_rows` of them (the labels marker's count; no blocks: nobody is positive). Up to `BROADCAST_ROWS`, one
    Ray task per features file (or run of small files of about `task_bytes`, `TableIn.blocks`) reads it, joins
    it with every label block and applies `then`, started and not waited for: no Ray Data pass, which costs
    1-3 s on 2 cores however few the rows (a streaming executor's start-up, and a first second that runs one
    task at a time while it learns its share of the cluster). Above, Ray Data's hash join, `then` on each
    joined block, materialized."""
    if label_rows <= BROADCAST_ROWS:
        return features.blocks(columns, partition, _join_then, (then, then_kwargs, *label_blocks), task_bytes)
    import ray.data

    configure_data_context()
    labels = ray.data.from_arrow_refs(list(label_blocks))
    joined = join_datasets(
        features.dataset(columns, partition), labels, ["persona_id"], "left_outer", num_partitions, label_rows
    )
    prepared = joined.map_batches(then, batch_format="pyarrow", zero_copy_batch=True, fn_kwargs=then_kwargs)
    return prepared.materialize().to_arrow_refs()


def _join_then(
    rows: pa.Table, then: Callable[..., pa.Table], then_kwargs: dict[str, Any], *labels: pa.Table
) -> pa.Table:
    return then(join_tables(rows, labels, ["persona_id"]) if labels else rows, **then_kwargs)


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
    """A left block joined with the right side's blocks (object references) on the `on` columns."""
    tables = [t for t in ray.get(blocks) if t.num_columns]
    return join_tables(batch, tables or [schema.empty_table()], on, join_type)


def join_tables(
    left: pa.Table, right: Sequence[pa.Table], on: Sequence[str], join_type: str = "left_outer"
) -> pa.Table:
    """`left` joined with the concatenated `right` tables on the `on` columns; the right key columns take the
    left's types (a string key may be read as large_string on one side)."""
    joined = pa.concat_tables(right, promote_options="permissive")
    for name in on:
        wanted = left.schema.field(name).type
        if joined.schema.field(name).type != wanted:
            index = joined.schema.get_field_index(name)
            joined = joined.set_column(index, name, joined.column(name).cast(wanted))
    return left.join(joined, keys=list(on), join_type=JOIN_TYPES[join_type])
