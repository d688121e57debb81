"""The RFM baseline: a small monotone XGBoost model on recency, frequency and monetary value.

A look-alike model earns its place only by beating what a marketer gets from three columns. The baseline is
a booster, not a logistic regression, because it can WIN the champion selection (`jobs.model.champion`)
and the exported scorer must keep the one load path of scoring and serving (`jobs.model.booster`): a
`model.json` whose feature names are the RFM columns. Shallow trees with monotone constraints are the
textbook RFM score in booster form: more recent, more frequent, higher spend never lowers the score
(recency-like `days_since*` columns decrease it, every other column increases it), trees are invariant to
the log transforms a linear RFM needs, and "never purchased" (missing recency) gets its own learned
direction instead of an imputed constant. It predicts probabilities (no class weights), fitted in one
process on a hash sample of the training snapshot with early stopping on its validation split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xgboost

from jobs.errors import UserError
from jobs.model.booster import model_bytes

METHOD = "monotone XGBoost (depth 2) on recency, frequency and monetary columns"
PARAMS = {
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "tree_method": "hist",
    "max_depth": 2,
    "eta": 0.1,
    "min_child_weight": 5,
    "reg_lambda": 5,
}
ROUNDS = 200
EARLY_STOPPING = 20


def default_rfm_features(feature_names: Sequence[str]) -> list[str]:
    """Recency, frequency and monetary columns of the catalogue (longest window up to 365 days)."""

    def longest(prefix: str) -> str | None:
        found = sorted(
            (int(n[len(prefix) : -1]), n)
            for n in feature_names
            if n.startswith(prefix) and n.endswith("d") and n[len(prefix) : -1].isdigit()
        )
        within = [n for w, n in found if w <= 365] or [n for _, n in found]
        return within[-1] if within else None

    candidates = ("days_since_last_purchase", longest("orders_"), longest("revenue_"))
    chosen = [c for c in candidates if c and c in feature_names]
    if not chosen:
        raise UserError(
            "no RFM columns (days_since_last_purchase, orders_<N>d, revenue_<N>d) in the feature table; "
            "set training.rfm_features"
        )
    return chosen


def monotone_constraints(columns: Sequence[str]) -> tuple[int, ...]:
    """-1 for recency-like columns (more days since: never more likely), +1 for the others."""
    return tuple(-1 if name.startswith("days_since") else 1 for name in columns)


def rfm_matrix(columns: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    return np.column_stack([np.asarray(columns[n], dtype=np.float32) for n in names])


def fit_rfm(columns: Mapping[str, np.ndarray], y: np.ndarray, valid: np.ndarray, seed: int, nthread: int = 1) -> bytes:
    """The baseline booster's `model.json` bytes; `valid` marks the rows early stopping watches."""
    names = list(columns)
    X, y, valid = rfm_matrix(columns, names), np.asarray(y, np.float32), np.asarray(valid, bool)
    params = {**PARAMS, "seed": seed, "nthread": nthread, "monotone_constraints": str(monotone_constraints(names))}
    dtrain = xgboost.DMatrix(X[~valid], y[~valid], feature_names=names)
    evals = []
    if 0 < y[valid].sum() < valid.sum():
        evals = [(xgboost.DMatrix(X[valid], y[valid], feature_names=names), "validation")]
    booster = xgboost.train(
        params,
        dtrain,
        num_boost_round=ROUNDS,
        evals=evals,
        early_stopping_rounds=EARLY_STOPPING if evals else None,
        verbose_eval=False,
    )
    if evals and booster.best_iteration + 1 < booster.num_boosted_rounds():
        booster = booster[: booster.best_iteration + 1]
    return model_bytes(booster)
