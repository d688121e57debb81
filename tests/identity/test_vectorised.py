"""The vectorised helpers equal the numpy calls they replace (np.unique over rows), on tricky values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from jobs.identity.graph import distinct_pairs
from jobs.identity.personas import _partners_union


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distinct_pairs_equals_unique_rows(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # few distinct values (many duplicates), values above 2**63 (the sign bit of int64) and 0
    pool = np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 1, 12345], dtype=np.uint64)
    a = pool[rng.integers(0, len(pool), 500)]
    b = np.concatenate([pool, rng.integers(0, 2**64 - 1, 494, dtype=np.uint64, endpoint=True)])
    b = b[rng.permutation(len(b))][:500]
    want, counts = np.unique(np.stack([a, b], axis=1), axis=0, return_counts=True)
    got_a, got_b, got_counts = distinct_pairs(a, b)
    np.testing.assert_array_equal(got_a, want[:, 0])
    np.testing.assert_array_equal(got_b, want[:, 1])
    np.testing.assert_array_equal(got_counts, counts)


def test_distinct_pairs_empty() -> None:
    a, b, counts = distinct_pairs(np.zeros(0, np.uint64), np.zeros(0, np.uint64))
    assert len(a) == len(b) == len(counts) == 0


def test_partners_union_equals_sorted_python_sets() -> None:
    lists = [["p2", "p1"], ["p1"], ["Ä", "p10", "p2"], ["z"], ["p2", "p2"], ["a"]]
    group = np.array([0, 0, 2, 2, 3, 0])  # group 1 has no rows: null, as the group_by it replaces gave
    got = _partners_union(pa.array(lists, pa.list_(pa.string())), group, 4).to_pylist()
    want: list = [None] * 4
    for g, values in zip(group, lists):
        want[g] = sorted(set(want[g] or []) | set(values))
    assert got == want
