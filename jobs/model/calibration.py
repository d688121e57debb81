"""Calibration: the saved model predicts probabilities, not the odds `scale_pos_weight` inflated.

Training with positive weight w multiplies the odds by w. The model is corrected by shifting its base
margin (through `base_score`), which keeps the ranking and every tree as trained: fitted on the validation
split when it has both classes (`calibrated`), else the prior correction -log(w).
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np

from jobs.model.booster import load_booster

log = logging.getLogger(__name__)


def shift_margin(model: bytes, shift: float) -> bytes | None:
    """The model with `shift` added to every output margin (through its base_score), or None.

    The result is checked on random inputs against the original margins; None when the model format
    is not what this expects (the caller keeps the original model then).
    """
    try:
        doc = json.loads(model)
        param = doc["learner"]["learner_model_param"]
        raw = str(param["base_score"])
        base = float(raw.strip("[]"))
        new = 1.0 / (1.0 + math.exp(-(math.log(base / (1.0 - base)) + shift)))
        param["base_score"] = f"[{new:.9E}]" if raw.startswith("[") else f"{new:.9E}"
        shifted = json.dumps(doc).encode()
        before, after = load_booster(model), load_booster(shifted)
        X = np.random.default_rng(0).normal(size=(64, before.num_features())).astype(np.float32)
        expect = before.inplace_predict(X, predict_type="margin") + shift
        if np.allclose(after.inplace_predict(X, predict_type="margin"), expect, atol=1e-4):
            return shifted
    except Exception:  # noqa: BLE001 - any surprise in the format: keep the model as trained
        pass
    log.warning("could not shift the model's base margin; probabilities stay as trained")
    return None


def prior_corrected(model: bytes, scale_pos_weight: float) -> tuple[bytes, bool]:
    """Undo `scale_pos_weight` in the base margin: training with positive weight w multiplies the
    odds by w, a margin shift of -log(w) divides them back (exact only for a converged model)."""
    if not scale_pos_weight or abs(scale_pos_weight - 1.0) < 1e-12:
        return model, True
    shifted = shift_margin(model, -math.log(scale_pos_weight))
    return (shifted, True) if shifted is not None else (model, False)


def fit_intercept(margins: np.ndarray, y: np.ndarray) -> float:
    """The shift c with mean(sigmoid(margin + c)) == mean(y): intercept-only recalibration. The margins are
    sorted first: a float mean depends on the order it adds in, and the rows come in whatever order a Ray
    Data pass delivered its blocks."""
    margins = np.sort(np.asarray(margins, dtype=np.float64))
    target = float(np.mean(y))
    lo, hi = -50.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(margins + mid)))) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-9:
            break
    return (lo + hi) / 2


def calibrated(
    model: bytes, valid_margins: np.ndarray, valid_y: np.ndarray, scale_pos_weight: float
) -> tuple[bytes, dict]:
    """The model whose probabilities match the validation split's positive rate (base margin shifted).

    `scale_pos_weight` buys recall of the rare class during training but inflates the odds; an early
    stopped model has not converged, so the exact prior correction (-log w) is off for rare segments.
    The shift is therefore fitted on the validation split (never on the evaluation cut-off); the prior
    correction is the fallback when the split has one class only. Ranking is unchanged either way.
    """
    if 0 < int(np.sum(valid_y)) < len(valid_y):
        shift = fit_intercept(valid_margins, valid_y)
        shifted = shift_margin(model, shift)
        if shifted is not None:
            return shifted, {"method": "base margin shift fitted on the validation split", "shift": shift}
    corrected, ok = prior_corrected(model, scale_pos_weight)
    if ok:
        return corrected, {
            "method": "prior correction -log(scale_pos_weight)",
            "shift": -math.log(scale_pos_weight or 1.0),
        }
    return model, {"method": "none: weighted probabilities (scale_pos_weight not undone)", "shift": 0.0}
