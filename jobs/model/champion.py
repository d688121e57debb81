"""Champion selection per segment: which candidate's booster becomes the segment's exported scorer. Pure.

Candidates, all evaluated out of time on the same rows (the snapshot at eval_as_of, labels after it):
* `xgboost`: the look-alike model on every catalogue feature;
* `rfm`: the monotone RFM booster (`jobs.model.baselines`), the simple baseline;
* `previous`: the previous run's exported model for this segment, when its feature names still exist, its
  category slots and definition are unchanged, and its training labels ended before this evaluation began
  (otherwise it would be judged on labels it was fitted to).

**Primary metric: PR-AUC (average precision).** Segments are rare events (a few % positive) and partners
act on the top of the ranking; PR-AUC weighs exactly that part, unlike ROC-AUC, which a model can win on
the long tail of negatives (the real-data finding: a look-alike with a lower PR-AUC than RFM and a green
ROC "win"). Capture at `top_percent` would be the other choice, but it is one point of the curve and a
step function on small evaluation sets; PR-AUC averages the whole top of the ranking and has an exact
permutation null (`quality.chance_test`).

**Acceptable** candidates: no alarm (a single feature that nearly decides the future label, a feature
that predicts the future label clearly better than the past one, or an implausible out-of-time ROC-AUC:
`quality`), PR-AUC above chance (permuted evaluation labels), and, for any
candidate but the baseline, not below the RFM baseline's PR-AUC.

**The incumbent** is the previous champion's candidate when it is one here (`previous` when comparable,
else the procedure it came from), otherwise the simpler baseline `rfm`. A challenger replaces it only
when its PR-AUC exceeds the incumbent's by the margin: the larger of `training.champion_margin` (relative)
and one standard deviation of the challenger's PR-AUC under permuted labels (the noise of the figure at
this evaluation size), so a small evaluation set needs a larger win and ties go to the incumbent. No
acceptable candidate: the segment is `rejected` (never scored, exported or served).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jobs.model.quality import IMPLAUSIBLE_AUC

PRIMARY_METRIC = "pr_auc"
XGBOOST = "xgboost"
RFM = "rfm"
PREVIOUS = "previous"


def candidate_alarms(metrics: Mapping[str, Any], leakage: Mapping[str, Any], features: Sequence[str]) -> list[str]:
    """The alarms that keep a candidate from being exported, one short line each."""
    alarms = []
    mine = set(features)
    flagged = [f for f in leakage.get("flagged") or [] if f["feature"] in mine]
    label_like = [f["feature"] for f in flagged if f.get("kind", "label_auc") == "label_auc"]
    if label_like:
        alarms.append("leakage: " + ", ".join(label_like[:5]))
    peeking = [f for f in flagged if f.get("kind") == "future_over_past"]
    if peeking:
        alarms.append(
            "leakage, knows the future better than the past: "
            + ", ".join(
                f"{f['feature']} ({'reference label ' if f.get('pair') == 'reference' else ''}AUC {f['auc']:.3f} vs "
                f"{f['past_auc']:.3f}, z {f['z']} against the other features)"
                for f in peeking[:5]
            )
        )
    auc = metrics.get("roc_auc")
    if auc is not None and auc > IMPLAUSIBLE_AUC:
        alarms.append(f"implausible out-of-time ROC-AUC {auc:.3f} (> {IMPLAUSIBLE_AUC}): a leak")
    return alarms


def candidate_entry(
    metrics: Mapping[str, Any], chance: Mapping[str, Any], alarms: list[str], features: Sequence[str]
) -> dict[str, Any]:
    """A candidate's line of the card's `champion.candidates`."""
    return {
        # the primary metric first, each figure once (the report derives its columns from primary_metric)
        **{key: metrics.get(key) for key in dict.fromkeys((PRIMARY_METRIC, "pr_auc", "roc_auc"))},
        "base_rate": metrics.get("base_rate"),
        "chance": {k: chance.get(k) for k in ("null_mean", "null_std", "z", "better")},
        "alarms": list(alarms),
        "features": len(features),
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _why_not(name: str, entry: Mapping[str, Any], rfm: Mapping[str, Any] | None) -> str | None:
    if entry["alarms"]:
        return f"{name}: {'; '.join(entry['alarms'])}"
    value = entry.get(PRIMARY_METRIC)
    if value is None:
        return f"{name}: no PR-AUC (one class in the evaluation)"
    if not entry["chance"].get("better"):
        return f"{name}: PR-AUC {_fmt(value)} not above chance ({_fmt(entry['chance'].get('null_mean'))})"
    if name != RFM and rfm is not None and rfm.get(PRIMARY_METRIC) is not None and value < rfm[PRIMARY_METRIC]:
        return f"{name}: PR-AUC {_fmt(value)} loses to the RFM baseline ({_fmt(rfm[PRIMARY_METRIC])})"
    return None


def choose(candidates: Mapping[str, Mapping[str, Any]], incumbent: str, margin: float) -> tuple[str | None, str]:
    """(the chosen candidate or None, the one-line reason). An incumbent that is not acceptable itself hands
    its place to the RFM baseline; with neither acceptable, the best acceptable candidate wins outright."""
    rfm = candidates.get(RFM)
    refused = {name: _why_not(name, entry, rfm) for name, entry in candidates.items()}
    acceptable = [name for name, why in refused.items() if why is None]
    if not acceptable:
        return None, "no acceptable candidate: " + "; ".join(why for why in refused.values() if why)
    holder = next((n for n in (incumbent, RFM) if n in acceptable), None)
    if holder is None:
        best = max(acceptable, key=lambda n: candidates[n][PRIMARY_METRIC])
        holders = [n for n in dict.fromkeys((incumbent, RFM)) if refused.get(n)]
        return best, (
            f"{best} PR-AUC {_fmt(candidates[best][PRIMARY_METRIC])}; no acceptable incumbent "
            f"({'; '.join(refused[n] for n in holders)})"
        )
    bar = candidates[holder][PRIMARY_METRIC]

    def needed(name: str) -> float:
        return bar + max(margin * bar, candidates[name]["chance"].get("null_std") or 0.0)

    challengers = [n for n in acceptable if n != holder and candidates[n][PRIMARY_METRIC] > needed(n)]
    if challengers:
        best = max(challengers, key=lambda n: candidates[n][PRIMARY_METRIC])
        return best, (
            f"{best} PR-AUC {_fmt(candidates[best][PRIMARY_METRIC])} beats {holder} {_fmt(bar)} by more than the margin"
        )
    others = ", ".join(f"{n} {_fmt(candidates[n][PRIMARY_METRIC])}" for n in candidates if n != holder)
    return holder, f"{holder} PR-AUC {_fmt(bar)} kept: no challenger beats it by the margin ({others})"
