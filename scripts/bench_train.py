#!/usr/bin/env python
"""Ray Train overhead: the train stage vs plain single-process xgboost.train doing the same boosters.

**Whole run** (default, `--persons`): a demo-like sample (`segments demo`'s generator: 8 partners, 180 days,
seed 7) goes through resolve -> plan -> features -> labels on a local Ray (not timed); then, in the same
process and run:

* stage:  the train stage as the runner calls it (`run_pipeline(..., names=["train"])`): every segment's
          data, gates, the look-alikes on Ray Train (one run for the evaluation fits, refits included while
          they are small), calibration, the RFM boosters, the out-of-time evaluation, the champion, the bundle;
* plain:  the same look-alike boosters on the same rows in this one process: the features and labels
          partitions read with pyarrow, joined, each segment's rows prepared by the stage's own
          `prepare_batch`, put in the same (sample-key) order, QuantileDMatrix + xgboost.train with the same
          params and early stopping, as many fits at once as this machine has cores (threads of one
          process, one OpenMP thread each, the largest first: the stage's own rule, faster than one fit at
          a time on every core): every trained segment's evaluation fit and the production refit of each
          XGBoost champion, then each segment's RFM booster (the governance baseline, on the stage's sample
          of the same rows) and the production refit of each RFM champion: the boosters a run needs; the
          stage's speculative refits and everything else it does count against it;
* ratio:  stage / plain, and (stage + start-up) / plain. Start-up is `ray.init` and the worker processes'
          imports of the stage's modules (one task per CPU, before the stage: the plain side's imports are
          done before its clock starts too, and in `segments run` the workers have run the earlier stages).
          Each plain evaluation fit's best iteration is checked against the stage's (the same booster on the
          same rows).

**One booster** (`--rows`): synthetic data (N rows x 110 float32 features, ~20% positives), the same
parameters and a fixed number of rounds, no early stopping: plain QuantileDMatrix + xgboost.train against
`jobs.model.fit.fit_boosters` with that one fit (one Ray task up to `training.one_task_rows` rows, else one
XGBoostTrainer run; `--one-task-rows 0` forces Ray Train). Both modes print which runner fitted.

    .venv/bin/python scripts/bench_train.py                          # whole run at the demo's size (3000)
    .venv/bin/python scripts/bench_train.py --persons 3000 20000
    .venv/bin/python scripts/bench_train.py --rows 100000 --rounds 50

Prints a table and writes JSON (default .bench/bench_train.json). Target (issue 12 item 3): stage / plain
<= 1.5.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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


def ray_fit(X, y, valid, names, config, rounds, spw) -> tuple[float, str]:
    import pyarrow as pa
    import ray

    from jobs.model.examples import FIT, LABEL, SAMPLE, VALID
    from jobs.model.fit import fit_boosters

    started = time.perf_counter()
    columns = {**{n: X[:, j] for j, n in enumerate(names)}, LABEL: y, VALID: valid, SAMPLE: np.arange(len(y)) / len(y)}
    columns[FIT] = np.full(len(y), "bench")
    blocks = [ray.put(pa.table(columns))]
    with tempfile.TemporaryDirectory() as storage:
        models, run = fit_boosters(
            blocks,
            len(y),
            {"bench": spw},
            training=config.training,
            feature_names=names,
            feature_types=["q"] * len(names),
            storage_path=storage,
            storage_filesystem=None,
            name=f"bench-{len(y)}",
        )
    assert models
    return time.perf_counter() - started, run["runner"]


RAY_START: list[float] = []


def _warm_workers(ray) -> None:
    """Has each of the local Ray's worker processes import the stage's modules, as the plain side has before
    its clock starts: one task per CPU at once, each holding its CPU while it imports. In `segments run` the
    train stage's workers have run the earlier stages; this start-up is counted in the ratio with start-up."""

    @ray.remote(num_cpus=1)
    def import_stage_modules() -> int:
        import jobs.model.training  # noqa: F401
        import jobs.storage.tables  # noqa: F401

        return os.getpid()

    ray.get([import_stage_modules.remote() for _ in range(int(ray.cluster_resources().get("CPU", 1)))])


