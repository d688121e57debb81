"""Hash partitioning with Ray tasks: the shuffle under identity resolution and features.

Ray Data's groupby calls Python once per group, which is far too slow for millions of personas; what
the stages need instead is "all rows with the same key in one partition, then one vectorised function
per partition". `hash_partition` does exactly that with two waves of Ray tasks (split, then concat).
The driver only holds object references; the largest object on a worker is one partition, whose size
is set by `num_partitions`, not by the data.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import ray

# A fixed key keeps partition assignment (and so every output) deterministic across runs and machines.
_HASH_KEY = "smartsegments-v1"


def hash_columns(table: pa.Table, keys: Sequence[str]) -> np.ndarray:
    """A 64-bit hash per row of the key columns (nulls hash as a fixed value); vectorised in pandas' C code."""
    combined: np.ndarray | None = None
    for key in keys:
        column = table.column(key)
        if pa.types.is_integer(column.type):
            values = column.to_numpy(zero_copy_only=False)
            hashed = pd.util.hash_array(np.asarray(values), hash_key=_HASH_KEY)
        else:
            values = column.cast(pa.string()).to_numpy(zero_copy_only=False)
            hashed = pd.util.hash_array(values.astype(object), hash_key=_HASH_KEY, categorize=False)
        combined = hashed if combined is None else pd.util.hash_array(
            combined * np.uint64(31) + hashed, hash_key=_HASH_KEY
        )
    assert combined is not None, "hash_columns needs at least one key"
    return combined


def split_by_hash(table: pa.Table, keys: Sequence[str], num_partitions: int) -> list[pa.Table]:
    """Split one block into `num_partitions` tables by key hash (the map side of the shuffle)."""
    if table.num_rows == 0:
        return [table] * num_partitions
    bucket = (hash_columns(table, keys) % np.uint64(num_partitions)).astype(np.int64)
    order = np.argsort(bucket, kind="stable")
    bounds = np.searchsorted(bucket[order], np.arange(num_partitions + 1))
    ordered = table.take(pa.array(order))
    return [ordered.slice(bounds[i], bounds[i + 1] - bounds[i]) for i in range(num_partitions)]


@ray.remote
def _split(table: pa.Table, keys: Sequence[str], num_partitions: int):
    parts = split_by_hash(table, keys, num_partitions)
    return tuple(parts) if num_partitions > 1 else parts[0]


@ray.remote
def _concat(*parts: pa.Table) -> pa.Table:
    non_empty = [p for p in parts if p.num_rows] or list(parts[:1])
    return pa.concat_tables(non_empty, promote_options="permissive").combine_chunks()


def hash_partition(
    blocks: Sequence[ray.ObjectRef], keys: Sequence[str], num_partitions: int
) -> list[ray.ObjectRef]:
    """Re-partition blocks so that every key lands in exactly one of `num_partitions` partitions."""
    splits = [_split.options(num_returns=num_partitions).remote(b, list(keys), num_partitions) for b in blocks]
    if num_partitions == 1:
        splits = [[s] for s in splits]
    return [_concat.remote(*[split[i] for split in splits]) for i in range(num_partitions)]


def map_partitions(
    fn: Callable[..., pa.Table], partitions: Sequence[ray.ObjectRef], *args, **kwargs
) -> list[ray.ObjectRef]:
    """Run `fn(partition, *args, **kwargs)` on every partition as a Ray task; returns result references."""
    remote_fn = ray.remote(fn)
    return [remote_fn.remote(part, *args, **kwargs) for part in partitions]
