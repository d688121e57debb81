"""The serving contract over real HTTP, for both stores: lookups, isolation, bad requests, live events, and
failures under load (a replica killed mid-load, a new release published mid-load).

Each application runs 2 replicas; responses name the replica that answered (`x-segments-replica`), so
"every replica" is checked by asking until both have answered. Load comes from a few client threads on
127.0.0.1 for a bounded time; a request a killed replica was serving may fail (it was never acknowledged),
but every acknowledged event must be in the durable log and applied on every replica afterwards, and a
publish must never fail a request. The applications live for this module only (their replicas hold CPUs).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.parse

import pytest
import ray
from online_app import Deployed, call

from jobs.config import StorageConfig
from jobs.contract.schema import CONTRACT_SCHEMA
from jobs.serving.source import read_parquet_file
from jobs.serving.synthetic import EMAIL_A, PHONE_A, persona_id
from jobs.storage import list_files, read_bytes


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def profile(app: Deployed, partner: str, **query) -> object:
    return call(f"{app.url}/v1/profile?{urllib.parse.urlencode(query)}", app.keys[partner])


def post(app: Deployed, partner: str, rows, key: str | None = None):
    body = rows if isinstance(rows, bytes) else json.dumps(rows).encode()
    return call(f"{app.url}/v1/events", key or app.keys[partner], body=body)


def every_replica(app: Deployed, partner: str, replicas: int = 2, tries: int = 60, **query) -> list:
    """Ask until `replicas` distinct replicas have answered; returns one answer per replica."""
    seen = {}
    for _ in range(tries):
        answer = profile(app, partner, **query)
        seen.setdefault(answer.replica, answer)
        if len(seen) == replicas:
            return list(seen.values())
    raise AssertionError(f"only replicas {sorted(seen)} answered in {tries} requests")


def test_health_names_the_current_run(app):
    answer = call(f"{app.url}/v1/health", app.keys["p1"])
    assert answer.status == 200
    assert answer.body["run_id"] == "2026-11-29"
    assert answer.body["store"] == app.store
    assert answer.body["personas"] == 120
    assert set(answer.body["model_versions"]) == {"ecommerce_buyers", "category_lovers_fashion", "p3_only_buyers"}


def test_lookup_by_every_key_type_finds_the_same_persona(app):
    by_p1 = [
        profile(app, "p1", device_id="dev-0"),
        profile(app, "p1", customer_id="c-0"),
        profile(app, "p1", email_sha256=sha(EMAIL_A)),
    ]
    by_p2 = [
        profile(app, "p2", device_id="dev-0"),
        profile(app, "p2", subscriber_id="s-0"),
        profile(app, "p2", phone_sha256=sha(PHONE_A)),
    ]
    for answer in by_p1 + by_p2:
        assert answer.status == 200, answer.text
        assert answer.body["run_id"] == "2026-11-29"
        assert {s["segment"] for s in answer.body["segments"]} >= {"ecommerce_buyers"}
        assert answer.body["intents"]["categories"] and answer.body["intents"]["brands"]
    assert len({a.body["persona"] for a in by_p1}) == 1
    assert len({a.body["persona"] for a in by_p2}) == 1
    # the opaque id is stable per partner and differs across partners
    assert by_p1[0].body["persona"] != by_p2[0].body["persona"]
    segment = by_p1[0].body["segments"][0]
    assert 0 <= segment["score"] <= 1 and 0 <= segment["percentile"] <= 100 and isinstance(segment["member"], bool)


def test_partners_read_only_through_identifiers_they_supplied(app):
    assert profile(app, "p2", customer_id="c-0").status == 404  # p1's customer id
    assert profile(app, "p2", email_sha256=sha(EMAIL_A)).status == 404  # only p1 sent this email
    assert profile(app, "p1", phone_sha256=sha(PHONE_A)).status == 404  # only p2 sent this phone
    assert profile(app, "p3", device_id="dev-0").status == 404  # p3 never saw the device
    assert profile(app, "p1", device_id="dev-shared").status == 404  # a junk identifier answers nobody
    answers = [
        profile(app, p, **q)
        for p, q in [("p1", {"customer_id": "c-0"}), ("p2", {"subscriber_id": "s-0"}), ("p2", {"device_id": "dev-0"})]
    ]
    for answer in answers:
        assert answer.status == 200
        for secret in (EMAIL_A, PHONE_A, sha(EMAIL_A), persona_id(0), "c-0", "s-0"):
            assert secret not in answer.text


def test_segments_restricted_to_another_partner_are_left_out(app):
    own = profile(app, "p3", device_id="dev-2")  # persona 2 belongs to p3
    assert own.status == 200
    assert "p3_only_buyers" in {s["segment"] for s in own.body["segments"]}
    other = profile(app, "p1", customer_id="c-0")
    assert "p3_only_buyers" not in {s["segment"] for s in other.body["segments"]}


@pytest.mark.parametrize(
    "key, query, status, code",
    [
        (None, {"device_id": "dev-0"}, 401, "unauthorized"),
        ("sk_0000000000000000_notarealkeynotarealkey", {"device_id": "dev-0"}, 401, "unauthorized"),
        ("p1", {}, 400, "one_key"),
        ("p1", {"device_id": "dev-0", "customer_id": "c-0"}, 400, "one_key"),
        ("p1", {"cookie": "dev-0"}, 400, "unknown_key_type"),
        ("p1", {"customer_id": "nobody"}, 404, "not_found"),
    ],
)
def test_bad_lookups_get_a_json_reason(app, key, query, status, code):
    token = app.keys.get(key, key) if key else None
    answer = call(f"{app.url}/v1/profile?{urllib.parse.urlencode(query)}", token)
    assert (answer.status, answer.body.get("error")) == (status, code), answer.text
    assert answer.body["detail"]


def test_malformed_events_are_answered_with_reasons(app):
    assert post(app, "p1", b"this is not json\nnor this").body["error"] == "malformed_body"
    assert post(app, "p1", b"42").status == 400
    assert post(app, "p1", [{"event_id": "x"}], key="sk_0000000000000000_notarealkeynotarealkey").status == 401
    rows = [
        {"event_id": "bad-1", "partner_id": "p1", "event_type": "product_view"},  # no ts
        {"event_id": "bad-2", "ts": "yesterday-ish", "partner_id": "p1", "event_type": "product_view"},
        {"event_id": "bad-3", "ts": "2026-11-30T09:00:00Z", "partner_id": "p1", "event_type": "teleport"},
        {
            "event_id": "ok-1",
            "ts": "2026-11-30T09:00:00Z",
            "partner_id": "p1",
            "event_type": "page_view",
            "device_id": "dev-unknown-visitor",
        },
        "not an object",
    ]
    answer = post(app, "p1", rows)
    assert answer.status == 202, answer.text
    assert answer.body["accepted"] == 1, answer.text
    assert answer.body["rejected"] == [
        {"index": 0, "reason": "missing_ts"},
        {"index": 1, "reason": "unparseable_ts"},
        {"index": 2, "reason": "unknown_event_type"},
        {"index": 4, "reason": "unparseable_json"},  # as the batch reads a line that is no object
    ]
    foreign = post(
        app, "p1", [{"event_id": "f-1", "ts": "2026-11-30T09:00:00Z", "partner_id": "p2", "event_type": "page_view"}]
    )
    assert (foreign.status, foreign.body["error"]) == (403, "foreign_partner")
    too_many = post(
        app,
        "p1",
        [
            {"event_id": f"m-{i}", "ts": "2026-11-30T09:00:00Z", "partner_id": "p1", "event_type": "page_view"}
            for i in range(51)
        ],
    )
    assert too_many.status == 413
    assert post(app, "p1", b"[" + b" " * (70 * 1024) + b"]").status == 413


def test_issue_14_bad_rows_are_refused_with_the_batch_reasons_over_http(app):
    def row(n: int, **changes) -> bytes:
        event = {"event_id": f"b14-{app.store}-{n}", "ts": "2026-11-30T09:00:00Z", "partner_id": "p1"}
        return json.dumps({**event, "event_type": "page_view", "device_id": f"d-{n}", **changes}).encode()

    lines = [
        row(0),
        row(1, price={"amount": 1}),
        row(2, category=["a", "b"]),
        row(3, city="Sofia").replace(b"Sofia", b"So\xfffia"),
        row(4, device_id="d\x1b[31m"),
        row(5, ts="9999-01-01T00:00:00Z"),
        row(6, quantity=1.5),
        b"[1, 2, 3]",
        row(7)[:30],
    ]
    answer = post(app, "p1", b"\n".join(lines))
    assert answer.status == 202, answer.text
    assert answer.body["accepted"] == 1
    assert answer.body["rejected"] == [
        {"index": 1, "reason": "bad_type:price"},
        {"index": 2, "reason": "bad_type:category"},
        {"index": 3, "reason": "invalid_utf8"},
        {"index": 4, "reason": "control_characters"},
        {"index": 5, "reason": "implausible_ts"},
        {"index": 6, "reason": "bad_type:quantity"},
        {"index": 7, "reason": "unparseable_json"},
        {"index": 8, "reason": "unparseable_json"},
    ]


def test_a_live_event_changes_the_profile_on_every_replica_within_a_second(app):
    before = every_replica(app, "p1", customer_id="c-0")
    category = f"fashion/live-{app.store}"
    event = {
        "event_id": f"live-{app.store}",
        "ts": "2026-11-30T10:00:00Z",
        "partner_id": "p1",
        "event_type": "add_to_cart",
        "customer_id": "c-0",
        "category": category,
        "brand": "Zed",
        "product_id": "sku-1",
        "price": 49.0,
    }
    # two carts outweigh anything the fixture gave c-0 before the cut-off (at most one purchase, weight 5, per
    # category, decayed), whatever the fixture's random timestamps are; the repeated event is applied once
    second = {**event, "event_id": f"live-{app.store}-2"}
    answer = post(app, "p1", [event, event, second])
    acknowledged = time.monotonic()
    assert answer.status == 202 and answer.body["accepted"] == 2 and answer.body["duplicates"] == 1
    time.sleep(max(0.0, acknowledged + 1.0 - time.monotonic()))
    after = every_replica(app, "p1", customer_id="c-0")
    for old, new in zip(before, after):
        assert new.body["intents"]["categories"][0]["name"] == category
        assert new.body["updated_at"] == "2026-11-30T10:00:00Z"
        assert new.body["segments"] != old.body["segments"]  # rescored with the published models
    assert len({json.dumps(a.body, sort_keys=True) for a in after}) == 1  # the replicas agree
    again = post(app, "p1", [event])
    assert again.body == {"accepted": 0, "duplicates": 1, "rejected": []}


def test_new_identifiers_link_to_known_personas_but_junk_never_does(app):
    new_device = f"dev-new-{app.store}"
    rows = [
        {
            "event_id": f"link-{app.store}",
            "ts": "2026-11-30T10:05:00Z",
            "partner_id": "p1",
            "event_type": "login",
            "customer_id": "c-3",
            "device_id": new_device,
        },
        {
            "event_id": f"junk-{app.store}",
            "ts": "2026-11-30T10:06:00Z",
            "partner_id": "p1",
            "event_type": "login",
            "customer_id": "c-3",
            "device_id": "dev-shared",
        },
    ]
    assert post(app, "p1", rows).body["accepted"] == 2
    time.sleep(1.0)
    for linked in every_replica(app, "p1", device_id=new_device):
        assert linked.status == 200
        assert linked.body["persona"] == profile(app, "p1", customer_id="c-3").body["persona"]
    assert profile(app, "p2", device_id=new_device).status == 404  # p2 never sent it
    assert profile(app, "p1", device_id="dev-shared").status == 404


def test_accepted_events_are_in_the_durable_log_in_the_input_contract(app):
    event = {
        "event_id": f"log-{app.store}",
        "ts": "2026-11-30T10:07:00Z",
        "partner_id": "p3",
        "event_type": "purchase",
        "device_id": "dev-2",
        "order_id": "o-1",
        "price": 10.5,
        "quantity": 2,
    }
    assert post(app, "p3", [event]).body["accepted"] == 1
    storage = StorageConfig()
    files = list_files(f"{app.root}/online/events", storage, suffixes=(".parquet",))
    rows = [r for f in files for r in read_parquet_file(f, storage).to_pylist() if r["event_id"] == event["event_id"]]
    assert len(rows) == 1 and rows[0]["price"] == 10.5 and rows[0]["quantity"] == 2
    assert read_parquet_file(files[0], storage).schema.equals(CONTRACT_SCHEMA)
    keys = list_files(f"{app.root}/online/keys", storage)
    for path in keys:
        stored = read_bytes(path, storage).decode()
        assert all(key.split("_", 2)[2] not in stored for key in app.keys.values())


def test_a_published_release_holds_no_raw_email_or_phone(deployed):
    storage = StorageConfig()
    for app in deployed.values():
        files = list_files(f"{app.root}/online", storage)
        assert any("/profiles/" in f for f in files) and any("/keys/" in f for f in files)
        for path in files:
            if "/events/" in path:
                continue  # the live log is the partners' own input, kept for the next batch run
            data = read_bytes(path, storage)
            assert EMAIL_A.encode() not in data and PHONE_A.encode() not in data, path


def logged_events(app: Deployed) -> set[tuple[str, str]]:
    storage = StorageConfig()
    files = list_files(f"{app.root}/online/events", storage, suffixes=(".parquet",))
    return {
        (r["partner_id"], r["event_id"])
        for f in files
        for r in read_parquet_file(f, storage, ["partner_id", "event_id"]).to_pylist()
    }


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
            answer = post(
                app,
                "p1",
                [
                    {
                        "event_id": event_id,
                        "ts": "2026-11-30T11:00:00Z",
                        "partner_id": "p1",
                        "event_type": "product_view",
                        "customer_id": "c-3",
                        "category": "toys/kill",
                    }
                ],
            )
            (acknowledged.append(("p1", event_id)) if answer.status == 202 else failed.append(answer.status))
            n += 1

    def kill_one_replica() -> None:
        names = [
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "serve" and f"{app.config.serving.app_name}#Profiles" in a["name"]
        ]
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
        wait_for(
            lambda: {h["release_id"] for h in replica_healths(app).values()} == {new},
            30,
            "every replica to serve the new release",
        )

    run_load(0.5, publish_and_wait, reader, threads=2)
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert old in releases and len(releases) == 2


def test_a_redis_that_does_not_answer_is_an_infrastructure_error(ray_cluster, tmp_path, free_port):
    """`publish --store redis` with nobody at the Redis URL: an InfraError (exit 3, one paragraph naming the
    URL), not redis-py's ConnectionError (exit 1); the release is not made current."""
    from jobs.errors import InfraError
    from jobs.run.layout import OnlineLayout
    from jobs.serving.publish import run_publish
    from jobs.serving.synthetic import build_run, job_config
    from jobs.storage import exists

    root = str(tmp_path / "online")
    run_dir = build_run(root, StorageConfig())
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(InfraError, match=f"Redis at {url} is unreachable"):
        run_publish(job_config(root, store="redis", redis_url=url), run_dir)
    assert not exists(OnlineLayout(root).current, StorageConfig())
