"""The serving contract over real HTTP, for both stores: lookups, isolation, bad requests, live events.

Each application runs 2 replicas; responses name the replica that answered (`x-segments-replica`), so
"every replica" is checked by asking until both have answered.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse

import pytest
from fixture_run import EMAIL_A, PHONE_A, persona_id
from online_app import Deployed, call

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
    by_p1 = [profile(app, "p1", device_id="dev-0"), profile(app, "p1", customer_id="c-0"),
             profile(app, "p1", email_sha256=sha(EMAIL_A))]
    by_p2 = [profile(app, "p2", device_id="dev-0"), profile(app, "p2", subscriber_id="s-0"),
             profile(app, "p2", phone_sha256=sha(PHONE_A))]
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
    answers = [profile(app, p, **q) for p, q in [("p1", {"customer_id": "c-0"}), ("p2", {"subscriber_id": "s-0"}),
                                                 ("p2", {"device_id": "dev-0"})]]
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


@pytest.mark.parametrize("key, query, status, code", [
    (None, {"device_id": "dev-0"}, 401, "unauthorized"),
    ("sk_0000000000000000_notarealkeynotarealkey", {"device_id": "dev-0"}, 401, "unauthorized"),
    ("p1", {}, 400, "one_key"),
    ("p1", {"device_id": "dev-0", "customer_id": "c-0"}, 400, "one_key"),
    ("p1", {"cookie": "dev-0"}, 400, "unknown_key_type"),
    ("p1", {"customer_id": "nobody"}, 404, "not_found"),
])
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
        {"event_id": "ok-1", "ts": "2026-11-30T09:00:00Z", "partner_id": "p1", "event_type": "page_view",
         "device_id": "dev-unknown-visitor", "price": "not a number"},
        "not an object",
    ]
    answer = post(app, "p1", rows)
    assert answer.status == 202, answer.text
    assert answer.body["accepted"] == 1
    assert answer.body["rejected"] == [{"index": 0, "reason": "missing_ts"}, {"index": 1, "reason": "unparseable_ts"},
                                       {"index": 2, "reason": "unknown_event_type"},
                                       {"index": 4, "reason": "not_a_json_object"}]
    foreign = post(app, "p1", [{"event_id": "f-1", "ts": "2026-11-30T09:00:00Z", "partner_id": "p2",
                                "event_type": "page_view"}])
    assert (foreign.status, foreign.body["error"]) == (403, "foreign_partner")
    too_many = post(app, "p1", [{"event_id": f"m-{i}", "ts": "2026-11-30T09:00:00Z", "partner_id": "p1",
                                 "event_type": "page_view"} for i in range(51)])
    assert too_many.status == 413
    assert post(app, "p1", b"[" + b" " * (70 * 1024) + b"]").status == 413


def test_a_live_event_changes_the_profile_on_every_replica_within_a_second(app):
    before = every_replica(app, "p1", customer_id="c-0")
    category = f"fashion/live-{app.store}"
    event = {"event_id": f"live-{app.store}", "ts": "2026-11-30T10:00:00Z", "partner_id": "p1",
             "event_type": "add_to_cart", "customer_id": "c-0", "category": category, "brand": "Zed",
             "product_id": "sku-1", "price": 49.0}
    answer = post(app, "p1", [event, event])
    acknowledged = time.monotonic()
    assert answer.status == 202 and answer.body["accepted"] == 1 and answer.body["duplicates"] == 1
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
    rows = [{"event_id": f"link-{app.store}", "ts": "2026-11-30T10:05:00Z", "partner_id": "p1",
             "event_type": "login", "customer_id": "c-3", "device_id": new_device},
            {"event_id": f"junk-{app.store}", "ts": "2026-11-30T10:06:00Z", "partner_id": "p1",
             "event_type": "login", "customer_id": "c-3", "device_id": "dev-shared"}]
    assert post(app, "p1", rows).body["accepted"] == 2
    time.sleep(1.0)
    for linked in every_replica(app, "p1", device_id=new_device):
        assert linked.status == 200
        assert linked.body["persona"] == profile(app, "p1", customer_id="c-3").body["persona"]
    assert profile(app, "p2", device_id=new_device).status == 404  # p2 never sent it
    assert profile(app, "p1", device_id="dev-shared").status == 404


def test_accepted_events_are_in_the_durable_log_in_the_input_contract(app):
    event = {"event_id": f"log-{app.store}", "ts": "2026-11-30T10:07:00Z", "partner_id": "p3",
             "event_type": "purchase", "device_id": "dev-2", "order_id": "o-1", "price": 10.5, "quantity": 2}
    assert post(app, "p3", [event]).body["accepted"] == 1
    from jobs.config import StorageConfig
    from jobs.contract.schema import CONTRACT_SCHEMA
    from jobs.serving.source import read_parquet_file

    storage = StorageConfig()
    files = list_files(f"{app.root}/online/events", storage, suffixes=(".parquet",))
    rows = [r for f in files for r in read_parquet_file(f, storage).to_pylist() if r["event_id"] == event["event_id"]]
    assert len(rows) == 1 and rows[0]["price"] == 10.5 and rows[0]["quantity"] == 2
    assert read_parquet_file(files[0], storage).schema.equals(CONTRACT_SCHEMA)
    keys = list_files(f"{app.root}/online/keys", storage)
    for path in keys:
        stored = read_bytes(path, storage).decode()
        assert all(key.split("_", 2)[2] not in stored for key in app.keys.values())
