"""Quality figures of a look-alike model: metrics, lift, alarms, the leakage check, importance. Pure.

Numpy arrays in, JSON-able dicts out (`jobs.model.report` draws them). The metrics are this module's own, not
scikit-learn's: xgboost imports scikit-learn whenever it is installed, ~1.2 s in every process that imports it.

Figures for one score vector against 0/1 labels (`binary_metrics`):
* ROC-AUC, PR-AUC (average precision) next to the base rate (the PR-AUC of a random score);
* lift and capture in the top 1 / 5 / 10 / 20 % of the population by score (ties are split evenly:
  the expected value under random tie-breaking, so a constant score gets capture = share, lift = 1);
* Brier score and reliability bins (mean predicted probability vs observed rate per probability decile);
* the cumulative gain curve (share of positives captured vs share of population targeted).

Checks (`jobs.model.champion` turns them into a candidate's alarms):
* `chance_test`: is a score's out-of-time PR-AUC above what the same score reaches against permuted
  evaluation labels? (Not an alarm: a candidate that fails it is simply not acceptable.) The old check,
  models trained on shuffled labels compared with AUC 0.5, fired on clean data: a model fitted to noise is
  still a function of features that carry the real signal, so its out-of-time AUC is not distributed like
  a random score's. Permuting the evaluation labels of a fixed score has an exact null.
* `leakage_check`: any single feature whose own out-of-time AUC is above 0.95 (or below 0.05) is flagged
  (`kind` "label_auc"): a feature that alone nearly decides the future label has seen the label window (or
  is the label). With `past_y` (the same rows' label one horizon earlier, whose window ends at the cut-off)
  it also flags a feature that **knows the future better than the past** (`kind` "future_over_past"): a
  feature computed from events before the cut-off has seen the past window itself, so it predicts the past
  label at least about as well as the future one; a feature that peeks after the cut-off predicts the future
  label clearly better. Both AUCs are taken under one order of the feature's values, the rate of
  (future + past) positives in its quantile bin, so a feature not monotone in the label is judged fairly.

  "Clearly better" cannot mean "the gap is above its own sampling noise": honest features share a
  systematic gap wherever the eligibility rule is decided from the past window's own events. A category
  lover is eligible because she bought in the category in the last 365 days, so her past label (bought in
  the last h days) is partly fixed by the rule (everyone eligible bought; it only says whether that purchase
  fell late), and every behavioural feature predicts the past label worse than the future one (views 0.82
  vs 0.69 on the generator). The gap is real, not noise, so a z against the gap's standard error grows with
  sqrt(rows) and would fire on clean data at any large enough sample. A category virgin is the extreme: her
  eligibility makes every past label 0. So a feature is judged against the segment's OTHER features, which
  share the same eligibility and windows (a random-effects outlier test): centre = the median gap, spread =
  1.4826 x the median absolute deviation of the gaps, both over the features that carry signal for either
  label (AUC more than the test's own z from 0.5, falling back to every feature when fewer than
  MIN_REFERENCE_FEATURES do: a feature that predicts neither label has gap 0 whatever the selection, so it
  says nothing about the honest dispersion). z = (gap - centre) / sqrt(se^2 + spread^2), se the DeLong
  standard error of the gap (both AUCs on the same rows, so their covariance counts); the spread keeps
  sampling noise in, which also bounds the z of a rare feature whose DeLong se is too small. Since the
  spread does not shrink to 0 as rows grow, the false-alarm rate does not grow with the data; a feature that
  peeks after the cut-off is far outside the honest spread (planted: 6-20 spreads). Flagged above a
  one-sided z at a family-wise false-alarm rate of LEAKAGE_FAMILY_ALPHA, Bonferroni over features x pairs.

  Two label pairs are judged: the segment's own (y, past_y), where its past labels have both classes, and a
  `reference` pair defined for everyone eligible (the train stage: positive in any segment with the same
  cut-offs, after vs before the cut-off), so a segment whose eligibility empties its past labels (category
  virgins) is judged too, and a feature that knows behaviour after the cut-off shows even when the
  segment's own label is narrow. Limit: a fault that shifts EVERY feature alike (the whole snapshot built a
  horizon late) moves the centre, not one feature; the label-AUC flag and IMPLAUSIBLE_AUC guard that case.
* `IMPLAUSIBLE_AUC`: an out-of-time ROC-AUC above 0.97 for whether someone does something in the coming
  weeks is not a forecast but a leak that no single feature shows (several features that see the label
  window together); behavioural look-alike models out of time sit far below it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import ndtri

TOP_FRACTIONS = (0.01, 0.05, 0.10, 0.20)
CURVE_POINTS = 50
RELIABILITY_BINS = 10
LEAKAGE_AUC = 0.95
LEAKAGE_FAMILY_ALPHA = 0.001
FUTURE_OVER_PAST_BINS = 20
MIN_REFERENCE_FEATURES = 3
_POOLED_POSITIVES = np.array([0, 1, 1, 2])  # future + past positives of each (future, past) code, `_pair_gaps`
IMPLAUSIBLE_AUC = 0.97
CHANCE_RUNS = 100
CHANCE_Z = 3.0
CHANCE_MAX_ROWS = 200_000


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
    out["roc_auc"] = _finite(rank_auc(score, y)) if both else None
    out["pr_auc"] = _finite(average_precision(y, score)) if both else None
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
        out["brier"] = _finite(float(np.mean((y - p) ** 2))) if n else None
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


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision (PR-AUC) of `score` for 0/1 `y` with at least one positive, as sklearn's
    `average_precision_score` defines it (ties share a threshold)."""
    order, ends = _descending(score)
    return _average_precision_sorted(y[order], ends, int(y.sum()))


