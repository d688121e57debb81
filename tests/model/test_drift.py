"""Drift between runs: PSI of features (fine histograms grouped by the previous run's deciles) and of scores."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import chi2

from jobs.model.drift import (
    FAMILY_ALPHA,
    drift_alarms,
    feature_bins,
    feature_noise_floors,
    feature_psi,
    merge_feature_bins,
    noise_floor,
    pick_previous,
    procedure,
    psi,
    score_noise_floors,
    score_psi,
)


def histogram(columns: dict[str, np.ndarray], blocks: int = 4) -> pa.Table:
    table = pa.table(columns)
    step = -(-table.num_rows // blocks)
    names = list(columns)
    return merge_feature_bins(*(feature_bins(table.slice(i, step), names) for i in range(0, table.num_rows, step)))


def test_psi_by_hand():
    assert psi([50, 50], [50, 50]) == 0.0
    # shares 0.5/0.5 -> 0.2/0.8: (0.2-0.5) ln(0.4) + (0.8-0.5) ln(1.6)
    assert psi([5, 5], [2, 8]) == pytest.approx(-0.3 * np.log(0.4) + 0.3 * np.log(1.6))
    assert np.isnan(psi([0, 0], [1, 1]))


def test_same_population_is_stable_a_shift_is_not():
    rng = np.random.default_rng(1)
    n = 20_000
    before = histogram({"spend": rng.gamma(2.0, 50.0, n), "orders": rng.poisson(2, n).astype(float)})
    same = histogram({"spend": rng.gamma(2.0, 50.0, n), "orders": rng.poisson(2, n).astype(float)})
    moved = histogram({"spend": rng.gamma(2.0, 80.0, n), "orders": rng.poisson(2, n).astype(float)})
    stable = feature_psi(before, same)
    assert set(stable) == {"spend", "orders"} and max(stable.values()) < 0.01
    shifted = feature_psi(before, moved)
    assert shifted["spend"] > 0.25 and shifted["orders"] < 0.01


def test_missing_values_are_a_bin_of_their_own():
    values = np.arange(1000, dtype=float)
    holes = values.copy()
    holes[:400] = np.nan  # 40% of the values go missing
    assert feature_psi(histogram({"x": values}), histogram({"x": holes}))["x"] > 0.25


def test_score_psi_alarms_and_previous_run_rule():
    scores = score_psi({"a": [10, 10, 0], "b": [5, 5, 5]}, {"a": [10, 10, 0], "b": [0, 5, 10], "c": [1, 1, 1]})
    # crowded scores: the previous run's bins merge by mass ([0-1], [2], [3-4] here), the shares compare per group
    crowded = score_psi({"s": [0, 500, 500, 0, 0]}, {"s": [400, 100, 500, 0, 0]})["s"]
    assert crowded == 0.0
    assert scores["a"] == 0.0 and scores["b"] > 0.25 and "c" not in scores
    alarms = drift_alarms({"spend": 0.4, "orders": 0.01}, scores, 0.25)
    assert alarms[0].startswith("segment b scores: PSI") and alarms[1] == "feature spend: PSI 0.400 > 0.25"
    runs = [
        {"run_id": "2026-03-01", "run_date": "2026-03-01", "status": "succeeded", "finished_at": "a"},
        {"run_id": "2026-03-02", "run_date": "2026-03-02", "status": "failed"},
        {"run_id": "later", "run_date": "2026-03-09", "status": "succeeded"},
        {"run_id": "rerun", "run_date": "2026-03-01", "status": "succeeded", "finished_at": "b"},
        {},
    ]
    assert pick_previous(runs, "2026-03-03", "2026-03-03") == "rerun"  # latest date, then latest finish
    assert pick_previous(runs, "2026-03-01", "2026-03-01") == "rerun"  # not itself
    assert pick_previous(runs[1:3], "x", "2026-03-03") is None


def _population(n: int, seed: int, spend_scale: float = 50.0) -> dict[str, np.ndarray]:
    """One generator, many features: counts, amounts, mostly-missing recencies."""
    rng = np.random.default_rng(seed)
    columns = {f"orders_{i}": rng.poisson(0.5 + i / 4, n).astype(float) for i in range(12)}
    columns |= {f"spend_{i}": rng.gamma(2.0, spend_scale if i == 0 else 50.0, n) for i in range(12)}
    columns |= {f"recency_{i}": np.where(rng.random(n) < 0.7, np.nan, rng.uniform(0, 365, n)) for i in range(6)}
    return columns


def test_two_clean_runs_of_one_generator_raise_no_alarm_a_planted_shift_does():
    threshold = 0.25
    for n in (80, 300, 5000):
        before, after = histogram(_population(n, seed=1)), histogram(_population(n, seed=2))
        values = feature_psi(before, after)
        floors = feature_noise_floors(before, after, tests=len(values))
        assert drift_alarms(values, {}, threshold, floors) == [], n
        if n == 80:  # sampling noise alone passes the bare threshold on small runs: the floor is what holds
            assert drift_alarms(values, {}, threshold)
        moved = histogram(_population(n, seed=2, spend_scale=150.0))
        shifted = feature_psi(before, moved)
        floors = feature_noise_floors(before, moved, tests=len(shifted))
        alarms = drift_alarms(shifted, {}, threshold, floors)
        if n >= 300:  # a tripled spend is caught once the sample can tell it from noise; nothing else moves
            assert [a.split(":")[0] for a in alarms] == ["feature spend_0"], n


def test_noise_floor_shrinks_with_the_sample_and_matches_the_null():
    rng = np.random.default_rng(7)
    shares = np.full(10, 0.1)
    floor = noise_floor(np.full(10, 100.0), np.full(10, 100.0))
    assert noise_floor(np.full(10, 1000.0), np.full(10, 1000.0)) == pytest.approx(floor / 10)
    # two samples of one population pass the floor about FAMILY_ALPHA of the time: never in 300 draws here
    draws = [psi(rng.multinomial(1000, shares), rng.multinomial(1000, shares)) for _ in range(300)]
    assert max(draws) < noise_floor(np.full(10, 100.0), np.full(10, 100.0))
    assert np.mean(draws) == pytest.approx(2 / 1000 * 9, rel=0.25)  # (1/n + 1/m) x (bins - 1)
    # scipy.stats' chi-square quantile, to the bit, for any bins and number of tests
    for bins in (2, 10, 57):
        for tests in (1, 203):
            quantile = chi2.ppf(1.0 - FAMILY_ALPHA / tests, bins - 1)
            n, m = 100.0 * bins, 300.0 * bins
            assert noise_floor(np.full(bins, 100.0), np.full(bins, 300.0), tests) == (1.0 / n + 1.0 / m) * quantile


def test_score_drift_is_judged_only_between_comparable_models():
    card = {
        "model_version": "v1",
        "feature_names": ["a", "b"],
        "config_hash": "c1",
        "champion": {"fits": {"production": {"procedure": "xgboost", "as_of": "2026-01-01"}}},
    }
    refit = card | {"model_version": "v2", "champion": {"fits": {"production": {"procedure": "xgboost"}}}}
    assert procedure(card) == procedure(refit)  # a refit of the same procedure is comparable
    assert procedure(card) != procedure(card | {"champion": {"fits": {"production": {"procedure": "rfm"}}}})
    assert procedure(card) != procedure(card | {"feature_names": ["a"]})
    assert procedure({"model_version": None}) is None and procedure(None) is None
    previous, current = {"s": [500, 500, 0, 0]}, {"s": [0, 0, 500, 500]}
    floors = score_noise_floors(previous, current, tests=1)
    assert drift_alarms({}, score_psi(previous, current), 0.25, score_floors=floors)[0].startswith("segment s")
