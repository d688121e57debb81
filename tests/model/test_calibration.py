"""Calibration: the saved model predicts probabilities (base margin shifted), ranking untouched."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost

from jobs.model.booster import load_booster, model_bytes
from jobs.model.calibration import calibrated, fit_intercept, prior_corrected


def test_prior_correction_keeps_ranking_and_restores_the_base_rate():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 3)).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=4000) > 1.8).astype(np.float32)
    spw = float((1 - y).sum() / y.sum())
    booster = xgboost.train(
        {"objective": "binary:logistic", "scale_pos_weight": spw, "max_depth": 2}, xgboost.DMatrix(X, label=y), 30
    )
    corrected, ok = prior_corrected(model_bytes(booster), spw)
    assert ok
    fixed = load_booster(corrected)
    before, after = booster.inplace_predict(X), fixed.inplace_predict(X)
    assert np.array_equal(np.argsort(before, kind="stable"), np.argsort(after, kind="stable"))
    assert before.mean() > 2 * y.mean() and abs(after.mean() - y.mean()) < 0.03


def test_intercept_calibration_matches_the_validation_rate():
    rng = np.random.default_rng(4)
    margins = rng.normal(size=5000)
    y = (rng.random(5000) < 0.03).astype(float)
    shift = fit_intercept(margins, y)
    assert np.mean(1 / (1 + np.exp(-(margins + shift)))) == pytest.approx(y.mean(), abs=1e-6)
    X = rng.normal(size=(3000, 3)).astype(np.float32)
    yy = (X[:, 0] + rng.normal(size=3000) > 2.2).astype(np.float32)
    spw = float((1 - yy).sum() / yy.sum())
    booster = xgboost.train(
        {"objective": "binary:logistic", "scale_pos_weight": spw, "max_depth": 2, "eta": 0.1},
        xgboost.DMatrix(X, label=yy),
        10,
    )  # far from converged: -log(w) would be off
    raw = model_bytes(booster)
    model, info = calibrated(raw, booster.inplace_predict(X, predict_type="margin"), yy, spw)
    fixed = load_booster(model)
    assert fixed.inplace_predict(X).mean() == pytest.approx(yy.mean(), abs=1e-4)
    assert info["method"].startswith("base margin shift")
    _, fallback = calibrated(raw, np.zeros(10), np.zeros(10), spw)
    assert fallback["method"].startswith("prior correction")
