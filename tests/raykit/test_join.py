"""raykit.join: the broadcast join and the hash-shuffle join give the rows pyarrow's join of the same tables gives."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import ray.data

from jobs.config import StorageConfig
from jobs.errors import UserError
from jobs.raykit import join as raykit_join
from jobs.raykit.join import BROADCAST_ROWS, join_broadcast, join_datasets, join_labels
from jobs.storage import TableIn, join, writing

# the left side: persona-keyed rows in several blocks, one with a null key, people the right side lacks
LEFT = [
    pa.table({"persona_id": ["p1", "p2", "p3"], "x": [1.0, 2.0, 3.0]}),
    pa.table({"persona_id": ["p4", None, "p6"], "x": [4.0, 5.0, 6.0]}),
    pa.table({"persona_id": ["p7", "p8"], "x": [7.0, 8.0]}),
    pa.table({"persona_id": ["p9"], "x": [9.0]}),
]
# the right side: a persona may have several rows (a member of two segments), some have none, one is unknown
# on the left; its key is large_string where the left's is string (two writers, two Arrow types)
RIGHT = [
    pa.table(
        {
            "persona_id": pa.array(["p2", "p2", "p4"], pa.large_string()),
            "segment": ["a", "b", "a"],
            "score": [0.5, 0.25, 0.75],
        }
    ),
    pa.table({"persona_id": pa.array(["p9", "zz"], pa.large_string()), "segment": ["b", "a"], "score": [0.1, 0.2]}),
]


def _rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda row: json.dumps(row, sort_keys=True))


def _expected(join_type: str) -> pa.Table:
    left = pa.concat_tables(LEFT)
    right = pa.concat_tables(RIGHT)
    right = right.set_column(0, "persona_id", right.column("persona_id").cast(pa.string()))
    return left.join(right, keys="persona_id", join_type={"inner": "inner", "left_outer": "left outer"}[join_type])


def _collected(ds: ray.data.Dataset) -> pa.Table:
    return pa.concat_tables([t for t in ray.get(ds.to_arrow_refs()) if t.num_rows], promote_options="permissive")


@pytest.mark.parametrize(
    ("right_rows", "join_type"),
    [
        (5, "inner"),
        (5, "left_outer"),
        (BROADCAST_ROWS, "inner"),
        (None, "inner"),
        (None, "left_outer"),
        # the hash join costs ~5-10 s here: once, left outer (the train stage's); the export's leak test takes
        # the inner one
        (BROADCAST_ROWS + 1, "left_outer"),
    ],
    ids=str,
)
def test_both_paths_give_pyarrows_join(ray_cluster, right_rows, join_type):
    left = ray.data.from_arrow(LEFT)
    joined = join_datasets(left, ray.data.from_arrow(RIGHT), ["persona_id"], join_type, 2, right_rows).materialize()
    assert _rows(_collected(joined)) == _rows(_expected(join_type))
    broadcast = right_rows is None or right_rows <= BROADCAST_ROWS  # None: counted from the blocks' metadata
    if broadcast:  # no shuffle: every left block is joined where it is, one output block each
        assert joined.num_blocks() == len(LEFT)
        assert joined.schema().names == ["persona_id", "x", "segment", "score"]


@pytest.mark.parametrize("join_type", ["inner", "left_outer"])
def test_an_empty_right_side_broadcasts_its_columns(ray_cluster, join_type):
    empty = ray.data.from_arrow([RIGHT[0].slice(0, 0)])  # no members: blocks with columns, without rows
    joined = join_datasets(ray.data.from_arrow(LEFT), empty, ["persona_id"], join_type, 2, 0)
    rows = [row for t in ray.get(joined.to_arrow_refs()) for row in t.to_pylist()]
    if join_type == "inner":
        assert rows == []
    else:
        assert _rows(pa.Table.from_pylist(rows)) == _rows(
            pa.concat_tables(LEFT)
            .append_column("segment", pa.nulls(9, pa.string()))
            .append_column("score", pa.nulls(9, pa.float64()))
        )


def test_join_labels_runs_then_on_every_joined_block_of_a_partition(ray_cluster, tmp_path, monkeypatch):
    store = StorageConfig()
    table_path = join(str(tmp_path), "features")
    with writing(table_path, store) as writer:
        for i, block in enumerate(LEFT):  # a file each
            writer.write_arrow(block, partition={"as_of": "2026-01-01"}, name=f"part-{i:05d}")
    features = TableIn("features", table_path, store)
    partition = {"as_of": "2026-01-01"}
    labels = [pa.table({"persona_id": ["p2"], "label__a": [1]}), pa.table({"persona_id": ["p9"], "label__a": [1]})]
    blocks = [ray.put(t) for t in labels]
    joined = pa.concat_tables(LEFT).join(pa.concat_tables(labels), keys="persona_id", join_type="left outer")
    expected = joined.drop_columns(["x"])  # `then` (a function the workers can import) drops a column

    def collected(refs) -> pa.Table:
        return pa.concat_tables([t for t in ray.get(refs) if t.num_rows], promote_options="permissive")

    by_file = join_labels(
        features, ["persona_id", "x"], partition, blocks, 2, 2, pa.Table.drop_columns, {"columns": ["x"]}
    )
    assert len(by_file) == len(LEFT)  # a task per file
    assert _rows(collected(by_file)) == _rows(expected)
    # small files read in runs: as many blocks as the cluster's CPUs (2), the same rows in the same order
    in_runs = join_labels(
        features, ["persona_id", "x"], partition, blocks, 2, 2, pa.Table.drop_columns, {"columns": ["x"]}, 1 << 30
    )
    assert len(in_runs) == 2
    assert collected(in_runs).to_pylist() == collected(by_file).to_pylist()
    one_each = join_labels(
        features, ["persona_id", "x"], partition, blocks, 2, 2, pa.Table.drop_columns, {"columns": ["x"]}, 1
    )
    assert len(one_each) == len(LEFT)  # every file holds more than a run's bytes
    nobody = join_labels(features, ["persona_id", "x"], partition, [], 0, 2, pa.Table.drop_columns, {"columns": ["x"]})
    assert _rows(collected(nobody)) == _rows(pa.concat_tables(LEFT).drop_columns(["x"]))
    monkeypatch.setattr(raykit_join, "BROADCAST_ROWS", 1)  # more labels than a broadcast takes: the hash join
    hashed = join_labels(
        features, ["persona_id", "x"], partition, blocks, 2, 2, pa.Table.drop_columns, {"columns": ["x"]}
    )
    assert _rows(collected(hashed)) == _rows(expected)
    assert _rows(join_broadcast(LEFT[0], blocks)) == _rows(
        LEFT[0].join(pa.concat_tables(labels), keys="persona_id", join_type="left outer")
    )
    with pytest.raises(UserError, match="partition as_of=2026-02-01 has no data files"):
        join_labels(
            features, ["persona_id"], {"as_of": "2026-02-01"}, blocks, 2, 2, pa.Table.drop_columns, {"columns": ["x"]}
        )


def test_a_join_type_neither_side_knows_is_refused(ray_cluster):
    with pytest.raises(ValueError, match="join_type"):
        join_datasets(ray.data.from_arrow(LEFT), ray.data.from_arrow(RIGHT), ["persona_id"], "full_outer", 2, 5)
