"""The one booster load path, the one model version, and the threads a booster gets in a Ray worker."""

from __future__ import annotations

import hashlib

import numpy as np
import xgboost

from jobs.model.baselines import fit_rfm
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


def test_openmp_threads_lifts_rays_one_thread_limit_in_fractional_cpu_workers(ray_cluster):
    """Ray sets OMP_NUM_THREADS=1 in a 0.5-CPU worker and XGBoost caps nthread at OpenMP's maximum:
    without `openmp_threads` a Train worker asked for 2 threads trains on 1."""

    def openmp_limits() -> tuple[list[int], list[int]]:
        import xgboost  # noqa: F401 - loads the OpenMP runtime XGBoost uses
        from threadpoolctl import threadpool_info

        from jobs.model.booster import openmp_threads

        def limits() -> list[int]:
            return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"]

        before = limits()
        with openmp_threads(2):
            inside = limits()
        return before, inside

    before, inside = ray_cluster.get(ray_cluster.remote(num_cpus=0.5)(openmp_limits).remote())
    assert before and set(before) == {1}, "Ray's own limit in a fractional-CPU worker"
    assert set(inside) == {2}


def test_rfm_baseline_is_a_monotone_booster_on_its_own_columns():
    rng = np.random.default_rng(0)
    n = 4000
    orders = rng.poisson(2, n).astype(float)
    days = np.where(orders > 0, rng.uniform(0, 365, n), np.nan)
    y = (rng.random(n) < 0.02 + 0.05 * np.minimum(orders, 5) / 5).astype(int)
    raw = fit_rfm({"days_since_last_purchase": days, "orders_365d": orders}, y, rng.random(n) < 0.2, seed=1)
    booster = load_booster(raw)
    assert booster.feature_names == ["days_since_last_purchase", "orders_365d"]
    grid = np.array([[30.0, k] for k in range(8)], np.float32)
    p = booster.inplace_predict(grid)
    assert np.all(np.diff(p) >= -1e-7), "more orders never lower the score"
    later = booster.inplace_predict(np.array([[d, 2.0] for d in (1, 50, 200, 360)], np.float32))
    assert np.all(np.diff(later) <= 1e-7), "more days since the last purchase never raise it"
    assert 0 < p.mean() < 1
