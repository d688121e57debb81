import numpy as np
import pyarrow as pa
import pytest

from jobs.arrays import distinct, member, spread, whole


@pytest.mark.parametrize("dtype", [np.int64, np.uint64, np.int8])
def test_distinct_and_member_agree_with_numpy(dtype):
    rng = np.random.default_rng(3)
    high = np.iinfo(dtype).max
    values = rng.integers(0, high, 5000, dtype=dtype, endpoint=True)
    values = np.concatenate([values, values[:700]])  # repeats
    probe = np.concatenate([values[::3], rng.integers(0, high, 3000, dtype=dtype, endpoint=True)])
    assert np.array_equal(distinct(values), np.unique(values))
    assert distinct(values).dtype == values.dtype
    assert np.array_equal(member(probe, values), np.isin(probe, values))


def test_uint64_ids_beyond_float_precision_stay_apart():
    ids = np.array([2**64 - 1, 2**64 - 2, 2**63 + 1], np.uint64)
    assert member(np.array([2**64 - 3, 2**64 - 1], np.uint64), ids).tolist() == [False, True]


def test_empty_and_lists():
    empty = np.zeros(0, np.uint64)
    assert distinct(empty).dtype == np.uint64 and len(distinct(empty)) == 0
    assert member(np.array([1, 2], np.uint64), empty).tolist() == [False, False]
    assert member(empty, np.array([1], np.uint64)).tolist() == []
    assert member(np.array([0, 3, 5], np.int8), [3, 4]).tolist() == [False, True, False]


def test_whole_keeps_one_chunk_as_it_is_and_joins_several():
    values = pa.array(["a", None, "ccc"])
    assert whole(values) is values
    one = whole(pa.chunked_array([values]))
    assert one.equals(values) and one.buffers()[2].address == values.buffers()[2].address  # not copied
    sliced = pa.chunked_array([values.slice(1)])
    assert whole(sliced).to_pylist() == [None, "ccc"]
    joined = whole(pa.chunked_array([values, pa.array(["d"])]))
    assert isinstance(joined, pa.Array) and joined.to_pylist() == ["a", None, "ccc", "d"]
    assert whole(pa.chunked_array([], pa.string())).to_pylist() == []


def test_spread_puts_values_back_at_their_rows_and_null_elsewhere():
    assert spread(pa.array(["a", "b"]), np.array([3, 1]), 5).to_pylist() == [None, "b", None, "a", None]
    assert spread(pa.array([], pa.string()), np.array([], np.int64), 2).to_pylist() == [None, None]
