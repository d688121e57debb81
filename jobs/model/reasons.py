"""Reasons per person: the behaviours that pushed a member's score up, from XGBoost's own contributions. Pure.

A model's features are named for partners by their catalogue `reason` (`features.catalog.reason_labels`:
"purchase frequency", "interest in home", ...; never a value, an id or a column name). Per row, XGBoost's
per-feature contributions to the margin (`Booster.predict(..., pred_contribs=True)`, the bias column
dropped) are summed per label, so five features that all say "purchase frequency" count once with their
total; the reasons are the (up to) `TOP_REASONS` labels with the largest positive sums, largest first. A row
whose every label pulls its score down has no reasons (an empty list). Features without a label (not in
the catalogue, or a category slot the run left empty) are never named.

Method (`ScoringConfig.reasons`): "approx" is XGBoost's `approx_contribs=True` (Saabas: each split on the
row's path credits its feature with the change of the node value), about five predictions' cost per row;
"shap" is exact TreeSHAP, about a hundred times a prediction on CPU (200 trees of depth 6: 2.3 ms per row
on one thread, 23 us approx, 5 us to predict), kept for small runs or a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import xgboost

from jobs.segments.membership import REASONS_TYPE

TOP_REASONS = 3


class ReasonNames:
    """A model's feature columns mapped to their labels, as the one-hot matrix that sums contributions."""

    def __init__(self, feature_names: Sequence[str], labels: Mapping[str, str]) -> None:
        self.labels = sorted({labels[n] for n in feature_names if n in labels})
        code = {label: i for i, label in enumerate(self.labels)}
        self.onehot = np.zeros((len(feature_names), len(self.labels)), dtype=np.float32)
        for j, name in enumerate(feature_names):
            if name in labels:
                self.onehot[j, code[labels[name]]] = 1.0
        self.values = pa.array(self.labels, pa.string())

    def top(self, contributions: np.ndarray, k: int = TOP_REASONS) -> pa.Array:
        """(rows x features [+ bias]) contributions -> list<string> of the top-k positive labels per row."""
        n = contributions.shape[0]
        if not self.labels:
            return pa.array([[] for _ in range(n)], REASONS_TYPE)
        per_label = contributions[:, : self.onehot.shape[0]] @ self.onehot
        k = min(k, len(self.labels))
        # the k largest label sums per row, largest first (ties: the label that sorts first)
        order = np.argsort(-per_label, axis=1, kind="stable")[:, :k]
        chosen = np.take_along_axis(per_label, order, axis=1)
        keep = chosen > 0
        offsets = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), self.values.take(pa.array(order[keep])))


def contributions(
    booster: xgboost.Booster,
    matrix: np.ndarray,
    feature_names: Sequence[str],
    feature_types: Sequence[str] | None,
    method: str,
    nthread: int = 1,
) -> np.ndarray:
    """Per-row feature contributions to the margin (last column: the bias), by `method` ("approx" or "shap")."""
    data = xgboost.DMatrix(
        matrix,
        feature_names=list(feature_names),
        feature_types=list(feature_types) if feature_types else None,
        enable_categorical=bool(feature_types) and "c" in feature_types,
        nthread=nthread,
    )
    return booster.predict(data, pred_contribs=True, approx_contribs=method == "approx", validate_features=False)
