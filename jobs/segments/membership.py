"""Who is in a segment: score percentiles from merged histograms, and the membership rule. Pure.

Percentiles are mid-ranks within a segment (0..100, higher = more likely), computed without collecting
scores in one place: each block turns its scores into per-bin rows (count, lowest and highest score,
`bin_counts`), where a bin is the top 26 bits of the score's order-preserving bit pattern (sign, exponent
and 14 mantissa bits: a relative width of 2^-14, so bins follow the scores wherever they crowd, as log-scale
bins would); partial histograms merge by summing counts and keeping min / max per (segment, bin)
(`merge_histograms`); the merged histogram (one row per occupied bin, not per persona) becomes cumulative
counts per segment (`percentile_lookup`); `percentiles` places each score inside its bin by linear
interpolation between the bin's lowest and highest score. Ties (all scores of a bin equal, common with tree
models) get their exact mid-rank; otherwise the error is at most the share of one bin's rows.

Membership: percentile >= 100 - top_percent, or score >= threshold (`ScoringConfig.membership`). A member
keeps the reasons the scorer found (`jobs.model.reasons`); everyone else's are null.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.config import ScoringConfig

REASONS_TYPE = pa.list_(pa.string())
SCORED_SCHEMA = pa.schema(
    [
        ("persona_id", pa.string()),
        ("segment", pa.string()),
        ("score", pa.float64()),
        ("model_version", pa.string()),
        ("reasons", REASONS_TYPE),
    ]
)
SCORES_SCHEMA = pa.schema(
    [
        ("persona_id", pa.string()),
        ("segment", pa.string()),
        ("score", pa.float64()),
        ("percentile", pa.float64()),
        ("model_version", pa.string()),
        ("member", pa.bool_()),
        ("reasons", REASONS_TYPE),  # members only (null otherwise): up to 3 partner-safe labels, largest first
    ]
)
HISTOGRAM_SCHEMA = pa.schema(
    [("segment", pa.string()), ("bin", pa.int64()), ("count", pa.int64()), ("lo", pa.float64()), ("hi", pa.float64())]
)

# Bins keep the top 26 bits of the 64-bit order key: sign + 11 exponent bits + 14 mantissa bits.
_BIN_SHIFT = np.uint64(64 - 26)
_SIGN = np.uint64(1 << 63)

Lookup = Mapping[str, Mapping[str, np.ndarray]]


def order_keys(scores: np.ndarray) -> np.ndarray:
    """uint64 keys that sort like the float64 scores (negative numbers flipped, positives sign-marked)."""
    bits = np.ascontiguousarray(scores, dtype=np.float64).view(np.uint64)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def score_bins(scores: np.ndarray) -> np.ndarray:
    """The histogram bin of each score (int64, increasing with the score)."""
    return (order_keys(scores) >> _BIN_SHIFT).astype(np.int64)


def bin_counts(batch: pa.Table) -> pa.Table:
    """Map side of the histogram: (segment, bin, count, lowest and highest score in the bin) of one block."""
    if batch.num_rows == 0:
        return HISTOGRAM_SCHEMA.empty_table()
    segments = batch.column("segment").to_numpy(zero_copy_only=False).astype(object)
    scores = batch.column("score").to_numpy()
    out = []
    for segment in np.unique(segments):
        seg_scores = np.sort(scores[segments == segment])
        bins = score_bins(seg_scores)  # sorted too
        starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        ends = np.r_[starts[1:], len(bins)]
        out.append(
            pa.table(
                {
                    "segment": pa.repeat(str(segment), len(starts)),
                    "bin": bins[starts],
                    "count": (ends - starts).astype(np.int64),
                    "lo": seg_scores[starts],
                    "hi": seg_scores[ends - 1],
                },
                schema=HISTOGRAM_SCHEMA,
            )
        )
    return pa.concat_tables(out)


def merge_histograms(*partials: pa.Table) -> pa.Table:
    """Reduce side: sum counts, min lo, max hi per (segment, bin)."""
    rows = [p for p in partials if p.num_rows]  # an empty block may come back without columns
    if not rows:
        return HISTOGRAM_SCHEMA.empty_table()
    merged = (
        pa.concat_tables(rows).group_by(["segment", "bin"]).aggregate([("count", "sum"), ("lo", "min"), ("hi", "max")])
    )
    return merged.select(["segment", "bin", "count_sum", "lo_min", "hi_max"]).rename_columns(HISTOGRAM_SCHEMA.names)


DISTRIBUTION_BINS = 20


def score_distribution(histogram: pa.Table, bins: int = DISTRIBUTION_BINS) -> dict[str, list[int]]:
    """Per segment, the scored personas in `bins` equal-width score bins over [0, 1] (the report's chart and the
    drift check's input), from the merged histogram: each fine bin counts where its lowest score falls (a fine
    bin is 2^-14 of its score wide, so only a bin straddling an edge can land one coarse bin off)."""
    out: dict[str, list[int]] = {}
    if histogram.num_rows == 0:
        return out
    segments = histogram.column("segment").to_numpy(zero_copy_only=False).astype(object)
    where = np.clip((histogram.column("lo").to_numpy() * bins).astype(np.int64), 0, bins - 1)
    counts = histogram.column("count").to_numpy()
    for segment in np.unique(segments):
        sel = segments == segment
        out[str(segment)] = np.bincount(where[sel], weights=counts[sel], minlength=bins).astype(np.int64).tolist()
    return out


def percentile_lookup(histogram: pa.Table) -> dict[str, dict[str, np.ndarray]]:
    """Per segment: occupied bins (sorted), their counts and score range, the count below each bin, the total."""
    lookup: dict[str, dict[str, np.ndarray]] = {}
    if histogram.num_rows == 0:
        return lookup
    segments = histogram.column("segment").to_numpy(zero_copy_only=False).astype(object)
    bins = histogram.column("bin").to_numpy()
    counts = histogram.column("count").to_numpy().astype(np.int64)
    lo, hi = histogram.column("lo").to_numpy(), histogram.column("hi").to_numpy()
    for segment in np.unique(segments):
        sel = np.flatnonzero(segments == segment)
        sel = sel[np.argsort(bins[sel], kind="stable")]
        seg_counts = counts[sel]
        below = np.concatenate([[0], np.cumsum(seg_counts)[:-1]]).astype(np.int64)
        lookup[str(segment)] = {
            "bins": bins[sel],
            "counts": seg_counts,
            "below": below,
            "lo": lo[sel],
            "hi": hi[sel],
            "total": np.int64(seg_counts.sum()),
        }
    return lookup


def percentiles(scores: np.ndarray, table: Mapping[str, np.ndarray]) -> np.ndarray:
    """Mid-rank of each score among the segment's scored personas, as a percent (0..100)."""
    scores = np.asarray(scores, dtype=np.float64)
    bins = score_bins(scores)
    idx = np.searchsorted(table["bins"], bins)
    idx = np.clip(idx, 0, len(table["bins"]) - 1)
    if not np.array_equal(table["bins"][idx], bins):
        raise RuntimeError("a score fell into a bin that the histogram does not have (scores changed between passes)")
    # mid-rank inside the bin: its k scores spread evenly over [lo, hi] at ranks 0.5 .. k-0.5; a bin whose
    # scores are all equal (ties, common with tree models) gets the exact mid-rank k/2
    low, high, count = table["lo"][idx], table["hi"][idx], table["counts"][idx]
    width = high - low
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip(np.nan_to_num((scores - low) / width, nan=0.0), 0.0, 1.0)
    within = np.where(width > 0, 0.5 + frac * (count - 1), count / 2.0)
    ranks = table["below"][idx] + within
    return np.clip(100.0 * ranks / float(table["total"]), 0.0, 100.0)


