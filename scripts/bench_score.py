"""Scoring throughput: the Ray scoring path vs single-process `Booster.inplace_predict` on the same rows.

    .venv/bin/python scripts/bench_score.py                 # 1M personas x 110 features, one real model
    .venv/bin/python scripts/bench_score.py --rows 200000   # quicker

What it does, in one process and one run:
  1. synthesises a feature table (persona_id, as_of, ~110 float64/int64 columns with NaNs) and writes it
     as the run's features/ table (local Parquet under --out), like the features stage would;
  2. trains a real XGBoost model on a sample (hist, depth 6, --rounds trees) and saves model.json +
     model_card.json as the train stage would;
  3. baseline: the same rows as one float32 matrix in this process, `inplace_predict` with all cores
     (the Arrow -> numpy conversion is timed separately);
  4. Ray: `jobs.score.scoring_map` (read Parquet -> actor pool that loads the model once -> scores) on a
     fresh local Ray, timed with `ray.init` (first execution), on a running Ray (each execution starts its
     actors), and without start-up (marginal rate); plus the whole `score_dataset` (scores + distributed
     percentiles + membership) for reference.
Baseline and Ray rounds are interleaved (--repeat; the best round is reported, every round is listed) so
both paths see the same machine. Prints a
JSON report with three ratios, baseline rows/s over Ray rows/s: `ratio_without_startup` (the target: within
1.5x; the marginal rate (N - n) / (t(N) - t(n)) from executions on N rows and on a small n-row table, so the
fixed cost of an execution cancels), `ratio_execution` (one execution on a running Ray: actor start, model
load, Parquet read, scoring) and `ratio_with_startup` (plus `ray.init`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs import io  # noqa: E402
from jobs.config import JobConfig, RayConfig, ScoringConfig, SegmentConfig, StorageConfig  # noqa: E402

AS_OF = dt.date(2026, 3, 1)


def synth_features(rows: int, n_features: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns: dict[str, pa.Array] = {
        "persona_id": pa.array([f"p{i:09d}" for i in range(rows)]),
        "as_of": pa.array(np.full(rows, np.datetime64(AS_OF, "D"))).cast(pa.date32()),
    }
    for j in range(n_features):
        name = f"f{j:03d}"
        if j % 10 == 9:  # counts
            columns[name] = pa.array(rng.poisson(2.0, rows).astype(np.int64))
        else:
            values = rng.gamma(1.5, 10.0, rows) if j % 3 else rng.normal(0, 1, rows)
            values[rng.random(rows) < 0.05] = np.nan
            columns[name] = pa.array(values)
    return pa.table(columns)


def write_table(table: pa.Table, table_path: str, storage: StorageConfig, files: int) -> None:
    """A published table in `files` Parquet files, as the features stage's Ray write leaves it (one file
    would be one read task: the whole read on one core)."""
    import pyarrow.parquet as pq

    write_id = io.new_write_id()
    folder = io.join(table_path, write_id)
    os.makedirs(folder, exist_ok=True)
    step = -(-table.num_rows // files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), io.join(folder, f"part-{i:05d}.parquet"), row_group_size=65536)
    io.publish_marker(table_path, write_id, storage)


def to_matrix(table: pa.Table, names: list[str]) -> np.ndarray:
    from jobs.score import feature_matrix

    return feature_matrix(table, names)


def train(table: pa.Table, names: list[str], rounds: int, sample: int, seed: int):
    import xgboost as xgb

    part = table.slice(0, min(sample, table.num_rows))
    x = to_matrix(part, names)
    rng = np.random.default_rng(seed)
    logit = 0.8 * np.nan_to_num(x[:, 0]) - 0.05 * np.nan_to_num(x[:, 1]) + 0.3 * np.nan_to_num(x[:, 9]) - 1.0
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-logit))).astype(int)
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": 6, "eta": 0.1,
              "subsample": 0.8, "colsample_bytree": 0.8}
    return xgb.train(params, xgb.DMatrix(x, label=y, feature_names=names), rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=110)
    parser.add_argument("--rounds", type=int, default=200, help="trees in the model")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--cpus-per-actor", type=float, default=0.5)
    parser.add_argument("--threads-per-actor", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=65536)
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    parser.add_argument("--out", default=".bench/score", help="local folder for the bench run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-full", action="store_true", help="skip the score_dataset (percentiles) timing")
    parser.add_argument("--reuse", action="store_true", help="reuse the table and model of an earlier run in --out")
    parser.add_argument("--files", type=int, default=16, help="Parquet files of the features table")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved baseline / Ray rounds (best is kept)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("SEGMENTS_PROGRESS", "0")

    storage = StorageConfig()
    run_dir = os.path.abspath(os.path.join(args.out, "runs", "bench"))
    segment = SegmentConfig(name="bench_segment", kind="ecommerce_buyers")
    config = JobConfig(
        root=os.path.abspath(args.out),
        segments=[segment],
        storage=storage,
        ray=RayConfig(num_cpus=args.num_cpus),
        scoring=ScoringConfig(actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                              threads_per_actor=args.threads_per_actor, batch_size=args.batch_size),
    )
    report: dict[str, object] = {"rows": args.rows, "features": args.features, "trees": args.rounds,
                                 "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg(),
                                 "scoring": config.scoring.model_dump()}

    features_path = io.join(run_dir, "features")
    model_path = io.join(run_dir, "models", segment.name, "model.json")
    t = time.perf_counter()
    if args.reuse and io.exists(io.join(features_path, io.MARKER), storage) and io.exists(model_path, storage):
        import xgboost as xgb

        table = io.read_arrow(features_path, storage)
        booster = xgb.Booster()
        booster.load_model(model_path)
        assert table.num_rows == args.rows, "--reuse: the saved table has another size"
        names = [c for c in table.column_names if c not in ("persona_id", "as_of")]
        report["reused_inputs_s"] = round(time.perf_counter() - t, 2)
    else:
        table = synth_features(args.rows, args.features, args.seed)
        names = [c for c in table.column_names if c not in ("persona_id", "as_of")]
        write_table(table, features_path, storage, args.files)
        report["synth_and_write_s"] = round(time.perf_counter() - t, 2)

        t = time.perf_counter()
        booster = train(table, names, args.rounds, 50_000, args.seed)
        raw = bytes(booster.save_raw("json"))
        version = hashlib.sha256(raw).hexdigest()[:12]
        models = io.join(run_dir, "models", segment.name)
        io.write_bytes(io.join(models, "model.json"), raw, storage)
        io.write_json(io.join(models, "model_card.json"), {
            "segment": segment.name, "kind": segment.kind, "status": "trained", "reason": None,
            "model_version": version, "feature_names": names, "feature_types": ["q"] * len(names),
        }, storage)
        report["train_s"] = round(time.perf_counter() - t, 2)
    report["trees"] = booster.num_boosted_rounds()

    # --- baseline inputs: the same rows as one float32 matrix in this process
    t = time.perf_counter()
    matrix = to_matrix(table, names)
    convert_s = time.perf_counter() - t
    booster.set_param({"nthread": os.cpu_count() or 1})
    booster.inplace_predict(matrix[:1000])  # warm-up
    small_rows = max(10_000, args.rows // 50)
    write_table(table.slice(0, small_rows), io.join(run_dir, "features_small"), storage,
                max(1, round(args.files * small_rows / args.rows)))
    del table

    import ray

    from jobs.raysession import ray_session
    from jobs.score import load_model_specs, read_features, score_dataset, scoring_map

    specs, _ = load_model_specs(config, run_dir, names)
    all_eligible = lambda segment, batch, categories=None: np.ones(batch.num_rows, dtype=bool)  # noqa: E731

    def ray_execution(table_name: str) -> tuple[float, pa.Table]:
        """One Ray Data execution of the scoring map (read Parquet, actor pool, scores), consumed in full."""
        start = time.perf_counter()
        ds = scoring_map(read_features(io.join(run_dir, table_name), storage, len(names) + 2), specs, config, all_eligible)
        tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
        return time.perf_counter() - start, pa.concat_tables(tables)

    t0 = time.perf_counter()
    rounds = []
    with ray_session(config.ray):
        init_s = time.perf_counter() - t0
        cold_s, out = ray_execution("features")
        # interleaved rounds, so both paths see the same machine (this one is shared): best round wins
        for _ in range(args.repeat):
            t = time.perf_counter()
            expected = booster.inplace_predict(matrix)
            base_s = time.perf_counter() - t
            big_s, out = ray_execution("features")
            small_s, _ = ray_execution("features_small")
            marginal = (args.rows - small_rows) / max(big_s - small_s, 1e-9)
            rounds.append({"baseline_predict_s": round(base_s, 3), "ray_execution_s": round(big_s, 3),
                           f"ray_execution_{small_rows}_rows_s": round(small_s, 3),
                           "ratio_without_startup": round((args.rows / base_s) / marginal, 2),
                           "ratio_execution": round(big_s / base_s, 2),
                           "load_avg_1m": round(os.getloadavg()[0], 2)})
        ids = np.array([int(p[1:]) for p in out.column("persona_id").to_pylist()])
        max_diff = float(np.max(np.abs(out.column("score").to_numpy() - expected[ids].astype(np.float64))))
        full_s = None
        if not args.skip_full:
            t = time.perf_counter()
            features_ds = read_features(features_path, storage, len(names) + 2)
            score_dataset(features_ds, specs, config, all_eligible).materialize()
            full_s = time.perf_counter() - t
        resources = ray.cluster_resources()
    assert out.num_rows == args.rows, out.num_rows

    # the round with the best (lowest) ratio without start-up: its three timings come from the same minute
    best = min(rounds, key=lambda r: r["ratio_without_startup"])
    base_s, big_s = best["baseline_predict_s"], best["ray_execution_s"]
    small_s = best[f"ray_execution_{small_rows}_rows_s"]
    # without start-up: the marginal rate, (N - n) rows over (t(N) - t(n)); the fixed cost of an execution
    # (actor start, model load, first read) cancels out
    marginal = (args.rows - small_rows) / max(big_s - small_s, 1e-9)
    base_rate = args.rows / base_s
    report["baseline"] = {
        "predict_s": round(base_s, 3), "rows_per_s": round(base_rate),
        "arrow_to_numpy_s (not in predict_s)": round(convert_s, 3),
        "rows_per_s_with_conversion": round(args.rows / (base_s + convert_s)),
    }
    report["ray"] = {
        "cluster_cpus": resources.get("CPU"),
        "ray_init_s": round(init_s, 2),
        "first_execution_s": round(cold_s, 2),
        "rows_per_s_with_startup (ray.init + first execution)": round(args.rows / (init_s + cold_s)),
        "execution_s (Ray up; actor start + model load + read + score)": round(big_s, 3),
        "rows_per_s_execution": round(args.rows / big_s),
        f"execution_s_{small_rows}_rows": round(small_s, 3),
        "rows_per_s_without_startup (marginal)": round(marginal),
        "score_dataset_with_percentiles_s": round(full_s, 2) if full_s else None,
        "max_abs_diff_vs_baseline": max_diff,
    }
    report["rounds"] = rounds
    report["ratio_without_startup_median"] = float(np.median([r["ratio_without_startup"] for r in rounds]))
    report["ratio_without_startup (best round)"] = round(base_rate / marginal, 2)
    report["ratio_execution"] = round(base_rate / (args.rows / big_s), 2)
    report["ratio_with_startup"] = round(base_rate / (args.rows / (init_s + cold_s)), 2)
    report["target_within_1_5x (without start-up, median round)"] = report["ratio_without_startup_median"] <= 1.5
    report["load_avg_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))

if __name__ == "__main__":
    main()
