"""Quality figures: known answers on small vectors; the alarms fire when they must and only then."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.model import quality

# References written from the definitions, slow and plain (the O(n log n) forms in `quality` are checked against
# them). Not scikit-learn: xgboost imports it whenever it is installed (1.2 s in every worker process that
# imports xgboost, Ray Train's included), so the test venv does not have it.


def roc_auc_by_pairs(y: np.ndarray, score: np.ndarray) -> float:
    """The share of (positive, negative) pairs the score puts in the right order, a tie counting one half."""
    positives, negatives = score[y == 1][:, None], score[y == 0][None, :]
    above, ties = int((positives > negatives).sum()), int((positives == negatives).sum())
    return (above + 0.5 * ties) / (positives.size * negatives.size)


def average_precision_by_thresholds(y: np.ndarray, score: np.ndarray) -> float:
    """sum over the distinct scores t, highest first, of (recall at t - recall at the previous t) x precision
    at t, where a row is selected at t when its score is >= t (scikit-learn's average_precision_score)."""
    thresholds = np.unique(score)[::-1]
    selected = score[None, :] >= thresholds[:, None]
    true_positives = (selected & (y == 1)[None, :]).sum(axis=1)
    precision = true_positives / selected.sum(axis=1)
    recall = true_positives / (y == 1).sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def test_perfect_and_constant_scores():
    y = np.array([1] * 10 + [0] * 90)
    perfect = quality.binary_metrics(y, np.r_[np.full(10, 0.9), np.full(90, 0.1)])
    assert perfect["roc_auc"] == 1.0 and perfect["pr_auc"] == pytest.approx(1.0)
    assert perfect["base_rate"] == pytest.approx(0.1)
    assert perfect["capture"]["10%"] == pytest.approx(1.0) and perfect["lift"]["10%"] == pytest.approx(10.0)
    assert perfect["capture"]["5%"] == pytest.approx(0.5) and perfect["lift"]["5%"] == pytest.approx(10.0)
    assert perfect["capture"]["20%"] == pytest.approx(1.0) and perfect["lift"]["20%"] == pytest.approx(5.0)
    assert perfect["brier"] == pytest.approx(0.01)
    # ties are split evenly: a constant score targets at random
    flat = quality.binary_metrics(y, np.full(100, 0.1))
    assert flat["roc_auc"] == 0.5
    for k in ("1%", "5%", "10%", "20%"):
        assert flat["lift"][k] == pytest.approx(1.0)
    assert flat["capture"]["20%"] == pytest.approx(0.2)
    assert flat["gain_curve"]["captured"][-1] == pytest.approx(1.0)
    assert flat["reliability"] == [
        {
            "lo": 0.1,
            "hi": pytest.approx(0.2),
            "rows": 100,
            "mean_predicted": pytest.approx(0.1),
            "observed": pytest.approx(0.1),
        }
    ]


def test_lift_on_a_known_ranking():
    # 1000 rows, 100 positives; the top 50 by score hold 20 positives
    rng = np.random.default_rng(0)
    y = np.zeros(1000, dtype=int)
    score = np.linspace(1, 0, 1000)
    y[rng.choice(50, 20, replace=False)] = 1
    y[50 + rng.choice(950, 80, replace=False)] = 1
    m = quality.binary_metrics(y, score)
    assert m["capture"]["5%"] == pytest.approx(0.2)
    assert m["lift"]["5%"] == pytest.approx((20 / 50) / 0.1)
    assert sum(b["rows"] for b in m["reliability"]) == 1000
    assert 0.5 < m["roc_auc"] < 1


def test_one_class_gives_no_auc_rather_than_an_error():
    m = quality.binary_metrics(np.zeros(20), np.linspace(0, 1, 20))
    assert m["roc_auc"] is None and m["pr_auc"] is None and m["capture"]["10%"] is None


def test_chance_test_permutes_the_evaluation_labels():
    rng = np.random.default_rng(3)
    y = (rng.random(5000) < 0.05).astype(int)
    signal = y * 1.0 + rng.normal(size=5000)
    found = quality.chance_test(y, signal, runs=50, seed=1)
    assert found["better"] and found["z"] > 10
    # the observed figure is the average precision, ties included
    coarse = np.round(signal)
    assert quality.chance_test(y, coarse, runs=5)["pr_auc"] == pytest.approx(
        quality.binary_metrics(y, coarse)["pr_auc"]
    )
    # a score that carries real signal of ANOTHER label, judged against these labels: no better than chance
    other = (rng.random(5000) < 0.05).astype(int)
    unrelated = quality.chance_test(y, other * 2.0 + rng.normal(size=5000), runs=50, seed=1)
    assert not unrelated["better"] and abs(unrelated["pr_auc"] - unrelated["null_mean"]) < 4 * unrelated["null_std"]
    assert unrelated["null_mean"] == pytest.approx(0.05, abs=0.02)  # the null of PR-AUC is the base rate
    assert quality.chance_test(np.zeros(10), np.arange(10.0))["better"] is False


def test_leakage_check_flags_a_feature_that_knows_the_label():
    rng = np.random.default_rng(1)
    y = (rng.random(2000) < 0.2).astype(int)
    columns = {
        "honest": y * 0.5 + rng.normal(size=2000),
        "leaky": y + rng.normal(scale=0.01, size=2000),
        "inverse_leak": -y.astype(float),
        "mostly_missing": np.where(rng.random(2000) < 0.9, np.nan, 1.0),
    }
    result = quality.leakage_check(columns, y)
    flagged = {f["feature"] for f in result["flagged"]}
    assert flagged == {"leaky", "inverse_leak"}
    assert result["top_features"][0]["feature"] in flagged
    assert quality.leakage_check(columns, np.zeros(2000))["flagged"] == []


def test_gain_importance_shares():
    ranked = quality.gain_importance({"a": 1.0, "b": 3.0, "c": 0.0})
    assert [r["feature"] for r in ranked] == ["b", "a", "c"]
    assert sum(r["share"] for r in ranked) == pytest.approx(1.0)


def _persona_windows(n: int, seed: int):
    """Personas with a steady propensity: purchases in an older stretch, in the past label window (ending at
    the cut-off) and in the future one (after it)."""
    rng = np.random.default_rng(seed)
    propensity = rng.gamma(0.5, 1.0, size=n)
    older, past, future = (rng.poisson(propensity * k) for k in (3.0, 1.0, 1.0))
    return rng, propensity, older, past, future


def _history_features(rng, propensity, history, honest: int) -> dict[str, np.ndarray]:
    """Honest features: counts over the history before the cut-off (views, carts, orders of several windows
    and noise levels, a recency with missing values) and pure noise."""
    n = len(propensity)
    columns = {f"noise_{i}": rng.normal(size=n) for i in range(10)}
    for i in range(honest):
        columns[f"views_{i}"] = rng.poisson(propensity * (2.0 + i)).astype(float)
    for i in range(3):
        columns[f"orders_{i}"] = (history + rng.poisson(0.3 * (i + 1), size=n)).astype(float)
    columns["recency_days"] = np.where(history > 0, rng.exponential(60.0 / (1.0 + propensity)), np.nan)
    return columns


def test_a_feature_that_knows_the_future_better_than_the_past_is_flagged():
    rng, propensity, older, past, future = _persona_windows(4000, seed=2)
    y, past_y = (future > 0).astype(int), (past > 0).astype(int)
    columns = _history_features(rng, propensity, older + past, honest=10)
    # peeks: part of the purchases AFTER the cut-off; far from deciding the label on its own (AUC < 0.95)
    columns["purchases_next_week"] = rng.binomial(future, 0.7).astype(float)
    result = quality.leakage_check(columns, y, past_y=past_y)
    flagged = {f["feature"]: f for f in result["flagged"]}
    assert set(flagged) == {"purchases_next_week"}
    peek = flagged["purchases_next_week"]
    assert peek["kind"] == "future_over_past" and peek["pair"] == "segment" and peek["auc"] < quality.LEAKAGE_AUC
    assert peek["auc"] > peek["past_auc"] and peek["z"] > result["future_over_past"]["z_needed"]
    assert result["future_over_past"]["flagged"] == 1
    # without past labels only the label-AUC check runs; with one-class past labels the check says why not
    assert quality.leakage_check(columns, y)["flagged"] == []
    assert "note" in quality.leakage_check(columns, y, past_y=np.zeros(4000))["future_over_past"]


def test_the_future_over_past_check_stays_quiet_on_honest_features_of_many_samples():
    for seed in range(30):
        n = (500, 2000, 8000)[seed % 3]
        rng, propensity, older, past, future = _persona_windows(n, seed=100 + seed)
        y, past_y = (future > 0).astype(int), (past > 0).astype(int)
        columns = _history_features(rng, propensity, older + past, honest=10)
        assert quality.leakage_check(columns, y, past_y=past_y)["flagged"] == [], seed


def _lovers(n: int, seed: int):
    """A segment whose eligibility is decided from the past window's own events, like category lovers:
    eligible = bought in the history (which includes the past label window). The past label is then partly
    fixed by the rule, so every honest behavioural feature predicts it worse than the future label: a
    systematic, real gap shared by the honest features."""
    rng, propensity, older, past, future = _persona_windows(n, seed)
    eligible = (older + past) > 0
    columns = _history_features(rng, propensity, older + past, honest=10)
    columns = {k: v[eligible] for k, v in columns.items()}
    return rng, columns, (future[eligible] > 0).astype(int), (past[eligible] > 0).astype(int), future[eligible]


def test_honest_features_with_a_shared_systematic_gap_stay_quiet_at_any_size():
    for n in (3_000, 30_000, 300_000):
        _, columns, y, past_y, _ = _lovers(n, seed=7)
        result = quality.leakage_check(columns, y, past_y=past_y)
        assert result["flagged"] == [], (n, result["future_over_past"]["largest"][:2])
        judged = result["future_over_past"]["pairs"]["segment"]
        assert judged["centre"] > 0  # the honest gap is systematic: future above past
    # the old rule (a gap against its own standard error) fires on the same honest features once rows grow
    top = result["future_over_past"]["largest"][0]
    assert top["gap"] / top["se"] > result["future_over_past"]["z_needed"]


def test_a_planted_future_feature_is_caught_beside_the_systematic_gap():
    for n in (3_000, 30_000):
        rng, columns, y, past_y, future = _lovers(n, seed=8)
        columns["purchases_next_week"] = rng.binomial(future, 0.7).astype(float)
        flagged = quality.leakage_check(columns, y, past_y=past_y)["flagged"]
        assert [f["feature"] for f in flagged] == ["purchases_next_week"], n


def test_a_virgin_style_segment_is_judged_on_the_reference_pair():
    # eligibility makes every past label 0 (never bought in the category): the segment's own pair cannot be
    # judged, the reference pair (any purchase after vs before the cut-off, defined for everyone) can
    rng, propensity, older, past, future = _persona_windows(6000, seed=9)
    eligible = (older + past) > 0
    columns = _history_features(rng, propensity, older + past, honest=10)
    columns = {k: v[eligible] for k, v in columns.items()}
    y = (rng.binomial(future[eligible], 0.2) > 0).astype(int)  # a first purchase in the category
    past_y = np.zeros(int(eligible.sum()), dtype=int)
    reference = ((future[eligible] > 0).astype(int), (past[eligible] > 0).astype(int))
    alone = quality.leakage_check(columns, y, past_y=past_y)
    assert alone["flagged"] == [] and "segment" in alone["future_over_past"]["note"]
    clean = quality.leakage_check(columns, y, past_y=past_y, reference=reference)
    assert clean["flagged"] == [] and set(clean["future_over_past"]["pairs"]) == {"reference"}
    columns["purchases_next_week"] = rng.binomial(future[eligible], 0.7).astype(float)
    planted = quality.leakage_check(columns, y, past_y=past_y, reference=reference)
    assert [(f["feature"], f["pair"]) for f in planted["flagged"]] == [("purchases_next_week", "reference")]


def test_auc_placements_agree_with_the_pairs_and_the_bootstrap():
    rng = np.random.default_rng(5)
    y = (rng.random(3000) < 0.2).astype(int)
    x = np.round(y * 0.7 + rng.normal(size=3000), 1)  # ties too
    auc, influence = quality.auc_placements(x, y)
    assert auc == pytest.approx(roc_auc_by_pairs(y, x))
    draws = [rng.integers(0, 3000, 3000) for _ in range(300)]
    bootstrap_se = np.std([quality.rank_auc(x[i], y[i]) for i in draws])  # rank_auc = the pairs: a test below
    assert influence.std(ddof=1) / np.sqrt(3000) == pytest.approx(bootstrap_se, rel=0.2)
    # the O(rows) form the check uses on its few rate levels gives the same figures
    levels = np.digitize(x, np.quantile(x, np.linspace(0, 1, 9)[1:-1]))
    counts = np.bincount(levels * 2 + y, minlength=2 * (levels.max() + 1)).reshape(-1, 2)
    fast_auc, per_cell = quality._level_influence(counts)
    slow_auc, slow_influence = quality.auc_placements(levels.astype(float), y)
    assert fast_auc == pytest.approx(slow_auc) and np.allclose(per_cell[levels, y], slow_influence)
    assert quality._spread(per_cell, counts) == pytest.approx(slow_influence.std(ddof=1), rel=1e-12)


def test_binary_metrics_agree_with_the_definitions_with_ties_and_rare_positives():
    rng = np.random.default_rng(3)
    for trial in range(100):
        n = int(rng.integers(2, 3000))
        y = (rng.random(n) < rng.uniform(0.001, 0.9)).astype(np.int64)
        y[:2] = [0, 1]
        p = rng.random(n) if trial % 2 else np.round(rng.random(n), 1)  # heavy ties every other trial
        m = quality.binary_metrics(y, p)
        assert abs(m["roc_auc"] - roc_auc_by_pairs(y, p)) < 1e-12
        assert abs(m["pr_auc"] - average_precision_by_thresholds(y, p)) < 1e-12
        assert abs(m["brier"] - np.mean((p - y) ** 2)) < 1e-12


def test_rank_auc_equals_the_pairs_with_ties_and_at_the_extremes():
    rng = np.random.default_rng(11)
    for trial in range(200):
        n = int(rng.integers(2, 2000))
        y = (rng.random(n) < rng.uniform(0.02, 0.98)).astype(np.int64)
        y[:2] = [0, 1]  # both classes
        levels = int(rng.integers(1, 12))  # heavy ties: a handful of distinct values, one value at times
        x = rng.integers(0, levels, n) + 0.3 * y * (trial % 3 == 0)
        assert abs(quality.rank_auc(x.astype(float), y) - roc_auc_by_pairs(y, x)) < 1e-12
        x = rng.normal(size=n) + y
        assert abs(quality.rank_auc(x, y) - roc_auc_by_pairs(y, x)) < 1e-12
    y = np.array([0] * 7 + [1] * 3)
    separating = np.r_[np.full(7, -2.0), np.arange(3.0)]
    assert quality.rank_auc(separating, y) == 1.0 and quality.rank_auc(-separating, y) == 0.0
    assert quality.rank_auc(np.ones(10), y) == 0.5