def whole_run(persons: int, work: Path, nthread: int) -> dict:
    """The train stage against plain xgboost.train on the same boosters, for a sample of `persons`."""
    import ray

    from jobs.config import JobConfig
    from jobs.raykit.session import LOCAL_SYSTEM_CONFIG, configure_data_context
    from jobs.run.demo import DAYS, PARTNERS, SEED
    from jobs.run.layout import RunLayout
    from jobs.run.pipeline import run_pipeline
    from jobs.stages import pipeline
    from jobs.storage import delete
    from jobs.synthetic import write_events

    root = work / f"persons-{persons}"
    events = root / "events"
    if not events.exists():
        write_events(str(events), JobConfig().storage, persons=persons, partners=PARTNERS, days=DAYS, seed=SEED)
    config = JobConfig(events=str(events), root=str(root), run_id="bench")
    if not ray.is_initialized():  # measured once, counted in every size's ratio with start-up
        started = time.perf_counter()
        # the local Ray `segments` starts (its worker pool's idle grace included), not Ray's defaults
        ray.init(include_dashboard=False, log_to_driver=False, _system_config=LOCAL_SYSTEM_CONFIG)
        configure_data_context()
        _warm_workers(ray)
        RAY_START.append(time.perf_counter() - started)
    ray_start = RAY_START[0]
    layout = RunLayout(str(root / "runs" / "bench"))
    delete(layout.table("models"), config.storage)  # the train stage runs again on every call
    upstream = run_pipeline(config, pipeline(), names=["resolve", "plan", "features", "labels"], layout=layout)
    assert upstream["status"] == "succeeded", upstream
    started = time.perf_counter()
    summary = run_pipeline(config, pipeline(), names=["train"], layout=layout)
    stage = time.perf_counter() - started
    assert summary["status"] == "succeeded", summary
    plain, fits, rfm_boosters = plain_boosters(config, layout, nthread)
    return {
        "persons": persons,
        "nthread": nthread,
        "fits": fits,
        "rfm_boosters": rfm_boosters,
        "stage_s": round(stage, 2),
        "stage_summary_s": summary["stages"]["train"]["seconds"],
        "plain_s": round(plain, 2),
        "ray_startup_s": round(ray_start, 2),
        "ratio_warm": round(stage / plain, 3),
        "ratio_with_startup": round((stage + ray_start) / plain, 3),
    }


