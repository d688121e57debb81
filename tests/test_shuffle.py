import pyarrow as pa

from jobs.shuffle import hash_partition, map_partitions, split_by_hash


def test_split_keeps_every_row_and_each_key_in_one_part():
    table = pa.table({"k": [f"key{i % 37}" for i in range(1000)], "v": list(range(1000))})
    parts = split_by_hash(table, ["k"], 5)
    assert sum(p.num_rows for p in parts) == 1000
    seen = {}
    for index, part in enumerate(parts):
        for key in set(part.column("k").to_pylist()):
            assert seen.setdefault(key, index) == index


def test_hash_partition_over_ray_groups_keys_across_blocks(ray_cluster):
    blocks = [ray_cluster.put(pa.table({"k": [i % 11 for i in range(b, b + 100)], "v": [b] * 100})) for b in range(4)]
    parts = ray_cluster.get(hash_partition(blocks, ["k"], 3))
    assert sum(p.num_rows for p in parts) == 400
    owners = [set(p.column("k").to_pylist()) for p in parts]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1:])
    counts = ray_cluster.get(map_partitions(lambda t: t.num_rows, hash_partition(blocks, ["k"], 3)))
    assert sum(counts) == 400
