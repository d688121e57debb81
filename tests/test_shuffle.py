import numpy as np
import pandas as pd
import pyarrow as pa

from jobs.raykit.shuffle import (
    _HASH_KEY,
    Pieces,
    hash_columns,
    hash_partition,
    map_exchange,
    map_partitions,
    split_by_hash,
)


def test_split_keeps_every_row_and_each_key_in_one_part():
    table = pa.table({"k": [f"key{i % 37}" for i in range(1000)], "v": list(range(1000))})
    parts = split_by_hash(table, ["k"], 5)
    assert sum(p.num_rows for p in parts) == 1000
    seen = {}
    for index, part in enumerate(parts):
        for key in set(part.column("k").to_pylist()):
            assert seen.setdefault(key, index) == index


def test_hash_columns_is_pandas_hash_per_value_whatever_the_cardinality():
    """String columns of few distinct values hash only their dictionary: the hash of every row must be the
    one pandas gives that row's value (the partitions, and dedupe's tie order, depend on it)."""
    rng = np.random.default_rng(3)
    n = 50_000
    few = [None if i % 13 == 0 else f"p{i % 7}" for i in rng.integers(0, 10_000, n)]
    many = [None if i % 101 == 0 else f"e{i}" for i in range(n)]
    head_unique = [f"u{i}" for i in range(20_000)] + [f"r{i % 5}" for i in range(n - 20_000)]
    table = pa.table({"few": few, "many": many, "head_unique": head_unique, "n": rng.integers(0, 9, n)})
    table = pa.concat_tables([table.slice(0, 777), table.slice(777)])  # several chunks
    for keys in (["few"], ["many"], ["head_unique"], ["few", "many", "n"]):
        want = None
        for key in keys:
            values = np.array(table.column(key).to_pylist(), dtype=object)
            if key == "n":
                hashed = pd.util.hash_array(values.astype(np.int64), hash_key=_HASH_KEY)
            else:
                hashed = pd.util.hash_array(values, hash_key=_HASH_KEY, categorize=False)
            want = hashed if want is None else pd.util.hash_array(want * np.uint64(31) + hashed, hash_key=_HASH_KEY)
        np.testing.assert_array_equal(hash_columns(table, keys), want)


def test_hash_partition_over_ray_groups_keys_across_blocks(ray_cluster):
    blocks = [ray_cluster.put(pa.table({"k": [i % 11 for i in range(b, b + 100)], "v": [b] * 100})) for b in range(4)]
    parts = ray_cluster.get(hash_partition(blocks, ["k"], 3))
    assert sum(p.num_rows for p in parts) == 400
    owners = [set(p.column("k").to_pylist()) for p in parts]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1 :])
    counts = ray_cluster.get(map_partitions(lambda t: t.num_rows, hash_partition(blocks, ["k"], 3)))
    assert sum(counts) == 400


def test_map_exchange_splits_keyed_outputs_and_passes_the_rest_through(ray_cluster):
    """Per call: a keyed table (exchanged into partitions), an unkeyed table and a scalar (one ref per call)."""

    def step(offset: int):
        rows = pa.table({"k": [(offset + i) % 7 for i in range(50)], "v": [offset] * 50})
        return rows, rows.slice(0, 5), rows.num_rows

    keyed, unkeyed, counts = map_exchange(step, [(b * 50,) for b in range(3)], [["k"], None], 4, scalar_outputs=1)
    assert len(keyed) == 4 and len(unkeyed) == 3 and len(counts) == 3
    parts = ray_cluster.get(keyed)
    assert sum(p.num_rows for p in parts) == 150
    owners = [set(p.column("k").to_pylist()) for p in parts]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1 :])
    assert [t.column("v")[0].as_py() for t in ray_cluster.get(unkeyed)] == [0, 50, 100]
    assert ray_cluster.get(counts) == [50, 50, 50]


def test_pieces_reach_the_next_task_as_the_gathered_partition(ray_cluster):
    """gather=False leaves each partition as its map tasks' pieces; a task of the next exchange gets them as
    the table the concat wave would have stored (the same rows in the same order, one chunk)."""

    def step(offset: int):
        return pa.table({"k": [(offset + i) % 7 for i in range(50)], "v": list(range(offset, offset + 50))})

    calls = [(b * 50,) for b in range(3)]
    (gathered,) = map_exchange(step, calls, [["k"]], 4)
    (scattered,) = map_exchange(step, calls, [["k"]], 4, gather=False)
    assert all(isinstance(p, Pieces) and len(p.refs) == 3 for p in scattered)

    def seen(part: pa.Table, tag: str):
        return part.num_rows, part.column("v").num_chunks, part.column("v").to_pylist(), tag

    (as_gathered,) = map_exchange(seen, [(p, "g") for p in gathered], [None], 4)
    (as_pieces,) = map_exchange(seen, [(p, "s") for p in scattered], [None], 4)
    got = [(a[:3], b[:3]) for a, b in zip(ray_cluster.get(as_gathered), ray_cluster.get(as_pieces))]
    assert all(a == b and a[1] == 1 for a, b in got) and sum(a[0] for a, _ in got) == 150
