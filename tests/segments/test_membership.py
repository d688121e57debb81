"""Percentiles from merged per-block histograms (within one bin's share of rows of the exact mid-rank) and
the membership rule."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy.stats import rankdata

from jobs.config import ScoringConfig
from jobs.segments.membership import (
    bin_counts,
    membership,
    merge_histograms,
    percentile_lookup,
    percentiles,
    score_bins,
)


def test_percentiles_from_merged_block_histograms():
    rng = np.random.default_rng(5)
    # crowded near 0 (a rare segment), a tie cluster, and a few negatives (order keys handle the sign)
    values = np.concatenate([rng.beta(0.5, 60, 20000), np.full(500, 0.25), -rng.random(50), rng.random(1000)])
    rng.shuffle(values)
    blocks = np.array_split(values, 7)
    partial = [bin_counts(pa.table({"segment": ["s"] * len(b), "score": b})) for b in blocks]
    lookup = percentile_lookup(merge_histograms(*partial))["s"]
    assert lookup["total"] == len(values)
    pct = percentiles(values, lookup)
    exact = 100 * (rankdata(values, method="average") - 0.5) / len(values)
    assert np.max(np.abs(pct - exact)) < 0.05  # at most one bin's share of rows (here < 0.05%)
    np.testing.assert_allclose(pct[values == 0.25], exact[values == 0.25])  # ties: the exact mid-rank
    order = np.argsort(values, kind="stable")
    assert np.all(np.diff(pct[order]) >= 0), "percentile never decreases with the score"
    assert np.all(np.diff(score_bins(values[order])) >= 0)
    top = membership(values, pct, ScoringConfig(top_percent=5))
    assert np.sum(top != (exact >= 95)) <= 0.001 * len(values)  # ties at the cut are all in or all out
    # merging is associative, and an empty block (even one without columns) changes nothing
    nested = merge_histograms(merge_histograms(*partial[:3]), merge_histograms(*partial[3:]), pa.table({}))
    assert nested.sort_by([("bin", "ascending")]).equals(merge_histograms(*partial).sort_by([("bin", "ascending")]))
    assert merge_histograms().num_rows == 0
