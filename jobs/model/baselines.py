"""The RFM baseline: a logistic regression on recency, frequency and monetary value.

A look-alike model earns its place only by beating what a marketer gets from three columns; the train
stage fits this on the training snapshot and compares both out of time (`jobs.model.quality`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from jobs.errors import UserError

METHOD = "logistic regression on log1p(recency, frequency, monetary)"


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


def rfm_matrix(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """log1p of each RFM column; recency-like columns get 'never' as a large value plus an indicator."""
    parts = []
    for name, values in columns.items():
        v = np.asarray(values, dtype=np.float64)
        if name.startswith("days_since"):
            parts.append(np.isnan(v).astype(np.float64))
            v = np.where(np.isnan(v), 3650.0, v)
        parts.append(np.log1p(np.clip(np.nan_to_num(v, nan=0.0), 0, None)))
    return np.column_stack(parts)


def fit_rfm(columns: Mapping[str, np.ndarray], y: np.ndarray) -> Pipeline:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(rfm_matrix(columns), y)
    return model
