"""Benchmark of the online API: lookups and live events over HTTP against Ray Serve, with 1M personas.

    flock /tmp/segments-heavy.lock timeout 900 .venv/bin/python scripts/bench_serve.py --personas 1000000

1. A synthetic finished run at that scale in the batch's published format (`jobs.serving.synthetic`, the
   serving tests' builder too: features with the whole catalogue, identity_map, events_resolved, scores,
   three real XGBoost models trained on a sample), then the real `segments publish` path turns it into a
   release (timed). `--reuse` keeps both from a previous
   run of the bench in --out.
2. Ray Serve on a local Ray, its HTTP ingress on 127.0.0.1, `--replicas` replicas (embedded store), in the
   mode `segments serve` uses by default, or `--throughput-optimized` (HAProxy straight to the replicas) /
   `--no-throughput-optimized` (Serve's Python proxy, gRPC to the replicas); the report names the mode.
3. Open-loop load from an aiohttp client beside it (a fixed number of requests per step and a time limit):
   lookups only, then 90% lookups + 10% single-event POSTs, at rising rates; per step p50/p95/p99 and the
   achieved rate, and the CPU milliseconds per request of each process (replica, proxy or HAProxy, the load
   generator, Ray's own). The highest rate whose p99 <= 20 ms with no error is reported.
4. The same lookups called in-process without HTTP (the release loaded here, the replica's own code path):
   the baseline that shows what Serve's proxy + HTTP cost (ratio of p50s).
5. Event-to-profile latency: POST an event, poll the profile until it shows it.
6. Replica memory: each replica's RSS and the release's arrays, per million personas.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import psutil

from jobs.config import JobConfig, ServingConfig, StorageConfig
from jobs.run.layout import RunLayout
from jobs.serving.synthetic import PARTNERS, RUN_ID, SEGMENTS, build_run
from jobs.storage import read_json_or_none

log = logging.getLogger("bench_serve")

# ------------------------------------------------------------------------------------------ load

# Ray's process titles name the Serve actors; haproxy is the throughput mode's ingress
ROLES = (
    ("replica", "ServeReplica"),
    ("proxy", "ProxyActor"),
    ("haproxy", "haproxy"),
    ("controller", "ServeController"),
    ("raylet", "raylet"),
    ("gcs", "gcs_server"),
)


def cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of this process (the load generator) and of every process of the Ray it started,
    by role: where a request's CPU goes."""
    out = {"generator": sum(psutil.Process().cpu_times()[:2])}
    for child in psutil.Process().children(recursive=True):
        try:
            title = " ".join(child.cmdline()) or child.name()
            used = sum(child.cpu_times()[:2])
        except psutil.Error:
            continue
        role = next((role for role, mark in ROLES if mark in title), "other")
        out[role] = out.get(role, 0.0) + used
    return out


def cpu_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    spent = {role: after[role] - before.get(role, 0.0) for role in after}
    return {role: round(1000 * s / max(requests, 1), 3) for role, s in sorted(spent.items(), key=lambda kv: -kv[1])}


