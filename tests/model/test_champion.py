"""Champion selection: the acceptable candidate with the best PR-AUC, a margin to replace the incumbent, no
candidate with an alarm, nothing that loses to the RFM baseline, and `rejected` when nothing is acceptable."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.model import champion, quality


def entry(pr_auc, *, better=True, null_std=0.005, alarms=(), roc_auc=0.8):
    return {
        "pr_auc": pr_auc,
        "roc_auc": roc_auc,
        "chance": {"null_mean": 0.05, "null_std": null_std, "z": 9.0 if better else 1.0, "better": better},
        "alarms": list(alarms),
    }


def test_the_lookalike_must_beat_the_baseline_by_the_margin():
    chosen, why = champion.choose({"xgboost": entry(0.41), "rfm": entry(0.40)}, "rfm", 0.05)
    assert chosen == "rfm" and "kept" in why
    chosen, why = champion.choose({"xgboost": entry(0.45), "rfm": entry(0.40)}, "rfm", 0.05)
    assert chosen == "xgboost" and "beats rfm" in why
    # the margin is at least the figure's noise at this evaluation size
    assert champion.choose({"xgboost": entry(0.45, null_std=0.08), "rfm": entry(0.40)}, "rfm", 0.05)[0] == "rfm"


def test_the_previous_champion_is_the_incumbent_and_nothing_that_loses_to_rfm_wins():
    candidates = {"xgboost": entry(0.44), "rfm": entry(0.40), "previous": entry(0.43)}
    assert champion.choose(candidates, "previous", 0.05)[0] == "previous"
    candidates["xgboost"] = entry(0.50)
    assert champion.choose(candidates, "previous", 0.05)[0] == "xgboost"
    # a previous model that now loses to RFM is refused; its place goes to the baseline
    candidates = {"xgboost": entry(0.41), "rfm": entry(0.40), "previous": entry(0.30)}
    chosen, why = champion.choose(candidates, "previous", 0.05)
    assert chosen == "rfm"


def test_alarms_and_chance_refuse_a_candidate_and_nothing_acceptable_rejects():
    leaky = entry(0.95, alarms=["leakage: f1"])
    assert champion.choose({"xgboost": leaky, "rfm": entry(0.40)}, "rfm", 0.02)[0] == "rfm"
    chosen, why = champion.choose({"xgboost": entry(0.07, better=False), "rfm": entry(0.06, better=False)}, "rfm", 0.02)
    assert chosen is None and why.startswith("no acceptable candidate") and "not above chance" in why
    chosen, why = champion.choose({"xgboost": leaky, "rfm": entry(None)}, "rfm", 0.02)
    assert chosen is None and "leakage: f1" in why
    # the baseline not above chance: the look-alike that is wins outright
    chosen, _ = champion.choose({"xgboost": entry(0.20), "rfm": entry(0.06, better=False)}, "rfm", 0.02)
    assert chosen == "xgboost"


def test_candidate_alarms_name_leaks_in_its_own_features_and_implausible_figures():
    leakage = {"flagged": [{"feature": "peek", "auc": 0.99}]}
    assert champion.candidate_alarms({"roc_auc": 0.8}, leakage, ["orders_365d", "peek"]) == ["leakage: peek"]
    assert champion.candidate_alarms({"roc_auc": 0.8}, leakage, ["orders_365d"]) == []
    (alarm,) = champion.candidate_alarms({"roc_auc": 0.99}, {"flagged": []}, ["a"])
    assert alarm.startswith("implausible out-of-time ROC-AUC 0.990")


def test_a_feature_peeking_after_the_cut_off_keeps_a_virgin_segment_candidate_from_export():
    # a category-virgin-like segment: every past label is 0 (eligibility), so only the reference pair (any
    # purchase after vs before the cut-off) can judge it; the look-alike uses a peeking feature, RFM does not
    rng = np.random.default_rng(3)
    n = 5000
    propensity = rng.gamma(0.5, 1.0, size=n)
    past, future = rng.poisson(propensity), rng.poisson(propensity)
    columns = {f"views_{i}": rng.poisson(propensity * (2.0 + i)).astype(float) for i in range(8)}
    columns |= {f"noise_{i}": rng.normal(size=n) for i in range(5)}
    columns["orders_365d"] = (past + rng.poisson(propensity * 3)).astype(float)
    columns["purchases_next_week"] = rng.binomial(future, 0.7).astype(float)
    y = (rng.binomial(future, 0.2) > 0).astype(int)
    reference = ((future > 0).astype(int), (past > 0).astype(int))
    leakage = quality.leakage_check(columns, y, past_y=np.zeros(n, dtype=int), reference=reference)
    (alarm,) = champion.candidate_alarms({"roc_auc": 0.8}, leakage, list(columns))
    assert alarm.startswith("leakage, knows the future better than the past: purchases_next_week (reference label")
    assert champion.candidate_alarms({"roc_auc": 0.7}, leakage, ["orders_365d"]) == []
    xgb, rfm = entry(0.5, alarms=[alarm]), entry(0.3)
    assert champion.choose({"xgboost": xgb, "rfm": rfm}, "rfm", 0.02)[0] == "rfm"


@pytest.mark.parametrize("margin", [0.0, 0.02])
def test_ties_go_to_the_incumbent(margin):
    assert champion.choose({"xgboost": entry(0.40), "rfm": entry(0.40)}, "rfm", margin)[0] == "rfm"


def test_candidate_entry_holds_each_figure_once():
    entry = champion.candidate_entry({"pr_auc": 0.3, "roc_auc": 0.8, "base_rate": 0.1}, {"better": True}, [], ["a"])
    assert entry["pr_auc"] == 0.3 and entry["roc_auc"] == 0.8 and list(entry)[0] == champion.PRIMARY_METRIC
