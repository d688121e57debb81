"""Failures under load, for both stores: a replica killed mid-load, a new release published mid-load.

Load comes from a few client threads on 127.0.0.1 for a bounded time; a request a killed replica was
serving may fail (it was never acknowledged), but every acknowledged event must be in the durable log and
applied on every replica afterwards, and a publish must never fail a request.
"""

from __future__ import annotations

import threading
import time

import pytest
import ray
from online_app import Deployed, call
from test_api import post, profile

from jobs.config import StorageConfig
from jobs.serving.source import read_parquet_file
from jobs.storage import list_files


def logged_events(app: Deployed) -> set[tuple[str, str]]:
    storage = StorageConfig()
    files = list_files(f"{app.root}/online/events", storage, suffixes=(".parquet",))
    return {(r["partner_id"], r["event_id"]) for f in files
            for r in read_parquet_file(f, storage, ["partner_id", "event_id"]).to_pylist()}


def replica_healths(app: Deployed, replicas: int = 2, tries: int = 80) -> dict[str, dict]:
    seen: dict[str, dict] = {}
    for _ in range(tries):
        answer = call(f"{app.url}/v1/health", app.keys["p1"])
        if answer.status == 200:
            seen[answer.replica] = answer.body
        if len(seen) == replicas:
            break
    return seen


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def run_load(seconds_before: float, action, worker, threads: int = 3) -> None:
    stop = threading.Event()
    pool = [threading.Thread(target=worker, args=(n, stop), daemon=True) for n in range(threads)]
    for thread in pool:
        thread.start()
    time.sleep(seconds_before)
    action()
    stop.set()
    for thread in pool:
        thread.join(timeout=30)


@pytest.mark.slow
def test_a_replica_killed_mid_load_loses_no_acknowledged_event(app):
    acknowledged: list[tuple[str, str]] = []
    failed: list[int] = []

    def sender(worker: int, stop: threading.Event) -> None:
        n = 0
        while not stop.is_set():
            event_id = f"kill-{app.store}-{worker}-{n}"
            answer = post(app, "p1", [{"event_id": event_id, "ts": "2026-11-30T11:00:00Z", "partner_id": "p1",
                                       "event_type": "product_view", "customer_id": "c-3", "category": "toys/kill"}])
            (acknowledged.append(("p1", event_id)) if answer.status == 202 else failed.append(answer.status))
            n += 1

    def kill_one_replica() -> None:
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["namespace"] == "serve" and f"{app.config.serving.app_name}#Profiles" in a["name"]]
        assert len(names) == 2, names
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
        time.sleep(1.0)  # load goes on against the survivor while Serve replaces the dead replica

    run_load(0.8, kill_one_replica, sender)
    assert len(acknowledged) > 20, (len(acknowledged), failed)
    assert set(acknowledged) <= logged_events(app)  # durable before acknowledged

    # every replica (the replacement replays the log) converges on every logged event
    def converged() -> bool:
        healths = replica_healths(app)
        total = len(logged_events(app))
        return len(healths) == 2 and all(h["live_events_seen"] == total for h in healths.values())

    wait_for(converged, 30, "both replicas to apply the whole event log")


@pytest.mark.slow
def test_publish_under_load_swaps_releases_without_a_failed_request(app):
    from jobs.serving.publish import run_publish

    wait_for(lambda: len(replica_healths(app)) == 2, 30, "two healthy replicas")
    old = call(f"{app.url}/v1/health", app.keys["p1"]).body["release_id"]
    statuses: list[int] = []
    releases: set[str] = set()

    def reader(worker: int, stop: threading.Event) -> None:
        while not stop.is_set():
            statuses.append(profile(app, "p1", customer_id="c-0").status)
            health = call(f"{app.url}/v1/health", app.keys["p1"])
            statuses.append(health.status)
            releases.add(health.body.get("release_id"))

    def publish_and_wait() -> None:
        new = run_publish(app.config, app.run_dir)["release_id"]
        wait_for(lambda: {h["release_id"] for h in replica_healths(app).values()} == {new}, 30,
                 "every replica to serve the new release")

    run_load(0.5, publish_and_wait, reader, threads=2)
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert old in releases and len(releases) == 2