def plain_boosters(config, layout, nthread: int) -> tuple[float, list[dict], int]:
    """The run's boosters in this process, from the same tables; (seconds, one line per look-alike fit, the
    number of RFM boosters)."""
    import pyarrow.compute as pc
    import xgboost

    from features.catalog import feature_names, xgboost_feature_types
    from features.matrix import feature_matrix
    from jobs.model.baselines import default_rfm_features, fit_rfm
    from jobs.model.examples import LABEL, SAMPLE, VALID, prepare_batch, sample_rows
    from jobs.model.fit import _best
    from jobs.run.layout import FEATURES, LABELS, MODELS, RunLayout
    from jobs.run.plan import RunPlan
    from jobs.segments.definitions import label_column
    from jobs.storage import TableIn, read_json

    models = TableIn(MODELS, layout.table(MODELS), config.storage)
    plan = RunPlan.from_json(read_json(layout.plan, config.storage))
    categories = list(models.marker["categories"])
    features_config = config.features.model_copy(update={"categories": categories})
    names, types = feature_names(features_config), xgboost_feature_types(features_config)
    t = config.training
    wanted = []  # (segment, as_of, the stage's figures of that fit)
    rfm = []  # (segment, as_of): the RFM boosters the stage fits, each segment's governance baseline
    for segment in config.segments:
        entry = models.marker["segments"].get(segment.name) or {}
        if entry.get("status") == "skipped":
            continue
        metrics = json.loads(models.file(RunLayout.model_file(segment.name, "metrics.json")))
        cut = plan.for_segment(segment.name)
        wanted.append((segment, cut.train_as_of, metrics["training"]))
        rfm.append((segment, cut.train_as_of))
        production = metrics["champion"]["fits"].get("production") or {}
        if production.get("procedure") == "xgboost" and production.get("refit"):
            wanted.append((segment, cut.refit_as_of, metrics["production_training"]))
        if production.get("procedure") == "rfm" and production.get("refit"):
            rfm.append((segment, cut.refit_as_of))

    started = time.perf_counter()
    features = TableIn(FEATURES, layout.table(FEATURES), config.storage)
    labels = TableIn(LABELS, layout.table(LABELS), config.storage)
    snapshots = {}
    for as_of in sorted({as_of for _, as_of, _ in wanted}):
        snapshot = features.arrow(columns=["persona_id", *names], partition={"as_of": as_of})
        if labels.marker.get("partitions", {}).get(f"as_of={as_of.isoformat()}"):  # else nobody is positive
            present = [label_column(name) for name in labels.marker["cutoffs"][as_of.isoformat()]]
            labelled = labels.arrow(columns=["persona_id", *present], partition={"as_of": as_of})
            snapshot = snapshot.join(labelled, keys="persona_id", join_type="left outer")
        snapshots[as_of] = snapshot
    batches = {}
    for segment, as_of in dict.fromkeys([(segment, as_of) for segment, as_of, _ in wanted] + rfm):
        rows = prepare_batch(
            snapshots[as_of], segment, names, categories, t.validation_share, t.seed, label_column(segment.name)
        )
        batches[segment.name, as_of] = rows.take(pc.sort_indices(rows, [(SAMPLE, "ascending")]))
    prepared = []
    for segment, as_of, _ in wanted:
        rows = batches[segment.name, as_of]
        valid = rows.column(VALID).to_numpy(zero_copy_only=False)
        prepared.append((feature_matrix(rows, names), rows.column(LABEL).to_numpy().astype(np.float32), valid))
    rfm_columns = list(t.rfm_features or default_rfm_features(names))
    rfm_rows = []  # the stage's sample: at most training.max_metric_rows rows by the sample key (`sample_rows`)
    for segment, as_of in rfm:
        rows = batches[segment.name, as_of]
        rfm_rows.append(sample_rows(rows, min(1.0, t.max_metric_rows / max(1, rows.num_rows)), rows.column_names))
    # as fast as one process fits independent boosters: up to `nthread` at once, each on nthread // that many
    # OpenMP threads (the stage's rule, `fit._fit_shard`), the largest first
    at_once = max(1, min(len(wanted), nthread))
    threads = max(1, nthread // at_once)
    metrics = [m for m in t.params.get("eval_metric", ["auc"]) if m != "auc"] + ["auc"]

    def fit(i: int) -> tuple[int, float]:
        X, y, valid = prepared[i]
        spw = float((y[~valid] == 0).sum() / max(1, y[~valid].sum()))
        fit_started = time.perf_counter()  # what the stage's `train_seconds` times: both matrices and the fit
        dtrain = xgboost.QuantileDMatrix(
            X[~valid], y[~valid], feature_names=names, feature_types=types, enable_categorical=True, nthread=threads
        )
        dvalid = xgboost.QuantileDMatrix(
            X[valid], y[valid], ref=dtrain, feature_names=names, feature_types=types, enable_categorical=True
        )
        params = {**t.params, "eval_metric": metrics, "nthread": threads, "seed": t.seed, "scale_pos_weight": spw}
        booster = xgboost.train(
            params,
            dtrain,
            num_boost_round=t.num_boost_round,
            evals=[(dvalid, "validation")],
            early_stopping_rounds=t.early_stopping_rounds,
            verbose_eval=False,
        )
        return _best(booster, t.early_stopping_rounds)[1], time.perf_counter() - fit_started

    def fit_baseline(rows) -> None:
        columns = {c: rows.column(c).to_numpy(zero_copy_only=False) for c in rfm_columns}
        valid = rows.column(VALID).to_numpy(zero_copy_only=False)
        fit_rfm(columns, rows.column(LABEL).to_numpy(), valid, seed=t.seed, nthread=threads)

    order = sorted(range(len(prepared)), key=lambda i: -len(prepared[i][1]))
    with ThreadPoolExecutor(at_once) as pool:
        lookalikes = pool.map(fit, order)  # queued at once, the largest first
        baselines = [pool.submit(fit_baseline, rows) for rows in rfm_rows]  # then the small RFM boosters
        fitted = dict(zip(order, lookalikes))
        for done in baselines:
            done.result()
    lines = []
    for i, (segment, as_of, stage) in enumerate(wanted):
        best_iteration, fit_seconds = fitted[i]
        lines.append(
            {
                "segment": segment.name,
                "as_of": as_of.isoformat(),
                "rows": len(prepared[i][1]),
                "best_iteration": best_iteration,
                "stage_best_iteration": stage.get("best_iteration"),
                "stage_runner": stage.get("fit_run", {}).get("runner"),
                "train_seconds": round(fit_seconds, 2),
                "stage_train_seconds": round(stage.get("train_seconds", 0.0), 2),
            }
        )
    return time.perf_counter() - started, lines, len(rfm_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, nargs="+", default=[3000], help="whole run: sample sizes")
    parser.add_argument("--work", default=".bench/train", help="whole run: where samples and runs are kept")
    parser.add_argument("--rows", type=int, nargs="+", default=None, help="one booster on synthetic rows instead")
    parser.add_argument("--cols", type=int, default=110)
    parser.add_argument("--rounds", type=int, default=None, help="boosting rounds (default: training.num_boost_round)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--one-task-rows", type=int, default=None, help="one booster: training.one_task_rows (0: Ray Train)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="interleaved plain/Ray pairs per size; the median pair counts"
    )
    parser.add_argument("--out", default=".bench/bench_train.json")
    args = parser.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("SEGMENTS_PROGRESS", "0")
    logging.getLogger("jobs").setLevel(logging.INFO)  # the stage's step times go to the run's log, as in the CLI
    from jobs.config import JobConfig

    nthread = os.cpu_count() or 1
    if args.rows is None:
        runs = [whole_run(persons, Path(args.work), nthread) for persons in args.persons]
        import ray

        ray.shutdown()
        for r in runs:
            print(json.dumps(r), flush=True)
        print(
            f"\n{'persons':>8} {'fits':>5} {'runner':>10} {'plain s':>8} {'stage s':>8} {'ratio':>6} {'+start s':>9} "
            f"{'ratio':>6}"
        )
        for r in runs:
            runners = "+".join(sorted({f["stage_runner"] or "?" for f in r["fits"]}))
            print(
                f"{r['persons']:>8,} {len(r['fits']):>5} {runners:>10} {r['plain_s']:>8.2f} {r['stage_s']:>8.2f} "
                f"{r['ratio_warm']:>6.2f} {r['stage_s'] + r['ray_startup_s']:>9.2f} {r['ratio_with_startup']:>6.2f}"
            )
        same = all(f["best_iteration"] == f["stage_best_iteration"] for r in runs for f in r["fits"])
        print(f"same best iteration as the stage in every fit: {same}")
        for r in runs:  # XGBoost's own time (matrices + boosting) on each side, without the data or the runner
            plain_fits, stage_fits = (
                sum(f[key] for f in r["fits"]) for key in ("train_seconds", "stage_train_seconds")
            )
            print(f"{r['persons']:,} persons: the fits alone {stage_fits:.2f} s in the stage, {plain_fits:.2f} s plain")
        _write(Path(args.out), {"whole_run": runs, "machine": {"cpus": os.cpu_count()}})
        return
    base = JobConfig()
    args.rounds = args.rounds or base.training.num_boost_round
    config = base.model_copy(
        update={
            "training": base.training.model_copy(
                update={"num_boost_round": args.rounds, "early_stopping_rounds": None, "nthread": nthread}
                | ({} if args.one_task_rows is None else {"one_task_rows": args.one_task_rows})
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

                from jobs.raykit.session import LOCAL_SYSTEM_CONFIG, configure_data_context

                t0 = time.perf_counter()
                ray.init(include_dashboard=False, log_to_driver=False, _system_config=LOCAL_SYSTEM_CONFIG)
                configure_data_context()
                ray_started = time.perf_counter() - t0
            seconds, runner = ray_fit(X, y, valid, names, config, args.rounds, spw)
            pairs.append((plain, seconds))
        plain, warm = sorted(pairs, key=lambda p: p[1] / p[0])[len(pairs) // 2]  # the median pair
        row = {
            "rows": rows,
            "cols": args.cols,
            "rounds": args.rounds,
            "nthread": nthread,
            "runner": runner,
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
    print(f"\n{'rows':>10} {'runner':>10} {'plain s':>9} {'ray s':>9} {'ratio':>7} {'+start s':>9} {'ratio':>7}")
    for r in results:
        print(
            f"{r['rows']:>10,} {r['runner']:>10} {r['plain_s']:>9.2f} {r['ray_warm_s']:>9.2f} {r['ratio_warm']:>7.2f} "
            f"{r['ray_warm_s'] + r['ray_startup_s']:>9.2f} {r['ratio_with_startup']:>7.2f}"
        )
    _write(Path(args.out), {"results": results, "machine": {"cpus": os.cpu_count()}})


def _write(out: Path, payload: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
