"""Training examples: the validation split and samples come from a seeded hash of persona_id."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from jobs.config import SegmentConfig
from jobs.model.examples import LABEL, SAMPLE, VALID, hash_uniform, prepare_batch


def test_hash_split_is_stable_and_uniform():
    ids = pa.array([f"persona-{i}" for i in range(20000)])
    u = hash_uniform(ids, 7)
    assert np.array_equal(u, hash_uniform(ids, 7)) and not np.array_equal(u, hash_uniform(ids, 8))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01 and abs((u < 0.2).mean() - 0.2) < 0.01


def test_prepare_batch_keeps_eligible_rows_and_fills_absent_labels_with_zero():
    batch = pa.table(
        {
            "persona_id": ["a", "b", "c", "d"],
            "orders_365d": pa.array([1, 0, 2, 3], pa.int64()),
            "cat00_purchases_365d": pa.array([0, 0, 1, 0], pa.int64()),
            "label__v": pa.array([1, None, 1, None], pa.int64()),  # a left join leaves negatives null
        }
    )
    virgins = SegmentConfig(name="v", kind="category_virgins", category="home")
    out = prepare_batch(batch, virgins, ["orders_365d"], ["home"], validation_share=0.5, seed=7, label="label__v")
    assert out.column_names == ["orders_365d", LABEL, VALID, SAMPLE]
    assert out.column("orders_365d").to_pylist() == [1, 3]  # bought before, never in the category
    assert out.column(LABEL).to_pylist() == [1, 0]
    ids = pa.array(["a", "d"])
    assert out.column(VALID).to_pylist() == (hash_uniform(ids, 7) < 0.5).tolist()
    assert np.array_equal(out.column(SAMPLE).to_numpy(), hash_uniform(ids, 8))
    unlabelled = prepare_batch(batch.drop_columns(["label__v"]), virgins, ["orders_365d"], ["home"], 0.5, 7, "label__v")
    assert unlabelled.column(LABEL).to_pylist() == [0, 0]


def test_a_segment_that_takes_everyone_shares_the_snapshot_columns():
    """Most segments take every persona: their rows are the snapshot's own columns, not a filtered copy (a
    copy per segment of ~110 columns was most of the train stage's preparation)."""
    batch = pa.table({"persona_id": ["a", "b", "c"], "orders_365d": pa.array([1, 0, 2], pa.int64())})
    buyers = SegmentConfig(name="b", kind="ecommerce_buyers")
    out = prepare_batch(batch, buyers, ["orders_365d"], [], validation_share=0.5, seed=7, label="label__b")
    assert out.column("orders_365d").to_pylist() == [1, 0, 2] and out.column(LABEL).to_pylist() == [0, 0, 0]
    shared = out.column("orders_365d").chunk(0).buffers()[1].address
    assert shared == batch.column("orders_365d").chunk(0).buffers()[1].address
