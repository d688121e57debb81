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

**When it is an alarm.** PSI measured on samples is positive even between two samples of one population:
for shares from n and m rows over B bins it is about (1/n + 1/m) times a chi-square with B - 1 degrees of
freedom. So a PSI is an alarm only above both `drift.threshold` and its **noise floor** (`noise_floor`: that
chi-square's quantile at a family-wise false-alarm rate of `FAMILY_ALPHA`, Bonferroni-split over every PSI
compared): a small run cannot cry wolf on sampling noise, a large one still needs a shift worth acting on.
A segment's **score** PSI is an alarm only when both runs scored it with a comparable model (`procedure`:
the same production procedure, feature names and training configuration; a refit of it is comparable);
when the champion changed (rfm -> xgboost, other features, another config) the scores move because the
model did, and the PSI is reported (`scores_not_comparable`), not alarmed.

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
from scipy.special import gammaincinv

from jobs.segments.membership import order_keys

SHARE_FLOOR = 1e-4
FAMILY_ALPHA = 0.001
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


def _feature_groups(previous: pa.Table, current: pa.Table) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{feature: (previous counts, current counts)} over about-equal-mass groups of the previous run's values."""
    before, now = _by_feature(previous), _by_feature(current)
    out = {}
    for name in sorted(before.keys() & now.keys()):
        bins, counts = before[name]
        seen = bins != MISSING_BIN
        edges = _equal_mass_edges(bins[seen], counts[seen])
        out[name] = (_grouped(bins, counts, edges), _grouped(*now[name], edges))
    return out


def feature_psi(previous: pa.Table, current: pa.Table) -> dict[str, float]:
    """PSI of every feature both histograms hold, over about-equal-mass groups of the previous run's values."""
    return {name: psi(e, a) for name, (e, a) in _feature_groups(previous, current).items()}


def feature_noise_floors(previous: pa.Table, current: pa.Table, tests: int) -> dict[str, float]:
    """The noise floor (`noise_floor`) of every feature's PSI, `tests` PSIs compared in all."""
    return {name: noise_floor(e, a, tests) for name, (e, a) in _feature_groups(previous, current).items()}


def noise_floor(expected: Sequence[float], actual: Sequence[float], tests: int = 1) -> float:
    """The PSI two samples of ONE population exceed with probability FAMILY_ALPHA / tests: (1/n + 1/m) times
    the chi-square quantile with (occupied bins - 1) degrees of freedom (n, m: the two histograms' rows)."""
    e, a = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    n, m = e.sum(), a.sum()
    bins = int(np.count_nonzero((e + a) > 0))
    if n <= 0 or m <= 0 or bins < 2:
        return 0.0
    # the chi-square quantile as scipy.stats.chi2.ppf computes it, without importing scipy.stats (~0.5 s)
    quantile = 2.0 * gammaincinv((bins - 1) / 2.0, 1.0 - FAMILY_ALPHA / max(1, tests))
    return float((1.0 / n + 1.0 / m) * quantile)


def _equal_mass_edges(bins: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The lowest fine bin of each of about `GROUPS` groups of equal mass (a fine bin is never split)."""
    if not len(bins) or counts.sum() <= 0:
        return np.array([0], np.int64)
    share_before = (np.cumsum(counts) - counts) / counts.sum()
    return bins[np.flatnonzero(np.r_[True, np.diff(np.floor(share_before * GROUPS)) > 0])]


def _score_groups(
    previous: Mapping[str, Sequence[int]], current: Mapping[str, Sequence[int]]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for segment in sorted(previous.keys() & current.keys()):
        before, now = np.asarray(previous[segment], np.float64), np.asarray(current[segment], np.float64)
        bins = np.arange(len(before))
        edges = _equal_mass_edges(bins, before)
        out[segment] = (_grouped(bins, before, edges)[1:], _grouped(np.arange(len(now)), now, edges)[1:])
    return out


def score_psi(previous: Mapping[str, Sequence[int]], current: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """PSI of each segment's score distribution (the scores markers' `distribution`) that both runs scored, over
    the previous run's bins merged into about-equal-mass groups as for features (scores crowd into a few of the
    equal-width bins; an empty bin would otherwise weigh as much as the floor lets it)."""
    return {segment: psi(e, a) for segment, (e, a) in _score_groups(previous, current).items()}


def score_noise_floors(
    previous: Mapping[str, Sequence[int]], current: Mapping[str, Sequence[int]], tests: int
) -> dict[str, float]:
    """The noise floor of each segment's score PSI (`noise_floor`), `tests` PSIs compared in all."""
    return {segment: noise_floor(e, a, tests) for segment, (e, a) in _score_groups(previous, current).items()}


def procedure(card: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What makes two runs' scores of a segment comparable: the exported model's production procedure (the
    previous champion kept counts as the procedure it came from), its feature names and the training
    configuration hash. None when the card exports nothing."""
    if not card or not card.get("model_version"):
        return None
    production = ((card.get("champion") or {}).get("fits") or {}).get("production") or {}
    return {
        "procedure": production.get("procedure"),
        "feature_names": list(card.get("feature_names") or []),
        "config_hash": card.get("config_hash"),
    }


def drift_alarms(
    features: Mapping[str, float],
    scores: Mapping[str, float],
    threshold: float,
    floors: Mapping[str, float] | None = None,
    score_floors: Mapping[str, float] | None = None,
) -> list[str]:
    """One line per feature or segment whose PSI exceeds the threshold and its noise floor (when given),
    largest first. `scores` should hold only the segments whose models are comparable (`procedure`)."""
    floors, score_floors = floors or {}, score_floors or {}

    def bar(value: float, floor: float | None) -> str | None:
        needed = max(threshold, floor or 0.0)
        if not value > needed:
            return None
        return f"PSI {value:.3f} > {threshold:g}" + (
            f" (noise floor {floor:.3f})" if floor and floor > threshold else ""
        )

    over = [(v, f"feature {k}", bar(v, floors.get(k))) for k, v in features.items()]
    over += [(v, f"segment {k} scores", bar(v, score_floors.get(k))) for k, v in scores.items()]
    return [f"{what}: {why}" for value, what, why in sorted(over, key=lambda item: -item[0]) if why]


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
