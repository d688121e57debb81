"""The one booster load path, the one model version, and the threads a booster gets in a Ray worker."""

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
