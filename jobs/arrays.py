"""Set operations on numpy arrays by sorting, for the stages' id arrays; one Arrow array of a column; values of
some rows spread back over all rows.

numpy 2.4's `np.unique` without `return_*` and `np.isin` of two large arrays take another path (hashing,
a merge of both arrays) that is 10-50x slower than a sort at a million int64 ids (0.7 s against 0.013 s for
`np.unique`, 0.8 s against ~0.1 s for `np.isin`); these give the same results.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted (`np.unique(values)`)."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]]


def member(values: np.ndarray, of: np.ndarray | list) -> np.ndarray:
    """Whether each value is one of `of` (`np.isin(values, of)`): a binary search in `of` sorted, compared in
    `values`' type (uint64 against int64 would meet as float64 and lose precision)."""
    values = np.asarray(values)
    keys = distinct(np.asarray(of, dtype=values.dtype))
    if len(keys) == 0:
        return np.zeros(len(values), bool)
    return keys[np.minimum(np.searchsorted(keys, values), len(keys) - 1)] == values


def whole(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column as one Arrow array: an array or a column of one chunk as it is, else its chunks concatenated.
    `ChunkedArray.combine_chunks` copies even a single chunk, and on this VM fresh memory is what costs: a
    page fault after the kernel handed freed pages back to the host takes up to ~100 us."""
    if isinstance(column, pa.Array):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def spread(values: pa.Array, rows: np.ndarray, n: int) -> pa.Array:
    """An `n`-row array holding `values[i]` at row `rows[i]` and null elsewhere: what a kernel computed for a
    few rows only, put back in the rows' order."""
    position = np.full(n, -1, np.int64)
    position[rows] = np.arange(len(rows))
    return values.take(pa.array(position, mask=position < 0))