def membership(scores: np.ndarray, pct: np.ndarray, scoring: ScoringConfig) -> np.ndarray:
    if scoring.membership == "threshold":
        return scores >= scoring.threshold
    return pct >= 100.0 - scoring.top_percent


def assign(batch: pa.Table, lookup: Lookup, scoring: ScoringConfig) -> pa.Table:
    """Percentile and membership of every scored row (SCORED_SCHEMA in, SCORES_SCHEMA out)."""
    if batch.num_rows == 0:
        return SCORES_SCHEMA.empty_table()
    segments = batch.column("segment").to_numpy(zero_copy_only=False).astype(object)
    scores = batch.column("score").to_numpy()
    pct = np.empty(batch.num_rows, dtype=np.float64)
    for segment in np.unique(segments):
        sel = segments == segment
        pct[sel] = percentiles(scores[sel], lookup[str(segment)])
    member = membership(scores, pct, scoring)
    return pa.table(
        {
            "persona_id": batch.column("persona_id"),
            "segment": batch.column("segment"),
            "score": batch.column("score"),
            "percentile": pct,
            "model_version": batch.column("model_version"),
            "member": member,
            "reasons": pc.if_else(pa.array(member), batch.column("reasons"), pa.scalar(None, REASONS_TYPE)),
        },
        schema=SCORES_SCHEMA,
    )
