"""Quality figures: known answers on small vectors; the alarms fire when they must and only then."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.model import quality


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


def test_shuffled_label_alarm():
    quiet = quality.shuffled_label_alarm([0.49, 0.52, 0.50], 2000, 8000)
    assert quiet["alarm"] is False and quiet["roc_auc"] == pytest.approx(0.5033, abs=1e-3)
    assert quiet["tolerance"] == 0.05
    loud = quality.shuffled_label_alarm([0.62, 0.58], 2000, 8000)
    assert loud["alarm"] is True
    # a tiny evaluation set widens the band to 3 standard errors of a random AUC
    tiny = quality.shuffled_label_alarm([0.58], 10, 40)
    assert tiny["tolerance"] > 0.05 and tiny["alarm"] is False
    assert quality.shuffled_label_alarm([], 10, 40)["alarm"] is False
    # runs that disagree widely are noise; runs that agree far from 0.5 are a finding
    assert quality.shuffled_label_alarm([0.36, 0.52, 0.45], 2000, 8000)["alarm"] is False
    assert quality.shuffled_label_alarm([0.66, 0.67, 0.65], 2000, 8000)["alarm"] is True


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


def test_model_alarms_name_what_is_wrong():
    shuffled_ok = quality.shuffled_label_alarm([0.5], 2000, 8000)
    clean = {"flagged": []}
    good = {"roc_auc": 0.8}
    assert quality.beats_baseline(good, {"roc_auc": 0.7}) and not quality.beats_baseline(good, {"roc_auc": None})
    assert quality.model_alarms(good, True, shuffled_ok, clean, True) == []
    loud = quality.shuffled_label_alarm([0.66, 0.67, 0.65], 2000, 8000)
    leaky = {"flagged": [{"feature": "f1", "auc": 0.99}]}
    assert quality.model_alarms(good, False, loud, leaky, False) == [
        "shuffled-label AUC 0.660",
        "leakage: f1",
        "model does not beat RFM",
        "evaluation label window not fully observed",
    ]
    assert quality.model_alarms({"roc_auc": None}, False, shuffled_ok, clean, True) == [
        "evaluation set has one class only"
    ]
