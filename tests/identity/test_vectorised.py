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


def test_sessionise_equals_a_loop_over_rows() -> None:
    """session_key: the partner's session_id, else device + '@' + the first ts of its cut session (a new one
    after more than the gap, per partner and device), else null; checked against a plain loop."""
    import datetime as dt

    from jobs.identity.graph import SLIM_SCHEMA, sessionise

    rng = np.random.default_rng(5)
    n = 400
    base = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    rows = {name: [None] * n for name in SLIM_SCHEMA.names}
    rows["partner_id"] = [f"p{i}" for i in rng.integers(0, 2, n)]
    rows["event_id"] = [f"e{i}" for i in range(n)]
    rows["ts"] = [base + dt.timedelta(minutes=int(m)) for m in rng.integers(0, 600, n)]
    kind = rng.integers(0, 3, n)  # 0: session id, 1: device only, 2: neither
    rows["session_id"] = [f"s{i % 7}" if k == 0 else None for i, k in enumerate(kind)]
    rows["device_id"] = [f"d{i % 5}" if k in (0, 1) else None for i, k in enumerate(kind)]
    slim = pa.table(rows, schema=SLIM_SCHEMA)
    got = sessionise(slim, 30).column("session_key").to_pylist()

    want: list = [None] * n
    by_device: dict = {}
    for i in range(n):
        if rows["session_id"][i] is not None:
            want[i] = rows["session_id"][i]
        elif rows["device_id"][i] is not None:
            by_device.setdefault((rows["partner_id"][i], rows["device_id"][i]), []).append(i)
    for (_, device), members in by_device.items():
        start = last = None
        for i in sorted(members, key=lambda i: rows["ts"][i]):
            t = rows["ts"][i]
            if last is None or t - last > dt.timedelta(minutes=30):
                start = t
            last = t
            want[i] = (
                f"{device}@{(start - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)}"
            )
    assert got == want


def test_hash_strings_constant_equals_its_column() -> None:
    from jobs.identity.graph import hash_strings

    values = pa.array(["a", None, "b", "a", ""] * 20)
    scope = pa.nulls(len(values), pa.string())
    constant = pa.array(["email"] * len(values))
    np.testing.assert_array_equal(hash_strings("email", scope, values), hash_strings(constant, scope, values))
    np.testing.assert_array_equal(hash_strings("e", values), hash_strings(pa.array(["e"] * len(values)), values))


def test_value_hashes_are_the_same_whether_the_column_is_encoded_or_not() -> None:
    from jobs.identity.graph import _NULL_HASH, _value_hashes
    from jobs.raykit.shuffle import _worth_encoding as worth_encoding

    rng = np.random.default_rng(3)
    distinct = pa.array([f"ev-{i}" if i % 7 else None for i in range(30_000)])  # every row its own value
    repeated = pa.array([f"p{i}" if i else None for i in rng.integers(0, 5, 30_000)])
    assert not worth_encoding(distinct) and worth_encoding(repeated)
    both = pa.concat_arrays([repeated, distinct])  # the first rows repeat: hashed through the dictionary
    assert worth_encoding(both)
    hashed = _value_hashes(both)
    np.testing.assert_array_equal(hashed[: len(repeated)], _value_hashes(repeated))
    np.testing.assert_array_equal(hashed[len(repeated) :], _value_hashes(distinct))
    assert (_value_hashes(distinct)[::7] == _NULL_HASH).all() and (hashed != 0).all()


@pytest.mark.parametrize("width", [1, 2, 3])
def test_sorted_runs_equals_a_stable_sort_by_the_keys(width: int) -> None:
    from jobs.identity.graph import sorted_runs

    rng = np.random.default_rng(width)
    keys = [rng.integers(0, 4, 2_000).astype(np.uint64) for _ in range(width)]
    order, starts = sorted_runs(*keys)
    rows = sorted(range(2_000), key=lambda i: (tuple(int(k[i]) for k in reversed(keys)), i))
    assert order.tolist() == rows
    as_tuples = [tuple(int(k[i]) for k in keys) for i in rows]
    assert starts.tolist() == [i for i in range(2_000) if i == 0 or as_tuples[i] != as_tuples[i - 1]]
