"""The one booster load path and the one model version."""

from __future__ import annotations

import hashlib

import numpy as np
import xgboost

from jobs.model.booster import load_booster, model_bytes, model_version


def test_load_booster_round_trips_model_bytes_and_the_version_is_their_hash():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    booster = xgboost.train(
        {"objective": "binary:logistic"}, xgboost.DMatrix(X, label=X[:, 0] > 0, feature_names=["a", "b", "c"]), 5
    )
    raw = model_bytes(booster)
    assert raw.startswith(b"{")  # XGBoost's JSON model, what model.json holds
    loaded = load_booster(raw, nthread=1)
    assert loaded.feature_names == ["a", "b", "c"]
    np.testing.assert_allclose(loaded.inplace_predict(X), booster.inplace_predict(X))
    assert model_version(raw) == hashlib.sha256(raw).hexdigest()[:12]
    assert model_version(model_bytes(loaded)) == model_version(raw), "loading does not change the model"
