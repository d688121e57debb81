"""Benchmark of the features stage: the Ray path against the same computation in one process.

    .venv/bin/python scripts/bench_features.py [--persons 10000 20000] [--partitions 8] [--repeat 3]

For each size it generates events with `jobs.synthetic.generate_events` (20k persons ~ 1M events) and writes
them as Parquet under .bench/features/. The personas are a stand-in for identity resolution, used ONLY in
this benchmark: `persona_id` = a hash of `true_person_id`, so the numbers do not depend on the resolver;
the ground-truth column is then dropped, and the features code reads only `INPUT_COLUMNS` anyway.

The feature categories are what the run plan chooses for the events (`jobs.run.plan.build_plan`).
Both sides start from the events already in memory (one Arrow table for the baseline, the same rows as
Ray object-store blocks of 100k rows for Ray) and stop when every persona's features exist:
  * baseline: `features.compute.compute_local` in this process (the same vectorised aggregations and
    global statistics, no Ray, no shuffle);
  * ray warm: `features.distributed.features_distributed` at the one cut-off (select, hash shuffle by
    persona, global stats, social shuffle, per-partition features) until every partition's table is built,
    with Ray already started;
  * ray cold: the first such run plus `ray.init` (worker start-up and first imports included).
Ray and baseline runs alternate, so both see the same machine load (other jobs on a shared machine make
single timings swing); each time reported is the best of --repeat runs, and the median ratio of the
interleaved pairs is reported beside the ratio of the bests.
Reading the Parquet files is timed apart (pyarrow.parquet.read_table vs ray.data.read_parquet), as it is
the storage layer's cost, not the features'. It prints personas/s, events/s, the ray / baseline time ratio
and seconds per million events at each size (linear growth = about the same at both sizes); the JSON goes
to .bench/features.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.compute import compute_local  # noqa: E402
from features.distributed import features_distributed  # noqa: E402
from features.inputs import INPUT_COLUMNS  # noqa: E402
from jobs.config import FeaturesConfig, JobConfig, PlanView, RayConfig  # noqa: E402
from jobs.run.plan import EventFacts, block_facts, build_plan  # noqa: E402
from jobs.synthetic import generate_events  # noqa: E402


def make_events(persons: int, days: int, seed: int, folder: Path) -> tuple[int, dt.date]:
    """Generate, attach stand-in personas (hash of the ground truth: benchmark only), write Parquet files."""
    table = generate_events(persons=persons, partners=8, days=days, seed=seed)
    truth = table.column("true_person_id").to_numpy(zero_copy_only=False).astype(object)
    import pandas as pd

    persona = pd.util.hash_array(truth, categorize=True).astype(np.uint64)
    table = table.drop_columns(["true_person_id"])
    table = table.append_column("persona_id", pa.array([f"{h:016x}" for h in persona], pa.string()))
    table = table.append_column("session_key", table.column("session_id"))
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        old.unlink()
    step = 100_000
    for i, start in enumerate(range(0, table.num_rows, step)):
        pq.write_table(table.slice(start, step), folder / f"part-{i:04d}.parquet")
    last = pc.max(table.column("ts")).as_py()
    return table.num_rows, last.date() + dt.timedelta(days=1)


def plan_categories(table: pa.Table, as_of: dt.date, config: JobConfig) -> tuple[str, ...]:
    """The feature categories the run plan would choose for these events at this cut-off."""
    view = PlanView.from_config(config.model_copy(update={"features": FeaturesConfig(as_of=as_of)}))
    return build_plan("bench", as_of, view, EventFacts.from_table(block_facts(table))).categories


def baseline(table: pa.Table, as_of: dt.date, config: JobConfig, categories) -> tuple[float, int]:
    started = time.perf_counter()
    rows = compute_local(table, as_of, config.features, categories).num_rows
    return time.perf_counter() - started, rows


def on_ray(events, as_of: dt.date, config: JobConfig, categories) -> tuple[float, int]:
    import ray

    from jobs.identity.steps import num_rows

    counter = ray.remote(num_rows)
    started = time.perf_counter()
    (features,) = features_distributed(events, [as_of], categories, config.features, config.ray.num_partitions)
    rows = sum(ray.get([counter.remote(block) for block in features]))  # waits for every partition's features
    return time.perf_counter() - started, rows


def read_times(folder: Path) -> dict[str, float]:
    import ray.data

    started = time.perf_counter()
    pq.read_table(folder, columns=INPUT_COLUMNS)
    arrow = time.perf_counter() - started
    started = time.perf_counter()
    ray.data.read_parquet(str(folder)).select_columns(INPUT_COLUMNS).materialize()
    return {"read_pyarrow_s": round(arrow, 3), "read_ray_data_s": round(time.perf_counter() - started, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, nargs="+", default=[10_000, 20_000])
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--partitions", type=int, default=RayConfig().num_partitions)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / ".bench" / "features.json"))
    args = parser.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("SEGMENTS_PROGRESS", "0")
    config = JobConfig(ray=RayConfig(num_partitions=args.partitions, num_cpus=args.cpus))
    sizes = []
    for persons in args.persons:
        folder = ROOT / ".bench" / "features" / f"events-{persons}"
        events, as_of = make_events(persons, args.days, seed=7, folder=folder)
        sizes.append({"persons_generated": persons, "events": events, "as_of": as_of, "folder": folder})
        print(f"generated {events:,} events of {persons:,} people -> {folder}", flush=True)

    import ray

    from jobs.raykit.session import ray_session

    results = []
    started = time.perf_counter()
    with ray_session(config.ray):
        startup = time.perf_counter() - started
        for i, size in enumerate(sizes):
            table = pq.read_table(size["folder"], columns=INPUT_COLUMNS)
            categories = plan_categories(table, size["as_of"], config)
            step = 100_000
            blocks = [ray.put(table.slice(s, step)) for s in range(0, table.num_rows, step)]
            events = blocks
            cold = on_ray(events, size["as_of"], config, categories)[0] + startup if i == 0 else None
            # interleaved, so that both sides see the same machine load; a pair's ratio compares like with like
            runs, base = [], []
            for _ in range(args.repeat):
                runs.append(on_ray(events, size["as_of"], config, categories))
                base.append(baseline(table, size["as_of"], config, categories))
            base_s, personas = min(base)
            ray_s, ray_personas = min(runs)
            assert ray_personas == personas, (ray_personas, personas)
            paired = sorted(r[0] / b[0] for r, b in zip(runs, base))
            row = {
                "events": size["events"],
                "personas": personas,
                "as_of": size["as_of"].isoformat(),
                "baseline_s": round(base_s, 3),
                "ray_s": round(ray_s, 3),
                "ratio": round(ray_s / base_s, 3),
                "ratio_median_of_pairs": round(paired[len(paired) // 2], 3),
                "baseline_events_per_s": round(size["events"] / base_s),
                "ray_events_per_s": round(size["events"] / ray_s),
                "baseline_personas_per_s": round(personas / base_s),
                "ray_personas_per_s": round(personas / ray_s),
                "baseline_s_per_m_events": round(base_s / size["events"] * 1e6, 3),
                "ray_s_per_m_events": round(ray_s / size["events"] * 1e6, 3),
                "all_baseline_s": [round(b[0], 3) for b in base],
                "all_ray_s": [round(r[0], 3) for r in runs],
                **read_times(size["folder"]),
            }
            if cold is not None:
                row.update(
                    ray_cold_s=round(cold, 3), ray_startup_s=round(startup, 3), ratio_cold=round(cold / base_s, 3)
                )
            results.append(row)
            print(json.dumps(row), flush=True)
            del blocks, events
        cluster = {"cpus": ray.cluster_resources().get("CPU"), "partitions": args.partitions}

    report = {"machine_cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], **cluster, "sizes": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print()
    print(
        f"{'events':>10} {'personas':>9} {'baseline s':>11} {'ray s':>7} {'ratio':>6} {'pairs':>6} {'ray ev/s':>10} "
        f"{'ray pers/s':>10} {'base s/M ev':>11} {'ray s/M ev':>10}"
    )
    for r in results:
        print(
            f"{r['events']:>10,} {r['personas']:>9,} {r['baseline_s']:>11.2f} {r['ray_s']:>7.2f} {r['ratio']:>6.2f} "
            f"{r['ratio_median_of_pairs']:>6.2f} {r['ray_events_per_s']:>10,} {r['ray_personas_per_s']:>10,} "
            f"{r['baseline_s_per_m_events']:>11.2f} {r['ray_s_per_m_events']:>10.2f}"
        )
    print("ratio = best ray / best baseline; pairs = median of the interleaved runs' ray / baseline")
    first = results[0]
    if "ray_cold_s" in first:
        print(
            f"with Ray start-up ({first['ray_startup_s']:.1f}s init + first run): {first['ray_cold_s']:.2f}s, "
            f"ratio {first['ratio_cold']:.2f} at {first['events']:,} events"
        )
    for r in results:
        print(
            f"reading {r['events']:,} events: pyarrow {r['read_pyarrow_s']:.2f}s, "
            f"ray.data.read_parquet {r['read_ray_data_s']:.2f}s"
        )
    print(f"load average at the end: {report['load_avg_1m']:.1f} on {report['machine_cpus']} CPUs")


if __name__ == "__main__":
    main()
