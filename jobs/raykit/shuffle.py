"""Hash partitioning with Ray tasks: the shuffle under identity resolution and features.

Ray Data's groupby calls Python once per group, which is far too slow for millions of personas; what
the stages need instead is "all rows with the same key in one partition, then one vectorised function
per partition". `map_exchange` runs a function as Ray tasks that hash-split their own outputs, then one
concat task per partition gathers them, or the next exchange's tasks take each partition as its pieces
(`Pieces`, no concat task); `hash_partition` is the exchange of blocks as they are. The driver only holds
object references; the largest object on a worker is one partition, whose size is set by `num_partitions`,
not by the data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray

from jobs.arrays import whole

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
            hashed = string_hashes(column.cast(pa.string()), _HASH_KEY)
        combined = (
            hashed if combined is None else pd.util.hash_array(combined * np.uint64(31) + hashed, hash_key=_HASH_KEY)
        )
    assert combined is not None, "hash_columns needs at least one key"
    return combined


def string_hashes(column: pa.ChunkedArray | pa.Array, hash_key: str) -> np.ndarray:
    """pandas' hash (under `hash_key`) of every value of a string column (null hashes as None does). A column
    of few distinct values (partner ids, sessions) hashes only its dictionary: the same hash per value, without
    a Python string per row; a sample of its head decides which way is cheaper (`_worth_encoding`), never the
    result."""
    column = whole(column)
    if not _worth_encoding(column):
        values = column.to_numpy(zero_copy_only=False).astype(object)
        return pd.util.hash_array(values, hash_key=hash_key, categorize=False)
    encoded = pc.dictionary_encode(column)
    distinct = np.append(encoded.dictionary.to_numpy(zero_copy_only=False).astype(object), None)
    hashed = pd.util.hash_array(distinct, hash_key=hash_key, categorize=False)
    return hashed[pc.fill_null(encoded.indices, len(distinct) - 1).to_numpy(zero_copy_only=False)]


def _worth_encoding(column: pa.Array) -> bool:
    """Whether a string column repeats its values enough that hashing only its dictionary is cheaper than
    hashing every row (dictionary-encoding a column of distinct values costs twice its hashing): a sample of
    its head decides, never the hashes."""
    sample = column.slice(0, _SAMPLE_ROWS)
    return len(column) >= 2 * _SAMPLE_ROWS and pc.count_distinct(sample, mode="all").as_py() <= len(sample) // 2


_SAMPLE_ROWS = 10_000


def split_by_hash(table: pa.Table, keys: Sequence[str], num_partitions: int) -> list[pa.Table]:
    """Split one block into `num_partitions` tables by key hash (the map side of the shuffle)."""
    if table.num_rows == 0:
        return [table] * num_partitions
    bucket = (hash_columns(table, keys) % np.uint64(num_partitions)).astype(np.int64)
    order = np.argsort(bucket, kind="stable")
    bounds = np.searchsorted(bucket[order], np.arange(num_partitions + 1))
    ordered = table.take(pa.array(order))
    return [ordered.slice(bounds[i], bounds[i + 1] - bounds[i]) for i in range(num_partitions)]


Keys = Sequence[str] | None


def concat_pieces(parts: Sequence[pa.Table]) -> pa.Table:
    """The pieces of one partition as one table (one chunk)."""
    non_empty = [p for p in parts if p.num_rows] or list(parts[:1])
    return pa.concat_tables(non_empty, promote_options="permissive").combine_chunks()


@ray.remote
def _concat(*parts: pa.Table) -> pa.Table:
    return concat_pieces(parts)


@dataclass(frozen=True)
class Pieces:
    """One hash partition left as the pieces its map tasks made (refs, in the calls' order), for the next
    `map_exchange` task to concatenate itself: no concat task stores the partition once more. At 5M events
    those stores took 25 of the resolve stage's 180 s of task time. Only `map_exchange` tasks take them."""

    refs: tuple[ray.ObjectRef, ...]


def _flatten(outs, specs: Sequence[Keys], num_partitions: int) -> tuple:
    if len(specs) == 1:
        outs = (outs,)
    flat: list = []
    for out, keys in zip(outs, specs):
        if keys is None or not isinstance(out, pa.Table):
            flat.append(out)
        else:
            flat.extend(split_by_hash(out, list(keys), num_partitions))
    return tuple(flat)


def map_exchange(
    fn: Callable,
    calls: Sequence[tuple],
    specs: Sequence[Keys],
    num_partitions: int,
    scalar_outputs: int = 0,
    gather: bool = True,
) -> list[list]:
    """Run `fn(*call)` for every call as a Ray task that hash-splits its own outputs on the spot.

    `fn` returns tables (one per spec) then `scalar_outputs` small values. Returns one list per output: for
    a spec with keys, `num_partitions` partitions: refs of the concatenated pieces (`gather`: one concat wave
    after the map wave), else `Pieces` that a later `map_exchange` call concatenates in its own task; for
    `None`, the refs as the tasks returned them (one per call); then one list per scalar output. A call's
    `Pieces` go to its task as plain arguments, so Ray starts the task once they all exist.
    """
    P = num_partitions
    sizes = [1 if keys is None else P for keys in specs] + [1] * scalar_outputs
    all_specs = list(specs) + [None] * scalar_outputs

    def task(layout: tuple, *flat):
        args, at = [], 0
        for pieces in layout:  # None: one argument as given; n: the n pieces of one partition
            args.append(flat[at] if pieces is None else concat_pieces(flat[at : at + pieces]))
            at += 1 if pieces is None else pieces
        if len(all_specs) == 1 and specs[0] is None:
            return fn(*args)
        out = _flatten(fn(*args), all_specs, P)
        return out[0] if len(out) == 1 else out

    task.__name__ = getattr(fn, "__name__", "map_exchange")
    task.__qualname__ = task.__name__
    remote = ray.remote(num_returns=sum(sizes))(task)
    results = []
    for call in calls:
        layout = tuple(len(a.refs) if isinstance(a, Pieces) else None for a in call)
        flat = [r for a in call for r in (a.refs if isinstance(a, Pieces) else (a,))]
        refs = remote.remote(layout, *flat)
        results.append(refs if isinstance(refs, list) else [refs])
    outputs: list[list] = []
    offset = 0
    for keys, size in zip(all_specs, sizes):
        if keys is None:
            outputs.append([r[offset] for r in results])
        else:
            pieces = [r[offset : offset + P] for r in results]
            if gather:
                outputs.append([_concat.remote(*[p[i] for p in pieces]) for i in range(P)])
            else:
                outputs.append(scattered_partitions(pieces, P))
        offset += size
    return outputs


def scattered_partitions(pieces: Sequence[Sequence[ray.ObjectRef]], num_partitions: int) -> list[Pieces]:
    """The `num_partitions` pieces of each of several tables -> per partition, its pieces (`Pieces`)."""
    return [Pieces(tuple(p[i] for p in pieces)) for i in range(num_partitions)]


def _unchanged(table: pa.Table) -> pa.Table:
    return table


def hash_partition(blocks: Sequence[ray.ObjectRef], keys: Sequence[str], num_partitions: int) -> list[ray.ObjectRef]:
    """Re-partition blocks so that every key lands in exactly one of `num_partitions` partitions."""
    (partitions,) = map_exchange(_unchanged, [(b,) for b in blocks], [list(keys)], num_partitions)
    return partitions


def map_partitions(
    fn: Callable[..., pa.Table], partitions: Sequence[ray.ObjectRef], *args, **kwargs
) -> list[ray.ObjectRef]:
    """Run `fn(partition, *args, **kwargs)` on every partition as a Ray task; returns result references."""
    remote_fn = ray.remote(fn)
    return [remote_fn.remote(part, *args, **kwargs) for part in partitions]
