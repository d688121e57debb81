"""Fitting on Ray Train: XGBoost gets the threads it is given in fractional-CPU Ray workers."""

from __future__ import annotations


def test_openmp_threads_lifts_rays_one_thread_limit_in_fractional_cpu_workers(ray_cluster):
    """Ray sets OMP_NUM_THREADS=1 in a 0.5-CPU worker and XGBoost caps nthread at OpenMP's maximum:
    without `openmp_threads` a Train worker asked for 2 threads trains on 1."""

    def openmp_limits() -> tuple[list[int], list[int]]:
        import xgboost  # noqa: F401 - loads the OpenMP runtime XGBoost uses
        from threadpoolctl import threadpool_info

        from jobs.raykit.session import openmp_threads

        def limits() -> list[int]:
            return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"]

        before = limits()
        with openmp_threads(2):
            inside = limits()
        return before, inside

    before, inside = ray_cluster.get(ray_cluster.remote(num_cpus=0.5)(openmp_limits).remote())
    assert before and set(before) == {1}, "Ray's own limit in a fractional-CPU worker"
    assert set(inside) == {2}
