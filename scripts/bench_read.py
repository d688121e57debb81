#!/usr/bin/env python
"""Benchmark of reading clean JSON Lines (issue 14): the input reader before and after the line-tolerant
reader, against a plain single-process pyarrow read of the same files, all in one run.

Events come from `jobs.synthetic` (about 52 per person over 180 days at 8 partners), written as one JSON
Lines file per partner (ts as ISO-8601 text), or with `--format parquet` as `segments generate` writes them
(files of 50k rows, shared with bench_resolve). Measured, each `--repeat` times (the best is reported):
  * pyarrow: `pyarrow.json.read_json` (or `pyarrow.parquet.read_table`) of every file in this process, no
    normalisation (the floor);
  * local: `read_events_local`, the new reader and normaliser in this process;
  * ray_before: the reader of `--before` (a git revision; default the commit before the new reader):
    `ray.data.read_json` + `normalise_batch` per batch, every block materialised in the object store;
  * ray_after: `read_events` now (line-tolerant blocks, coercion, quarantine columns), hash-partitioned by
    (partner_id, event_id) into 8 partitions as the resolve stage reads, partitions materialised.
Ray's start-up is measured once and reported apart (the ray_* figures exclude it).

    .venv/bin/python scripts/bench_read.py --events 1000000
    .venv/bin/python scripts/bench_read.py --events 100000 --repeat 1   # quicker
    .venv/bin/python scripts/bench_read.py --format parquet --before 0079ccb  # vs the 200-block read

Prints a JSON object with seconds, events/s and ratios (ray_after / ray_before is the issue's figure).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVENTS_PER_PERSON = 52
BEFORE = "ceece6b"  # the last commit with the sampled JSON reader (ray.data.read_json)
RAY_DEFAULT_MIN_BLOCKS = 200  # Ray Data's read_op_min_num_blocks, which jobs.raykit.session now lowers


def write_json_lines(events: int, folder: Path) -> Path:
    """One JSON Lines file per partner, written once per size (reused while its _DONE marker is there)."""
    import pyarrow.compute as pc

    from jobs.synthetic import generate_events

    target = folder / f"jsonl-{events}"
    if (target / "_DONE").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    table = generate_events(persons=max(200, round(events / EVENTS_PER_PERSON)), partners=8, days=180, seed=5)
    table = table.set_column(
        table.schema.get_field_index("ts"), "ts", pc.strftime(table.column("ts"), format="%Y-%m-%dT%H:%M:%SZ")
    )
    for partner in pc.unique(table.column("partner_id")).to_pylist():
        part = table.filter(pc.equal(table.column("partner_id"), partner))
        with open(target / f"events-{partner}.jsonl", "w") as out:
            for batch in part.to_batches(50_000):
                for row in batch.to_pylist():
                    out.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
    (target / "_DONE").write_text("")
    return target


def old_reader(revision: str):
    """The reading module as it was at `revision`, imported under another name (its schema alongside)."""
    folder = Path(tempfile.mkdtemp(prefix="bench-read-"))
    package = folder / "old_contract"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("schema", "reading"):
        text = subprocess.run(
            ["git", "show", f"{revision}:jobs/contract/{name}.py"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        (package / f"{name}.py").write_text(text.replace("jobs.contract.schema", "old_contract.schema"))
    sys.path.insert(0, str(folder))
    # Ray's workers (started after this) find it on their path too
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    return importlib.import_module("old_contract.reading")


def best(fn, repeat: int) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - started)
    return min(times), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--before", default=BEFORE, help="git revision of the reader to compare with")
    parser.add_argument("--work", default=str(ROOT / ".bench"))
    parser.add_argument(
        "--format",
        choices=("json", "parquet"),
        default="json",
        help="json: one JSON Lines file per partner; parquet: files of 50k rows as `segments generate` writes",
    )
    args = parser.parse_args()

    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    from jobs.config import StorageConfig
    from jobs.contract.reading import plan_input, read_events, read_events_local

    storage = StorageConfig()
    if args.format == "json":
        folder = write_json_lines(args.events, Path(args.work))
        files = sorted(str(p) for p in folder.glob("*.jsonl"))
        read_plain = pajson.read_json
    else:
        sys.path.insert(0, str(ROOT / "scripts"))
        from bench_resolve import generate

        folder = Path(generate(args.events, Path(args.work)))
        files = sorted(str(p) for p in folder.glob("*.parquet"))
        read_plain = pq.read_table
    plan = plan_input(str(folder), storage)
    ts_range = (dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))
    old = old_reader(args.before)
    old_plan = old.plan_input(str(folder), storage)

    figures: dict[str, float] = {}
    figures["pyarrow"], rows = best(lambda: sum(read_plain(f).num_rows for f in files), args.repeat)
    figures["local"], local_rows = best(lambda: read_events_local(plan, storage, ts_range).num_rows, args.repeat)

    import ray
    import ray.data

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    from jobs.raykit.session import configure_data_context

    configure_data_context()
    ray_start = time.perf_counter() - started
    count = ray.remote(lambda t: t.num_rows)

    def ray_before() -> int:
        # the reader of --before with Ray Data's read settings of then (at least 200 read blocks)
        ctx = ray.data.DataContext.get_current()
        floor, ctx.read_op_min_num_blocks = ctx.read_op_min_num_blocks, RAY_DEFAULT_MIN_BLOCKS
        try:
            read = old.read_events(old_plan, storage)  # a dataset (ceece6b) or (block refs, extra columns)
            refs = read[0] if isinstance(read, tuple) else read.to_arrow_refs()
            return sum(ray.get([count.remote(r) for r in refs]))
        finally:
            ctx.read_op_min_num_blocks = floor

    def ray_after() -> int:
        read = read_events(plan, storage, ts_range, ["partner_id", "event_id"], 8)  # as the resolve stage reads
        return sum(ray.get([count.remote(r) for r in read.partitions]))

    figures["ray_before"], before_rows = best(ray_before, args.repeat)
    figures["ray_after"], after_rows = best(ray_after, args.repeat)
    ray.shutdown()
    assert rows == local_rows == before_rows == after_rows, (rows, local_rows, before_rows, after_rows)
    size_mb = sum(os.path.getsize(f) for f in files) / 2**20
    print(
        json.dumps(
            {
                "events": rows,
                "format": args.format,
                "files": len(files),
                "megabytes": round(size_mb, 1),
                "seconds": {k: round(v, 2) for k, v in figures.items()},
                "events_per_s": {k: round(rows / v) for k, v in figures.items()},
                "ray_start_seconds": round(ray_start, 2),
                "ratios": {
                    "ray_after / ray_before": round(figures["ray_after"] / figures["ray_before"], 3),
                    "ray_after / pyarrow": round(figures["ray_after"] / figures["pyarrow"], 2),
                    "ray_before / pyarrow": round(figures["ray_before"] / figures["pyarrow"], 2),
                    "local / pyarrow": round(figures["local"] / figures["pyarrow"], 2),
                    "ray_after incl. start / pyarrow": round(
                        (figures["ray_after"] + ray_start) / figures["pyarrow"], 2
                    ),
                },
                "repeat": args.repeat,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
