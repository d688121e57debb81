"""Map tasks whose outputs are hash-split on the spot: one task wave per exchange instead of two.

`jobs.shuffle.hash_partition` splits blocks in separate tasks; here the task that produces a table also
splits it (`split_by_hash`), so an exchange costs one map wave plus one concat wave. The driver only
handles object references.
"""

from __future__ import annotations

from typing import Callable, Sequence

import pyarrow as pa
import ray

from jobs.shuffle import split_by_hash

Keys = Sequence[str] | None


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


@ray.remote
def _concat(*parts: pa.Table) -> pa.Table:
    non_empty = [p for p in parts if p.num_rows] or list(parts[:1])
    return pa.concat_tables(non_empty, promote_options="permissive").combine_chunks()


def map_exchange(fn: Callable, calls: Sequence[tuple], specs: Sequence[Keys], num_partitions: int,
                 scalar_outputs: int = 0) -> list[list]:
    """Run `fn(*call)` for every call; its outputs are tables (one per spec) then `scalar_outputs` small values.

    Returns one list per output: for a spec with keys, `num_partitions` refs of the concatenated partitions;
    for `None`, the refs as the tasks returned them (one per call); then one list per scalar output.
    """
    P = num_partitions
    sizes = [1 if keys is None else P for keys in specs] + [1] * scalar_outputs
    all_specs = list(specs) + [None] * scalar_outputs

    def task(*args):
        if len(all_specs) == 1 and specs[0] is None:
            return fn(*args)
        out = _flatten(fn(*args), all_specs, P)
        return out[0] if len(out) == 1 else out

    task.__name__ = getattr(fn, "__name__", "map_exchange")
    task.__qualname__ = task.__name__
    remote = ray.remote(num_returns=sum(sizes))(task)
    results = []
    for call in calls:
        refs = remote.remote(*call)
        results.append(refs if isinstance(refs, list) else [refs])
    outputs: list[list] = []
    offset = 0
    for keys, size in zip(all_specs, sizes):
        if keys is None:
            outputs.append([r[offset] for r in results])
        else:
            outputs.append([_concat.remote(*[r[offset + i] for r in results]) for i in range(P)])
        offset += size
    return outputs