def summary(latencies_s: list[float], statuses: list[int], elapsed: float, target: float) -> dict:
    ms = np.asarray(latencies_s) * 1000
    ok = sum(1 for s in statuses if s in (200, 202))
    return {
        "target_rps": target,
        "requests": len(statuses),
        "achieved_rps": round(len(statuses) / elapsed, 1),
        "errors": len(statuses) - ok,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


async def open_loop(session, make_request, rate: float, seconds: float, time_limit: float) -> dict:
    """`rate * seconds` requests sent on schedule (open loop, so a slow server cannot slow the senders)."""
    loop = asyncio.get_running_loop()
    count = int(rate * seconds)
    latencies, statuses = [], []

    async def one(i: int) -> None:
        method, url, headers, body = make_request(i)
        started = time.perf_counter()
        try:
            async with session.request(method, url, headers=headers, data=body) as response:
                await response.read()
                statuses.append(response.status)
        except Exception:  # noqa: BLE001 - a failed request is counted, the load goes on
            statuses.append(599)
        latencies.append(time.perf_counter() - started)

    cpu_before = cpu_seconds()
    start = loop.time()
    tasks = []
    for i in range(count):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if loop.time() - start > time_limit:
            break
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    out = summary(latencies, statuses, loop.time() - start, rate)
    out["cpu_ms_per_request"] = cpu_per_request(cpu_before, cpu_seconds(), len(statuses))
    return out


async def load_steps(
    url: str, keys: dict[str, str], personas: int, rates: list[float], seconds: float, events_share: float
) -> list[dict]:
    import aiohttp

    rnd = random.Random(5)
    counter = iter(range(10**9))

    def make_request(_i: int):
        k = rnd.randrange(personas)
        partner = PARTNERS[k % len(PARTNERS)]
        headers = {"Authorization": f"Bearer {keys[partner]}"}
        if rnd.random() < events_share:
            body = json.dumps(
                [
                    {
                        "event_id": f"bench-{next(counter)}",
                        "ts": "2026-11-30T10:00:00Z",
                        "partner_id": partner,
                        "event_type": "product_view",
                        "customer_id": f"c-{k}",
                        "category": "toys/bench",
                        "brand": "Acme",
                    }
                ]
            )
            return "POST", f"{url}/v1/events", {**headers, "Content-Type": "application/json"}, body
        return "GET", f"{url}/v1/profile?customer_id=c-{k}", headers, None

    out = []
    # the generator's own GC pauses would show up as server latency: collect once, then keep it off while
    # the steps run (reference counting still frees every request's objects)
    gc.collect()
    gc.disable()
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        await open_loop(session, make_request, 100, 2, 10)  # warm-up: connections, replica caches
        for rate in rates:
            step = await open_loop(session, make_request, rate, seconds, seconds * 3)
            log.info("  %s", step)
            out.append(step)
            if step["p99_ms"] > 60 or step["errors"]:
                break  # far past the target: higher rates only queue
    gc.enable()
    return out


def best_rate(steps: list[dict], p99_ms: float = 20.0) -> float | None:
    """The highest offered rate sustained (at least 98% of it achieved, the rest is the step's tail) with p99
    within `p99_ms` and no error."""
    good = [
        s["target_rps"]
        for s in steps
        if s["p99_ms"] <= p99_ms and not s["errors"] and s["achieved_rps"] >= 0.98 * s["target_rps"]
    ]
    return max(good) if good else None


async def event_to_profile(url: str, keys: dict[str, str], personas: int, trials: int) -> dict:
    import aiohttp

    rnd = random.Random(9)
    seconds = []
    async with aiohttp.ClientSession() as session:
        for t in range(trials):
            k = rnd.randrange(personas)
            partner = PARTNERS[k % len(PARTNERS)]
            headers = {"Authorization": f"Bearer {keys[partner]}"}
            category = f"bench/trial-{t}"
            event = [
                {
                    "event_id": f"e2p-{t}-{time.time_ns()}",
                    "ts": "2026-11-30T12:00:00Z",
                    "partner_id": partner,
                    "event_type": "purchase",
                    "customer_id": f"c-{k}",
                    "category": category,
                    "brand": "Zed",
                    "price": 999.0,
                }
            ]
            started = time.perf_counter()
            async with session.post(
                f"{url}/v1/events", data=json.dumps(event), headers={**headers, "Content-Type": "application/json"}
            ) as response:
                assert response.status == 202, await response.text()
            while time.perf_counter() - started < 5:
                async with session.get(f"{url}/v1/profile?customer_id=c-{k}", headers=headers) as response:
                    body = await response.json()
                if body["intents"]["categories"] and body["intents"]["categories"][0]["name"] == category:
                    break
                await asyncio.sleep(0.005)
            seconds.append(time.perf_counter() - started)
    ms = np.asarray(seconds) * 1000
    return {"trials": trials, "p50_ms": round(float(np.percentile(ms, 50)), 1), "max_ms": round(float(ms.max()), 1)}


async def in_process(config: JobConfig, root: str, personas: int, count: int) -> dict:
    """The replica's own lookup path, called directly: no proxy, no HTTP, no Ray."""
    from jobs.serving.app import ProfileService

    started = time.perf_counter()
    service = ProfileService(config, root)
    await service.start(background=False)
    load_s = time.perf_counter() - started
    rnd = random.Random(5)
    latencies = []
    for _ in range(count):
        k = rnd.randrange(personas)
        t0 = time.perf_counter()
        await service.profile(PARTNERS[k % len(PARTNERS)], [("customer_id", f"c-{k}")])
        latencies.append(time.perf_counter() - t0)
    ms = np.asarray(latencies) * 1000
    out = {
        "lookups": count,
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "release_load_s": round(load_s, 1),
        "lookups_per_s_one_core": round(count / ms.sum() * 1000),
    }
    await service.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--personas", type=int, default=1_000_000)
    parser.add_argument("--out", default="/tmp/bench-serve")
    parser.add_argument("--reuse", action="store_true", help="reuse the run and release already in --out")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--cpus-per-replica", type=float, default=0.5)
    parser.add_argument("--rates", default="250,500,750,1000,1500,2000")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds of load per rate step")
    parser.add_argument("--port", type=int, default=8321)
    parser.add_argument(
        "--throughput-optimized",
        action=argparse.BooleanOptionalAction,
        default=ServingConfig().throughput_optimized,
        help="serving.throughput_optimized (HAProxy ingress straight to the replicas); --no-... : Serve's proxy",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("ray", "jobs", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from jobs.serving.app import build_app, serve_environment, serve_logging
    from jobs.serving.partner_keys import create_key
    from jobs.serving.publish import run_publish

    root = str(Path(args.out).resolve())
    storage = StorageConfig()
    config = JobConfig(
        root=root,
        segments=SEGMENTS,
        serving={
            "replicas": args.replicas,
            "cpus_per_replica": args.cpus_per_replica,
            "port": args.port,
            "max_ongoing_requests": 256,
            "num_partitions": 16,
            "throughput_optimized": args.throughput_optimized,
        },
    )
    # what `segments serve` sets for the local Ray it starts: before ray.init, read when Serve's processes start
    environment = serve_environment(config.serving)
    os.environ.update(environment)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("SEGMENTS_PROGRESS", "0")
    import ray
    from ray import serve

    results: dict = {
        "personas": args.personas,
        "replicas": args.replicas,
        "cpus": os.cpu_count(),
        "mode": {"throughput_optimized": args.throughput_optimized, "environment": environment},
    }
    log.info("serving mode: %s", results["mode"])
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    run_dir = RunLayout.for_run(root, RUN_ID).run_dir
    if not (args.reuse and read_json_or_none(f"{root}/online/current.json", storage)):
        started = time.perf_counter()
        build_run(root, storage, n=args.personas)
        results["synthetic_run_s"] = round(time.perf_counter() - started, 1)
        log.info("synthetic run of %d personas written in %.1fs", args.personas, results["synthetic_run_s"])
        started = time.perf_counter()
        results["publish"] = run_publish(config, run_dir)
        results["publish_s"] = round(time.perf_counter() - started, 1)
        log.info("published in %.1fs", results["publish_s"])
    keys = {p: create_key(config, p, root) for p in PARTNERS}
    results["in_process"] = asyncio.run(in_process(config, root, args.personas, 20_000))
    log.info("in-process lookups: %s", results["in_process"])

    started = time.perf_counter()
    serve.start(http_options={"host": "127.0.0.1", "port": args.port}, logging_config=serve_logging(config))
    serve.run(build_app(config, root), name="bench", route_prefix="/")
    results["deploy_s"] = round(time.perf_counter() - started, 1)
    url = f"http://127.0.0.1:{args.port}"
    rates = [float(r) for r in args.rates.split(",")]
    log.info("lookups only:")
    results["lookups"] = asyncio.run(load_steps(url, keys, args.personas, rates, args.seconds, 0.0))
    log.info("90%% lookups + 10%% events:")
    results["mixed"] = asyncio.run(load_steps(url, keys, args.personas, rates, args.seconds, 0.1))
    results["event_to_profile"] = asyncio.run(event_to_profile(url, keys, args.personas, 20))
    import urllib.request

    memory = {}
    for _ in range(40):
        request = urllib.request.Request(f"{url}/v1/health", headers={"Authorization": f"Bearer {keys['p1']}"})
        with urllib.request.urlopen(request) as response:
            memory[response.headers["x-segments-replica"]] = json.loads(response.read())["memory_mb"]
        if len(memory) == args.replicas:
            break
    per_million = 1e6 / args.personas
    results["replica_memory_mb"] = list(memory.values())
    results["replica_memory_mb_per_million_personas"] = {
        "process_rss": round(max(m["process_rss"] for m in memory.values()) * per_million),
        "release_arrays": round(max(m["release"] for m in memory.values()) * per_million),
    }
    lookups_p50 = next((s["p50_ms"] for s in results["lookups"] if s["target_rps"] == rates[0]), None)
    results["verdict"] = {
        "max_lookups_rps_p99_le_20ms": best_rate(results["lookups"]),
        "max_mixed_rps_p99_le_20ms": best_rate(results["mixed"]),
        "http_over_in_process_p50": round(lookups_p50 / results["in_process"]["p50_ms"], 1) if lookups_p50 else None,
        "event_to_profile_max_ms": results["event_to_profile"]["max_ms"],
        "target_500_lookups_rps": (best_rate(results["lookups"]) or 0) >= 500,
        "target_event_to_profile_1s": results["event_to_profile"]["max_ms"] <= 1000,
    }
    serve.shutdown()
    ray.shutdown()
    Path(args.out, "bench_serve.json").write_text(json.dumps(results, indent=2, default=str))
    shown = ("mode", "in_process", "event_to_profile", "replica_memory_mb_per_million_personas", "verdict")
    log.info("%s", json.dumps({k: results[k] for k in shown}, indent=2))


if __name__ == "__main__":
    main()