def _descending(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the rows in descending score order, stable; the last row of each tie group in that order)."""
    order = np.argsort(-score, kind="stable")
    s = score[order]
    return order, np.flatnonzero(np.r_[s[1:] != s[:-1], True])


def _average_precision_sorted(y_sorted: np.ndarray, ends: np.ndarray, positives: int) -> float:
    """Average precision of labels already in score order (`ends`: last row of each tie group), as sklearn
    computes it: the precision at every distinct threshold weighted by the recall it adds."""
    tp = np.cumsum(y_sorted)[ends].astype(np.float64)
    precision = tp / (ends + 1)
    recall_gain = np.diff(np.r_[0.0, tp]) / positives
    return float(np.sum(recall_gain * precision))


def chance_test(
    y: np.ndarray, score: np.ndarray, runs: int = CHANCE_RUNS, seed: int = 0, max_rows: int = CHANCE_MAX_ROWS
) -> dict[str, Any]:
    """Is a score's out-of-time PR-AUC better than chance? The null permutes the EVALUATION labels.

    The score stays as the candidate produced it; only the labels are shuffled (`runs` times, over at most
    `max_rows` rows, a fixed subsample), so the null distribution is the PR-AUC of exactly this score
    against labels that carry no information: no refits, and nothing a feature with real signal can move.
    The candidate is better than chance when its PR-AUC lies more than CHANCE_Z null standard deviations
    above the null mean. A model on labels joined to the wrong rows fails it; so does one that learned
    nothing.
    """
    y = np.asarray(y, dtype=np.int64)
    score = np.asarray(score, dtype=np.float64)
    # rows arrive in whatever order Ray Data collected them: put them in one order of (score, label) first, so
    # the seeded subsample and permutations (and the card) are the same for the same rows on every run
    canonical = np.lexsort((y, score))
    y, score = y[canonical], score[canonical]
    rng = np.random.default_rng(seed)
    if len(y) > max_rows:
        keep = np.sort(rng.choice(len(y), max_rows, replace=False))
        y, score = y[keep], score[keep]
    positives = int(y.sum())
    result: dict[str, Any] = {"metric": "pr_auc", "runs": runs, "rows": int(len(y)), "z_needed": CHANCE_Z}
    if not 0 < positives < len(y) or runs < 2:
        return result | {"pr_auc": None, "null_mean": None, "null_std": None, "z": None, "better": False}
    order, ends = _descending(score)
    y_sorted = y[order]
    observed = _average_precision_sorted(y_sorted, ends, positives)
    null = np.array([_average_precision_sorted(rng.permutation(y_sorted), ends, positives) for _ in range(runs)])
    mean, std = float(null.mean()), float(null.std(ddof=1))
    z = (observed - mean) / std if std > 0 else (math.inf if observed > mean else 0.0)
    return result | {
        "pr_auc": observed,
        "null_mean": mean,
        "null_std": std,
        "z": _finite(z),
        "better": bool(z > CHANCE_Z),
    }


def rank_auc(values: np.ndarray, y: np.ndarray) -> float:
    """ROC-AUC of `values` for 0/1 `y` (both classes present) in the Mann-Whitney form: the share of
    (positive, negative) pairs in which the positive ranks higher, ties counting half. Equal to sklearn's
    `roc_auc_score` (the trapezoid area under the ROC curve) but about ten times faster, which matters in
    `leakage_check` (one AUC per feature, a hundred features and more): two plain sorts (far faster than an
    argsort) and a binary search of the positives among the negatives.

    The pairs are counted in integers (twice, so a tie's half pair stays whole) and divided once, so the AUC
    is exact to the last bit and features of equal AUC get equal floats.
    """
    positive = y == 1
    pos, neg = np.sort(values[positive]), np.sort(values[~positive])
    twice_pairs_won = int(np.sum(np.searchsorted(neg, pos, "left") + np.searchsorted(neg, pos, "right")))
    return twice_pairs_won / (2 * len(pos) * len(neg))


def auc_placements(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """(ROC-AUC of `x` for 0/1 `y`, each row's influence on it): DeLong's placement values.

    A positive's placement is the share of negatives it outranks, a negative's the share of positives that
    outrank it (ties count half); the AUC is their mean within either class, and
    `y (V - A) / p + (1 - y) (W - A) / (1 - p)` is a row's influence: its variance / n is DeLong's variance
    of the AUC, and the influences of two AUCs on the same rows give the variance of their difference.
    """
    positive = y == 1
    pos, neg = np.sort(x[positive]), np.sort(x[~positive])
    n1, n0 = len(pos), len(neg)
    below = (np.searchsorted(neg, x, "left") + np.searchsorted(neg, x, "right")) / 2.0
    above = n1 - (np.searchsorted(pos, x, "left") + np.searchsorted(pos, x, "right")) / 2.0
    placement = np.where(positive, below / n0, above / n1)
    auc = float(placement[positive].mean())
    share = n1 / len(y)
    influence = np.where(positive, (placement - auc) / share, (placement - auc) / (1.0 - share))
    return auc, influence


def _quantile_bins(values: np.ndarray, bins: int = FUTURE_OVER_PAST_BINS) -> tuple[np.ndarray, int]:
    """Each row's quantile bin of the feature (missing values a bin of their own, the last) and the number of
    bins. They depend on the feature alone, so `_future_over_past` computes them once for every label pair."""
    finite = np.isfinite(values)
    # `values[finite]` is a copy already: the quantiles may partition it in place
    quantiles = np.linspace(0.0, 1.0, bins + 1)
    edges = np.unique(np.quantile(values[finite], quantiles, overwrite_input=True)) if finite.any() else np.zeros(1)
    # a row's bin is how many inner edges lie at or below it (`searchsorted(..., "right")`): for the ~20 edges,
    # a comparison per edge over all rows is faster than a binary search per row (1.7 against 3.0 ms at 100k rows)
    which = np.zeros(len(values), np.intp)
    for edge in edges[1:-1]:
        which += values >= edge
    if not finite.all():
        which[~finite] = len(edges)
    return which, len(edges) + 1


def _pooled_rate_levels(by_bin: np.ndarray) -> np.ndarray:
    """Each quantile bin's level (0, 1, ...): the rank of its rate of (future + past) positives, from its rows
    counted per (future, past) label (`by_bin`, bins x 4, `_pair_gaps`). Under this one order, taken from both
    labels alike, both AUCs are compared. A monotone AUC of the raw values would misjudge an honest feature
    that is not monotone in the label (days since the last purchase, missing for those who never bought: the
    missing rank next to the most recent buyers)."""
    rows = by_bin.sum(axis=1)
    rate = (by_bin @ _POOLED_POSITIVES) / np.maximum(rows, 1)
    _, level_of_bin = np.unique(rate, return_inverse=True)
    return level_of_bin


def _level_influence(counts: np.ndarray) -> tuple[float, np.ndarray]:
    """`auc_placements` for a feature of few integer levels, from its rows counted per (level, class 0/1): the
    AUC and the influence of a row at each (level, class), in O(levels)."""
    neg, pos = counts[:, 0].astype(np.float64), counts[:, 1].astype(np.float64)
    n1, n0 = pos.sum(), neg.sum()
    below = (np.cumsum(neg) - neg / 2.0) / n0  # a positive at this level: share of negatives it outranks
    above = (n1 - np.cumsum(pos) + pos / 2.0) / n1  # a negative at this level: share of positives above it
    auc = float(np.dot(pos, below) / n1)
    share = n1 / (n0 + n1)
    return auc, np.stack([(above - auc) / (1.0 - share), (below - auc) / share], axis=1)


def _spread(values: np.ndarray, counts: np.ndarray) -> float:
    """The sample standard deviation (ddof 1) of rows of which `counts` have each of `values`."""
    n = counts.sum()
    mean = np.sum(counts * values) / n
    return float(np.sqrt(np.sum(counts * (values - mean) ** 2) / (n - 1)))


def _pair_gaps(
    binned: list[tuple[str, np.ndarray, int]], y: np.ndarray, past_y: np.ndarray, pair: str
) -> list[dict[str, Any]]:
    """Per feature (name, quantile bins, bin count): future and past AUC under the pooled-rate order, their gap
    with its DeLong standard error, and `signal`: how many standard errors the stronger of the two AUCs lies
    from 0.5."""
    n = len(y)
    label_pair = y * 2 + past_y  # 0 .. 3: (future, past) as one code
    entries = []
    for name, which, bin_count in binned:
        # a row's influences depend on its (level, future, past) cell only: the figures come from cell counts,
        # and a level is a function of the quantile bin, so one count per (bin, future, past) makes them all
        by_bin = np.bincount(which * 4 + label_pair, minlength=4 * bin_count).reshape(-1, 4)
        level_of_bin = _pooled_rate_levels(by_bin)
        by_level = np.zeros((int(level_of_bin.max()) + 1, 4), by_bin.dtype)
        np.add.at(by_level, level_of_bin, by_bin)
        cells = by_level.reshape(-1, 2, 2)
        future_auc, future_inf = _level_influence(cells.sum(axis=2))
        past_auc, past_inf = _level_influence(cells.sum(axis=1))
        # the pooled-rate order already points the feature towards the positives of both labels alike, so
        # the gap needs no sign of its own (a sign picked from the AUCs would let noise choose it)
        se = _spread(future_inf[:, :, None] - past_inf[:, None, :], cells) / math.sqrt(n)
        future_se = _spread(future_inf, cells.sum(axis=2)) / math.sqrt(n)
        past_se = _spread(past_inf, cells.sum(axis=1)) / math.sqrt(n)
        signal = max(
            abs(future_auc - 0.5) / future_se if future_se > 0 else 0.0,
            abs(past_auc - 0.5) / past_se if past_se > 0 else 0.0,
        )
        entries.append(
            {
                "feature": name,
                "kind": "future_over_past",
                "pair": pair,
                "auc": future_auc,
                "past_auc": past_auc,
                "gap": future_auc - past_auc,
                "se": se,
                "signal": signal,
            }
        )
    return entries


def _judge_gaps(entries: list[dict[str, Any]], z_needed: float) -> dict[str, float]:
    """Each entry's z against the gaps of the features that carry signal (see the module docstring): centre =
    their median gap, spread = 1.4826 x their median absolute deviation (sampling noise included), z = (gap -
    centre) / sqrt(se^2 + spread^2). Returns the centre and spread."""
    gaps = np.array([e["gap"] for e in entries])
    carrying = np.array([e["signal"] > z_needed for e in entries])
    if carrying.sum() < MIN_REFERENCE_FEATURES:
        carrying = np.ones(len(entries), dtype=bool)
    centre = float(np.median(gaps[carrying]))
    spread = float(1.4826 * np.median(np.abs(gaps[carrying] - centre)))
    for e in entries:
        scale = math.sqrt(e["se"] ** 2 + spread**2)
        e["z"] = (e["gap"] - centre) / scale if scale > 0 else 0.0
    return {"centre": centre, "spread": spread, "reference_features": int(carrying.sum())}


def _future_over_past(
    features: list[tuple[str, np.ndarray]], pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], alpha: float
) -> dict[str, Any]:
    """Features whose future-over-past gap, under each (future, past) label pair, lies above the gaps of the
    segment's other signal-carrying features by more than the one-sided Bonferroni z of `alpha` (over every
    feature of every pair)."""
    z_needed = float(ndtri(1.0 - alpha / max(1, len(features) * len(pairs))))
    binned = [(name, *_quantile_bins(raw)) for name, raw in features]
    flagged, largest, judged = [], [], {}
    for pair, (y, past_y) in pairs.items():
        entries = _pair_gaps(binned, y, past_y, pair)
        judged[pair] = {
            k: round(v, 4) if isinstance(v, float) else v for k, v in _judge_gaps(entries, z_needed).items()
        }
        for e in entries:
            e.update({k: round(e[k], 4) for k in ("auc", "past_auc", "gap", "se")})
            e["z"], e["signal"] = round(e["z"], 2), round(e["signal"], 2)
            (flagged if e["z"] > z_needed else largest).append(e)
    flagged.sort(key=lambda e: -e["z"])
    largest = sorted(flagged + largest, key=lambda e: -e["z"])[:5]
    return {"z_needed": round(z_needed, 3), "alpha": alpha, "pairs": judged, "flagged": flagged, "largest": largest}


def leakage_check(
    columns: Mapping[str, np.ndarray],
    y: np.ndarray,
    threshold: float = LEAKAGE_AUC,
    top: int = 10,
    past_y: np.ndarray | None = None,
    alpha: float = LEAKAGE_FAMILY_ALPHA,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """AUC of every single feature alone (missing values rank lowest); flag those above the threshold
    (`kind` "label_auc"). With `past_y` (per row, the label one horizon earlier: its window ends at the
    cut-off) and/or `reference` (per row, a (future, past) label pair of the same horizon defined for everyone,
    such as "positive in any segment with these cut-offs") also the features that predict the future label
    clearly better than the past one, judged against the segment's other features (`kind`
    "future_over_past", with both AUCs, the gap, its standard error, z and the pair; see the module
    docstring). The result's `future_over_past` says what that check did (or, in `note`, why it could not
    run)."""
    y = np.asarray(y, dtype=np.int64)
    result: dict[str, Any] = {"threshold": threshold, "rows": int(len(y)), "flagged": [], "top_features": []}
    if not 0 < y.sum() < len(y):
        result["note"] = "the sample has one class only: no single-feature AUC"
        return result
    aucs, usable = [], []
    for name, values in columns.items():
        v = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(v)
        if not finite.any():
            continue
        finite_values = v[finite]
        lowest = finite_values.min()
        if finite_values.max() != lowest or not finite.all():
            usable.append((name, v))
        aucs.append((name, rank_auc(np.where(finite, v, lowest - 1.0), y)))
    aucs.sort(key=lambda item: -abs(item[1] - 0.5))
    result["top_features"] = [{"feature": n, "auc": round(a, 4)} for n, a in aucs[:top]]
    result["flagged"] = [
        {"feature": n, "kind": "label_auc", "auc": round(a, 4)} for n, a in aucs if a > threshold or a < 1 - threshold
    ]
    if past_y is None and reference is None:
        return result
    candidates = {"segment": (y, past_y)} if past_y is not None else {}
    if reference is not None:
        candidates["reference"] = reference
    pairs, skipped = {}, []
    for pair, (future, past) in candidates.items():
        future, past = np.asarray(future, dtype=np.int64), np.asarray(past, dtype=np.int64)
        if len(future) != len(y) or len(past) != len(y):
            raise ValueError(f"the {pair} label pair has {len(future)} / {len(past)} rows, y {len(y)}")
        if 0 < future.sum() < len(y) and 0 < past.sum() < len(y):
            pairs[pair] = (future, past)
        else:
            skipped.append(pair)
    note = f"one class only in the past or future labels of: {', '.join(skipped)}" if skipped else None
    if not pairs or len(usable) < MIN_REFERENCE_FEATURES:
        result["future_over_past"] = {"note": note or "too few features to judge one against the others"}
        return result
    check = _future_over_past(usable, pairs, alpha)
    known = {f["feature"] for f in result["flagged"]}
    seen = set()
    for f in check["flagged"]:
        if f["feature"] not in known | seen:
            seen.add(f["feature"])
            result["flagged"].append(f)
    result["future_over_past"] = {k: v for k, v in check.items() if k != "flagged"} | {"flagged": len(seen)}
    if note:
        result["future_over_past"]["note"] = note
    return result


def gain_importance(scores: Mapping[str, float], top: int = 30) -> list[dict[str, Any]]:
    """Booster `get_score(importance_type='gain')` as sorted shares of the total gain."""
    total = sum(scores.values()) or 1.0
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    return [{"feature": n, "gain": float(g), "share": float(g) / total} for n, g in ranked[:top]]
