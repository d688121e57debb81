"""Quality figures of a look-alike model: metrics, lift, alarms, the leakage check, importance. Pure.

Numpy arrays in, JSON-able dicts out (`jobs.model.report` draws them). Metrics come from scikit-learn.

Figures for one score vector against 0/1 labels (`binary_metrics`):
* ROC-AUC, PR-AUC (average precision) next to the base rate (the PR-AUC of a random score);
* lift and capture in the top 1 / 5 / 10 / 20 % of the population by score (ties are split evenly:
  the expected value under random tie-breaking, so a constant score gets capture = share, lift = 1);
* Brier score and reliability bins (mean predicted probability vs observed rate per probability decile);
* the cumulative gain curve (share of positives captured vs share of population targeted).

Alarms:
* `shuffled_label_alarm`: a model trained on shuffled labels must score AUC about 0.5 out of time; it
  fires when |AUC - 0.5| > 0.05 (widened to 3 standard errors of a random AUC when the evaluation set
  is too small for 0.05 to mean anything, so a tiny test set does not cry wolf);
* `leakage_check`: any single feature whose own AUC is above 0.95 (or below 0.05) is flagged: a feature
  that alone nearly decides the label usually sees the label window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

TOP_FRACTIONS = (0.01, 0.05, 0.10, 0.20)
CURVE_POINTS = 50
RELIABILITY_BINS = 10
SHUFFLED_TOLERANCE = 0.05
LEAKAGE_AUC = 0.95


def pct_label(fraction: float) -> str:
    """'10%' for 0.10: the keys of the lift and capture figures."""
    return f"{fraction * 100:g}%"


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def gain_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(people targeted, positives captured) at the end of every tie group of the score, from (0, 0).

    Between two points the expected capture grows linearly (random order inside a tie group).
    """
    order = np.argsort(-score, kind="stable")
    s, t = score[order], y[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if len(s) else np.array([], dtype=np.int64)
    cum = np.cumsum(t)
    people = np.r_[0, ends + 1].astype(np.float64)
    captured = np.r_[0, cum[ends] if len(ends) else []].astype(np.float64)
    return people, captured


def captured_at(people: np.ndarray, captured: np.ndarray, k: np.ndarray | float) -> np.ndarray:
    return np.interp(k, people, captured)


def binary_metrics(
    y: np.ndarray, score: np.ndarray, *, calibrated: bool = True, fractions: Sequence[float] = TOP_FRACTIONS
) -> dict[str, Any]:
    """Every figure of one score against 0/1 labels; `calibrated` adds Brier score and reliability bins."""
    y = np.asarray(y, dtype=np.int64)
    score = np.asarray(score, dtype=np.float64)
    n, positives = int(len(y)), int(y.sum())
    base_rate = positives / n if n else None
    out: dict[str, Any] = {"rows": n, "positives": positives, "base_rate": base_rate}
    both = 0 < positives < n
    out["roc_auc"] = _finite(roc_auc_score(y, score)) if both else None
    out["pr_auc"] = _finite(average_precision_score(y, score)) if both else None
    people, captured = gain_points(y, score) if n else (np.zeros(1), np.zeros(1))
    out["lift"], out["capture"] = {}, {}
    for f in fractions:
        k = max(1.0, math.ceil(f * n)) if n else 0.0
        got = float(captured_at(people, captured, k)) if n else 0.0
        capture = got / positives if positives else None
        out["capture"][pct_label(f)] = capture
        out["lift"][pct_label(f)] = (got / k) / base_rate if positives and k else None
    shares = np.linspace(0, 1, CURVE_POINTS + 1)
    curve = captured_at(people, captured, shares * n) / positives if positives else shares
    out["gain_curve"] = {
        "population": [round(float(x), 4) for x in shares],
        "captured": [round(float(c), 5) for c in curve],
    }
    if calibrated:
        p = np.clip(score, 0.0, 1.0)
        out["brier"] = _finite(brier_score_loss(y, p)) if n else None
        out["mean_predicted"] = float(p.mean()) if n else None
        out["reliability"] = reliability_bins(y, p)
    return out


def reliability_bins(y: np.ndarray, p: np.ndarray, bins: int = RELIABILITY_BINS) -> list[dict[str, Any]]:
    """Equal-width probability bins: mean predicted, observed positive rate and rows of each (empty skipped)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        sel = which == b
        count = int(sel.sum())
        if count:
            out.append(
                {
                    "lo": float(edges[b]),
                    "hi": float(edges[b + 1]),
                    "rows": count,
                    "mean_predicted": float(p[sel].mean()),
                    "observed": float(y[sel].mean()),
                }
            )
    return out


def random_auc_std(positives: int, negatives: int) -> float:
    """Standard error of the AUC of a random score (Mann-Whitney null, no ties)."""
    if positives <= 0 or negatives <= 0:
        return float("nan")
    return math.sqrt((positives + negatives + 1) / (12.0 * positives * negatives))


def shuffled_label_alarm(aucs: Sequence[float | None], positives: int, negatives: int) -> dict[str, Any]:
    """Do models trained on shuffled labels still 'find' something out of time? (They must not.)

    `aucs` holds one out-of-time AUC per shuffled-label run (different permutations); their mean is
    compared with 0.5. One run alone varies more than a random score would: a model fitted to noise is
    still a function of features that carry the real signal, so on small data it can lean either way by
    chance (seen: runs from 0.36 to 0.61 on 1,500 personas, mean 0.49). The tolerance is therefore the
    largest of 0.05, 3 standard errors of a random AUC, and 2 standard errors of the mean of the runs as
    they spread; a pipeline that leaks gives runs that agree far from 0.5, which still fires.
    """
    values = [float(a) for a in aucs if a is not None and math.isfinite(a)]
    auc = float(np.mean(values)) if values else None
    std = random_auc_std(positives, negatives)
    spread = float(np.std(values, ddof=1)) if len(values) >= 2 else None
    tolerance = SHUFFLED_TOLERANCE
    if values:
        k = math.sqrt(len(values))
        if math.isfinite(std):
            tolerance = max(tolerance, 3 * std / k)
        if spread is not None:
            tolerance = max(tolerance, 2 * spread / k)
    alarm = auc is not None and abs(auc - 0.5) > tolerance
    return {
        "roc_auc": auc,
        "runs": [round(v, 4) for v in values],
        "random_auc_std": _finite(std),
        "run_spread": spread,
        "tolerance": tolerance,
        "alarm": bool(alarm),
    }


def leakage_check(
    columns: Mapping[str, np.ndarray], y: np.ndarray, threshold: float = LEAKAGE_AUC, top: int = 10
) -> dict[str, Any]:
    """AUC of every single feature alone (missing values rank lowest); flag those above the threshold."""
    y = np.asarray(y, dtype=np.int64)
    result: dict[str, Any] = {"threshold": threshold, "rows": int(len(y)), "flagged": [], "top_features": []}
    if not 0 < y.sum() < len(y):
        result["note"] = "the sample has one class only: no single-feature AUC"
        return result
    aucs = []
    for name, values in columns.items():
        v = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(v)
        if not finite.any():
            continue
        v = np.where(finite, v, v[finite].min() - 1.0)
        aucs.append((name, float(roc_auc_score(y, v))))
    aucs.sort(key=lambda item: -abs(item[1] - 0.5))
    result["top_features"] = [{"feature": n, "auc": round(a, 4)} for n, a in aucs[:top]]
    result["flagged"] = [{"feature": n, "auc": round(a, 4)} for n, a in aucs if a > threshold or a < 1 - threshold]
    return result


def gain_importance(scores: Mapping[str, float], top: int = 30) -> list[dict[str, Any]]:
    """Booster `get_score(importance_type='gain')` as sorted shares of the total gain."""
    total = sum(scores.values()) or 1.0
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    return [{"feature": n, "gain": float(g), "share": float(g) / total} for n, g in ranked[:top]]


def beats_baseline(model: Mapping[str, Any], baseline: Mapping[str, Any]) -> bool:
    """Out of time, the model's ROC-AUC is above the baseline's (both must exist)."""
    return bool(
        model.get("roc_auc") is not None
        and baseline.get("roc_auc") is not None
        and model["roc_auc"] > baseline["roc_auc"]
    )


def model_alarms(
    model: Mapping[str, Any],
    beats: bool,
    shuffled: Mapping[str, Any],
    leakage: Mapping[str, Any],
    eval_window_complete: bool,
) -> list[str]:
    """What a reader of the model's figures must know before trusting them, one short line each."""
    alarms = []
    if shuffled["alarm"]:
        alarms.append(f"shuffled-label AUC {shuffled['roc_auc']:.3f}")
    if leakage["flagged"]:
        alarms.append("leakage: " + ", ".join(f["feature"] for f in leakage["flagged"][:5]))
    if model.get("roc_auc") is None:
        alarms.append("evaluation set has one class only")
    elif not beats:
        alarms.append("model does not beat RFM")
    if not eval_window_complete:
        alarms.append("evaluation label window not fully observed")
    return alarms
