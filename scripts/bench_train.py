#!/usr/bin/env python
"""Ray Train overhead: the train stage's Ray Train XGBoost path vs plain single-process xgboost.train.

Same synthetic data (N rows x 110 float32 features, ~20% positives from a logistic model of a few
columns), same parameters (config.training.params, a fixed number of rounds, no early stopping so both
do exactly the same boosting work), same thread count, in the same process and run:

* plain:        QuantileDMatrix from the in-memory numpy arrays + xgboost.train (train + validation eval);
* ray (warm):   Ray already up: a Ray Dataset of the same arrays and the validation flag ->
                `jobs.model.fit.fit_booster` (XGBoostTrainer,
                one worker with config.training.cpus_per_worker CPUs, shard -> QuantileDMatrix, the same
                RayTrainReportCallback checkpoints every report_every rounds) -> model bytes on the driver;
* ray (+start): the same plus `ray.init` of a local Ray (measured once, added).

    .venv/bin/python scripts/bench_train.py                 # 100k and 1M rows, training.num_boost_round rounds
    .venv/bin/python scripts/bench_train.py --rows 100000 --rounds 50 --out .bench/train.json

Prints a table and writes JSON (default .bench/bench_train.json). Target: ray (warm) / plain <= 1.5
at 1M rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_data(rows: int, cols: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, cols)).astype(np.float32)
    X[rng.random((rows, cols)) < 0.05] = np.nan
    x0, x1, x2, x3 = (np.nan_to_num(X[:, j]) for j in range(4))
    signal = x0 + 0.7 * x1 * x2 - 0.5 * np.abs(x3)
    y = (signal + rng.normal(size=rows) > 1.2).astype(np.float32)
    return X, y


def plain_fit(X, y, valid, names, params, rounds, nthread) -> float:
    import xgboost

    started = time.perf_counter()
    dtrain = xgboost.QuantileDMatrix(X[~valid], label=y[~valid], feature_names=names, nthread=nthread)
    dvalid = xgboost.QuantileDMatrix(X[valid], label=y[valid], ref=dtrain, feature_names=names, nthread=nthread)
    booster = xgboost.train(
        {**params, "nthread": nthread},
        dtrain,
        num_boost_round=rounds,
        evals=[(dvalid, "validation")],
        verbose_eval=False,
    )
    booster.save_raw("json")
    return time.perf_counter() - started


def ray_fit(X, y, valid, names, config, rounds, spw) -> float:
    import pyarrow as pa
    import ray.data

    from jobs.model.examples import LABEL, VALID
    from jobs.model.fit import fit_booster

    started = time.perf_counter()
    dataset = ray.data.from_arrow(pa.table({**{n: X[:, j] for j, n in enumerate(names)}, LABEL: y, VALID: valid}))
    with tempfile.TemporaryDirectory() as storage:
        models, _ = fit_booster(
            dataset,
            training=config.training,
            feature_names=names,
            feature_types=["q"] * len(names),
            scale_pos_weight=spw,
            storage_path=storage,
            storage_filesystem=None,
            name=f"bench-{len(y)}",
        )
    assert models
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--cols", type=int, default=110)
    parser.add_argument("--rounds", type=int, default=None, help="boosting rounds (default: training.num_boost_round)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--repeat", type=int, default=1, help="interleaved plain/Ray pairs per size; the median pair counts"
    )
    parser.add_argument("--out", default=".bench/bench_train.json")
    args = parser.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # as jobs.model.fit sets it
    os.environ.setdefault("SEGMENTS_PROGRESS", "0")
    from jobs.config import JobConfig

    nthread = os.cpu_count() or 1
    base = JobConfig()
    args.rounds = args.rounds or base.training.num_boost_round
    config = base.model_copy(
        update={
            "training": base.training.model_copy(
                update={"num_boost_round": args.rounds, "early_stopping_rounds": None, "nthread": nthread}
            )
        }
    )
    params = {k: v for k, v in config.training.params.items()}
    names = [f"f{j:03d}" for j in range(args.cols)]
    results = []
    ray_started = None
    for rows in args.rows:
        X, y = make_data(rows, args.cols, args.seed)
        valid = np.random.default_rng(args.seed + 1).random(rows) < config.training.validation_share
        spw = float((1 - y[~valid]).sum() / max(1.0, y[~valid].sum()))
        params_run = {**params, "scale_pos_weight": spw, "seed": config.training.seed}
        pairs = []
        for _ in range(args.repeat):  # interleaved, so a load swing on a shared machine hits both sides
            plain = plain_fit(X, y, valid, names, params_run, args.rounds, nthread)
            if ray_started is None:
                import ray

                from jobs.raykit.session import configure_data_context

                t0 = time.perf_counter()
                ray.init(include_dashboard=False, log_to_driver=False)
                configure_data_context()
                ray_started = time.perf_counter() - t0
            pairs.append((plain, ray_fit(X, y, valid, names, config, args.rounds, spw)))
        plain, warm = sorted(pairs, key=lambda p: p[1] / p[0])[len(pairs) // 2]  # the median pair
        row = {
            "rows": rows,
            "cols": args.cols,
            "rounds": args.rounds,
            "nthread": nthread,
            "repeat": args.repeat,
            "plain_s": round(plain, 2),
            "ray_warm_s": round(warm, 2),
            "ray_startup_s": round(ray_started, 2),
            "ratio_warm": round(warm / plain, 3),
            "ratio_with_startup": round((warm + ray_started) / plain, 3),
            "pairs": [[round(a, 2), round(b, 2)] for a, b in pairs],
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    import ray

    ray.shutdown()
    print(f"\n{'rows':>10} {'plain s':>9} {'ray s':>9} {'ratio':>7} {'+start s':>9} {'ratio':>7}")
    for r in results:
        print(
            f"{r['rows']:>10,} {r['plain_s']:>9.2f} {r['ray_warm_s']:>9.2f} {r['ratio_warm']:>7.2f} "
            f"{r['ray_warm_s'] + r['ray_startup_s']:>9.2f} {r['ratio_with_startup']:>7.2f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "machine": {"cpus": os.cpu_count()}}, indent=2))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
