#!/usr/bin/env python
"""Beyond one machine's memory (issue 12 item 5): resolve and features on Ray at a size one process cannot
hold, against the same work in one process, measured the same way.

Events: generated once by `jobs.synthetic` (as `segments generate`, bench_resolve's people-per-event rate and
seed) into WORK/events-N, reused by every part and by bench_pipeline.

  * ray: `segments run` with stages [resolve], then with [resolve, features] (resolve's marker is valid, so the
    second command runs plan and features only): two commands, each measured alone. Per command: wall time and
    peak RSS from `os.wait4` (what GNU time prints), and the process tree's memory sampled every second
    (driver, raylet, Ray's workers: the sum of their RSS, which counts the object store's shared pages once
    per process that maps them, so it overstates) and the machine's lowest MemAvailable. Per stage, from
    summary.json: seconds, the driver's peak RSS (`driver_peak_rss_mb`), the object store's peak and the bytes
    Ray spilled to disk (`object_store_spilled_mb`).
  * single: one child process does what bench_pipeline's one-process side does for these two stages:
    `jobs.identity.local.resolve_files` (pyarrow read, vectorised identity rules, five tables written), then
    `features.compute.compute_local` at every snapshot of the Ray run's plan. Its RSS and the machine's
    MemAvailable are sampled every 0.2 s. The machine has no swap (checked and printed), so when memory runs
    out the kernel's OOM killer ends some process, possibly another user's: the child is ended first, when
    MemAvailable falls below --floor-gb, and that is reported as running out of memory, with its RSS, time and
    the step it was in.

    .venv/bin/python scripts/bench_scale.py --size 20000000 --part generate
    .venv/bin/python scripts/bench_scale.py --size 20000000 --part ray-resolve
    .venv/bin/python scripts/bench_scale.py --size 20000000 --part ray-features
    .venv/bin/python scripts/bench_scale.py --size 20000000 --part single
    .venv/bin/python scripts/bench_scale.py --size 20000000 --part report

Each part is one bounded command (run each under the heavy-command lock); results go to WORK/scale-N.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

from bench_resolve import generate  # noqa: E402  (sibling benchmark script)

ROOT = SCRIPTS.parent
GB = 2**30
MB = 2**20


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) * 1024
    return values


class Watch:
    """Samples a process tree's RSS and the machine's MemAvailable; optionally ends the tree when the machine's
    available memory falls below `floor` bytes (the process is then reported as out of memory)."""

    def __init__(self, pid: int, interval: float, floor: int | None = None, step_file: Path | None = None):
        self.process = psutil.Process(pid)
        self.interval, self.floor, self.step_file = interval, floor, step_file
        self.peak_tree = self.peak_own = 0
        self.min_available = meminfo()["MemAvailable"]
        self.swap_used_peak = 0
        self.killed: dict | None = None
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                own = self.process.memory_info().rss
            except psutil.Error:
                return
            total = 0
            for proc in tree:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            info = meminfo()
            self.peak_own, self.peak_tree = max(self.peak_own, own), max(self.peak_tree, total)
            self.min_available = min(self.min_available, info["MemAvailable"])
            self.swap_used_peak = max(self.swap_used_peak, info["SwapTotal"] - info["SwapFree"])
            if self.floor is not None and info["MemAvailable"] < self.floor and self.killed is None:
                step = self.step_file.read_text().strip() if self.step_file and self.step_file.exists() else "?"
                self.killed = {
                    "after_s": round(time.perf_counter() - self.started, 1),
                    "rss_mb": round(own / MB),
                    "mem_available_mb": round(info["MemAvailable"] / MB),
                    "step": step,
                }
                for proc in reversed(tree):
                    try:
                        proc.send_signal(signal.SIGKILL)
                    except psutil.Error:
                        pass
                return

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=5)
        return {
            "tree_rss_peak_mb": round(self.peak_tree / MB),
            "own_rss_peak_mb": round(self.peak_own / MB),
            "min_mem_available_mb": round(self.min_available / MB),
            "swap_used_peak_mb": round(self.swap_used_peak / MB),
            "killed_out_of_memory": self.killed,
        }


def run_watched(command: list[str], log: Path, floor: int | None = None, step_file: Path | None = None) -> dict:
    """Run `command` to its end (or until the watch ends it): wall seconds, os.wait4's peak RSS, the watch."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "SEGMENTS_PROGRESS": "0"}
    started = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        watch = Watch(child.pid, 0.2 if floor else 1.0, floor, step_file)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 1),
        "exit_code": os.waitstatus_to_exitcode(status),
        "wait4_peak_rss_mb": round(usage.ru_maxrss / 1024),
        **watch.stop(),
        "log": str(log),
    }


def part_ray(size: int, work: Path, stages: list[str], partitions: int) -> dict:
    events = str(work / f"events-{size}")
    out = work / f"scale-{size}-ray"
    config = Path(f"{out}.yaml")
    if stages == ["resolve"]:
        shutil.rmtree(out, ignore_errors=True)  # a finished resolve would be skipped, not measured
    config.write_text(
        json.dumps(
            {"events": events, "root": str(out), "stages": stages, "ray": {"num_partitions": partitions}}, indent=2
        )
    )
    command = [str(Path(sys.executable).parent / "segments"), "run", "--config", str(config), "--run-id", "scale"]
    figures = run_watched(command, work / f"scale-{size}-ray-{stages[-1]}.log")
    summary_path = out / "runs" / "scale" / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"stages": {}}
    keys = ("status", "seconds", "rows_in", "rows_out", "driver_peak_rss_mb", "peak_driver_rss_mb")
    keys += ("peak_object_store_mb", "object_store_spilled_mb", "error")
    figures["stages"] = {
        name: {k: s[k] for k in keys if k in s} for name, s in summary["stages"].items() if s["status"] != "skipped"
    }
    return figures


