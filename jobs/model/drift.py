"""Drift between runs: the population stability index (PSI) of every feature and of each segment's scores. Pure.

    PSI = sum over bins of (a - e) * ln(a / e)     e, a: the previous and this run's shares of a bin

(shares floored at `SHARE_FLOOR` so an empty bin does not divide by zero). The usual reading: < 0.1 stable,
0.1-0.25 moderate, > 0.25 a shift worth acting on (`drift.threshold`, an alarm in the report and summary).

Features: each block of the features partition counts its values per fine bin (`feature_bins`: the top 16
bits of the value's order-preserving bit pattern, so bins depend on no data and two runs' histograms line up;
missing values have their own bin), partial histograms merge by summing (a tree of Ray tasks,
`jobs.model.run_figures.feature_histogram`), and `feature_psi` groups the previous run's fine bins into
`GROUPS` bins of about equal mass (deciles, missing apart) and counts both runs in those groups. Scores: the
20 equal-width bins of the scores marker's `distribution` (`jobs.segments.membership.score_distribution`),
grouped the same way by the previous run's mass.

Which run is "previous" (`previous_run`): `drift.previous_run` when set, else the latest other run in the same
ROOT whose summary says it succeeded and whose run date is not after this run's (latest run date, then the
latest finish).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.segments.membership import order_keys

SHARE_FLOOR = 1e-4
GROUPS = 10
MISSING_BIN = -1
FEATURE_HISTOGRAM_SCHEMA = pa.schema([("feature", pa.string()), ("bin", pa.int64()), ("count", pa.int64())])
_SHIFT = np.uint64(64 - 16)


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """PSI of two histograms over the same bins (counts or shares)."""
    e, a = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    if e.sum() <= 0 or a.sum() <= 0:
        return float("nan")
    e = np.maximum(e / e.sum(), SHARE_FLOOR)
    a = np.maximum(a / a.sum(), SHARE_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def feature_bins(batch: pa.Table, names: Sequence[str]) -> pa.Table:
    """Map side: (feature, bin, count) of one block's values (NaN / null: `MISSING_BIN`)."""
    out = []
    for name in names:
        values = pc.fill_null(batch.column(name).cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
        bins = np.full(len(values), MISSING_BIN, np.int64)
        seen = ~np.isnan(values)
        bins[seen] = (order_keys(values[seen]) >> _SHIFT).astype(np.int64)
        uniq, counts = np.unique(bins, return_counts=True)
        out.append(pa.table({"feature": pa.repeat(name, len(uniq)), "bin": uniq, "count": counts.astype(np.int64)}))
    return pa.concat_tables(out) if out else FEATURE_HISTOGRAM_SCHEMA.empty_table()


def merge_feature_bins(*partials: pa.Table) -> pa.Table:
    rows = [p for p in partials if p.num_rows]
    if not rows:
        return FEATURE_HISTOGRAM_SCHEMA.empty_table()
    merged = pa.concat_tables(rows).group_by(["feature", "bin"]).aggregate([("count", "sum")])
    return merged.rename_columns(["feature", "bin", "count"]).cast(FEATURE_HISTOGRAM_SCHEMA)


def _by_feature(histogram: pa.Table) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if histogram.num_rows == 0:
        return out
    features = histogram.column("feature").to_numpy(zero_copy_only=False).astype(object)
    bins, counts = histogram.column("bin").to_numpy(), histogram.column("count").to_numpy()
    for name in np.unique(features):
        sel = np.flatnonzero(features == name)
        sel = sel[np.argsort(bins[sel], kind="stable")]
        out[str(name)] = (bins[sel], counts[sel].astype(np.float64))
    return out


def _grouped(bins: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per group: missing, then the value groups whose lowest fine bins are `edges`."""
    missing = counts[bins == MISSING_BIN].sum()
    seen = bins != MISSING_BIN
    group = np.clip(np.searchsorted(edges, bins[seen], side="right") - 1, 0, len(edges) - 1)
    return np.concatenate([[missing], np.bincount(group, weights=counts[seen], minlength=len(edges))])


def feature_psi(previous: pa.Table, current: pa.Table) -> dict[str, float]:
    """PSI of every feature both histograms hold, over about-equal-mass groups of the previous run's values."""
    before, now = _by_feature(previous), _by_feature(current)
    out = {}
    for name in sorted(before.keys() & now.keys()):
        bins, counts = before[name]
        seen = bins != MISSING_BIN
        edges = _equal_mass_edges(bins[seen], counts[seen])
        out[name] = psi(_grouped(bins, counts, edges), _grouped(*now[name], edges))
    return out


def _equal_mass_edges(bins: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The lowest fine bin of each of about `GROUPS` groups of equal mass (a fine bin is never split)."""
    if not len(bins) or counts.sum() <= 0:
        return np.array([0], np.int64)
    share_before = (np.cumsum(counts) - counts) / counts.sum()
    return bins[np.flatnonzero(np.r_[True, np.diff(np.floor(share_before * GROUPS)) > 0])]


def score_psi(previous: Mapping[str, Sequence[int]], current: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """PSI of each segment's score distribution (the scores markers' `distribution`) that both runs scored, over
    the previous run's bins merged into about-equal-mass groups as for features (scores crowd into a few of the
    equal-width bins; an empty bin would otherwise weigh as much as the floor lets it)."""
    out = {}
    for segment in sorted(previous.keys() & current.keys()):
        before, now = np.asarray(previous[segment], np.float64), np.asarray(current[segment], np.float64)
        bins = np.arange(len(before))
        edges = _equal_mass_edges(bins, before)
        out[segment] = psi(_grouped(bins, before, edges)[1:], _grouped(np.arange(len(now)), now, edges)[1:])
    return out


def drift_alarms(features: Mapping[str, float], scores: Mapping[str, float], threshold: float) -> list[str]:
    """One line per feature or segment whose PSI exceeds the threshold, largest first."""
    over = [(v, f"feature {k}") for k, v in features.items() if v > threshold]
    over += [(v, f"segment {k} scores") for k, v in scores.items() if v > threshold]
    return [f"{what}: PSI {value:.3f} > {threshold:g}" for value, what in sorted(over, reverse=True)]


def pick_previous(runs: Sequence[Mapping[str, Any]], run_id: str, run_date: str) -> str | None:
    """The run id `previous_run` picks from candidates {run_id, run_date, status, finished_at} (see the module)."""
    earlier = [
        r
        for r in runs
        if r.get("run_id") != run_id
        and r.get("status") == "succeeded"
        and r.get("run_date")
        and str(r["run_date"]) <= run_date
    ]
    if not earlier:
        return None
    return max(earlier, key=lambda r: (str(r["run_date"]), str(r.get("finished_at") or "")))["run_id"]