def child_single(events: str, out: str, plan_path: str, step_file: str) -> None:
    """The one-process side, in this (child) process: resolve_files, then compute_local at each snapshot."""
    import pyarrow.parquet as pq

    from features.compute import compute_local
    from jobs.config import JobConfig
    from jobs.identity.local import resolve_files

    plan = json.loads(Path(plan_path).read_text())
    config = JobConfig(events=events)
    seconds = {}
    Path(step_file).write_text("resolve_files")
    started = time.perf_counter()
    result = resolve_files(
        events, config, out=os.path.join(out, "resolve"), run_date=dt.date.fromisoformat(plan["run_date"])
    )
    seconds["resolve"] = time.perf_counter() - started
    resolved = result["events_resolved"]
    del result
    started = time.perf_counter()
    for as_of in plan["snapshots"]:
        Path(step_file).write_text(f"compute_local as_of {as_of}")
        table = compute_local(resolved, dt.date.fromisoformat(as_of), config.features, plan["categories"])
        folder = os.path.join(out, "features", f"as_of={as_of}")
        os.makedirs(folder, exist_ok=True)
        pq.write_table(table, os.path.join(folder, "part-0.parquet"))
    seconds["features"] = time.perf_counter() - started
    print(json.dumps({k: round(v, 1) for k, v in seconds.items()}))


def part_single(size: int, work: Path, floor_gb: float) -> dict:
    events = str(work / f"events-{size}")
    out = work / f"scale-{size}-single"
    shutil.rmtree(out, ignore_errors=True)
    plan = work / f"scale-{size}-ray" / "runs" / "scale" / "plan.json"
    if not plan.exists():
        raise SystemExit(
            f"run --part ray-features first: the one-process side computes the Ray run's snapshots ({plan})"
        )
    step_file = work / f"scale-{size}-single.step"
    step_file.unlink(missing_ok=True)
    log = work / f"scale-{size}-single.log"
    command = [sys.executable, __file__, "--child", events, str(out), str(plan), str(step_file)]
    figures = run_watched(command, log, floor=int(floor_gb * GB), step_file=step_file)
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    figures["steps_s"] = json.loads(lines[-1]) if lines and figures["exit_code"] == 0 else None
    shutil.rmtree(out, ignore_errors=True)
    return figures


def report(results: dict) -> None:
    info = results.get("machine", {})
    print(
        f"\n{results['size']:,} events ({results.get('events_files_mb', '?')} MB of Parquet); machine: "
        f"{info.get('mem_total_gb')} GB RAM, swap {info.get('swap_total_gb')} GB, {os.cpu_count()} CPUs"
    )
    for name in ("ray-resolve", "ray-features", "single"):
        figures = results.get(name)
        if not figures:
            continue
        print(
            f"{name:>13}: {figures['seconds']:>7.1f} s wall, exit {figures['exit_code']}, wait4 peak "
            f"{figures['wait4_peak_rss_mb']} MB, process tree RSS peak {figures['tree_rss_peak_mb']} MB, "
            f"machine's lowest MemAvailable {figures['min_mem_available_mb']} MB, "
            f"swap used {figures['swap_used_peak_mb']} MB"
        )
        for stage, s in figures.get("stages", {}).items():
            print(
                f"{'':>15}{stage}: {s.get('status')} {s.get('seconds')} s, "
                f"driver peak {s.get('driver_peak_rss_mb')} MB, "
                f"object store peak {s.get('peak_object_store_mb')} MB, spilled {s.get('object_store_spilled_mb')} MB"
                + (f", error {s['error']}" if s.get("error") else "")
            )
        if figures.get("killed_out_of_memory"):
            k = figures["killed_out_of_memory"]
            print(
                f"{'':>15}OUT OF MEMORY: ended after {k['after_s']} s in {k['step']} at {k['rss_mb']} MB RSS "
                f"(machine's MemAvailable {k['mem_available_mb']} MB)"
            )
        if figures.get("steps_s"):
            print(f"{'':>15}steps: {figures['steps_s']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=20_000_000, help="target event count")
    parser.add_argument(
        "--part", choices=("generate", "ray-resolve", "ray-features", "single", "report"), default="report"
    )
    parser.add_argument("--work", default=str(ROOT / ".bench"), help="folder for data and outputs")
    parser.add_argument(
        "--floor-gb", type=float, default=1.5, help="the one process is out of memory below this MemAvailable"
    )
    parser.add_argument(
        "--partitions", type=int, default=8, help="ray.num_partitions of the run (2-4 per CPU: README, Sizing)"
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_single(*args.child)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results_file = work / f"scale-{args.size}.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {"size": args.size}
    info = meminfo()
    results["machine"] = {
        "mem_total_gb": round(info["MemTotal"] / GB, 1),
        "swap_total_gb": round(info["SwapTotal"] / GB, 1),
    }
    if args.part == "generate":
        started = time.perf_counter()
        events = generate(args.size, work)
        results["generate_s"] = round(time.perf_counter() - started, 1)
        results["events_files_mb"] = round(sum(p.stat().st_size for p in Path(events).glob("*.parquet")) / MB)
    elif args.part == "ray-resolve":
        results["ray-resolve"] = part_ray(args.size, work, ["resolve"], args.partitions)
        results["partitions"] = args.partitions
    elif args.part == "ray-features":
        results["ray-features"] = part_ray(args.size, work, ["resolve", "features"], results["partitions"])
    elif args.part == "single":
        results["single"] = part_single(args.size, work, args.floor_gb)
    results[f"{args.part}_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results_file.write_text(json.dumps(results, indent=2))
    report(results)


if __name__ == "__main__":
    main()
