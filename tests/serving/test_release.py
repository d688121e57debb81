"""The pieces of a release, tested directly: lookup keys and isolation, the partition join, percentile
curves, collisions, the online feature rules (pure: no Ray)."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pyarrow as pa

from features.catalog import catalog, category_slots
from jobs.config import FeaturesConfig
from jobs.contract.schema import EVENT_TYPES
from jobs.identity.personas import IDENTITY_MAP_SCHEMA
from jobs.serving.identifiers import key_hash, link_hash, link_ids, lookup_keys
from jobs.serving.online import LiveEvents, online_features, shown_intents, updated_features
from jobs.serving.publish import build_partition, merge_curves
from jobs.serving.stores import _sorted_unique

TS = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)


def identity(rows: list[tuple]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "identifier_type": t,
                "identifier": v,
                "partner_id": scope,
                "persona_id": persona,
                "first_seen": TS,
                "last_seen": TS,
                "n_events": 1,
                "seen_at_partners": seen,
            }
            for t, v, scope, persona, seen in rows
        ],
        schema=IDENTITY_MAP_SCHEMA,
    )


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def test_lookup_keys_exist_only_for_what_each_partner_supplied():
    table = identity(
        [
            ("customer", "c1", "p1", "A", ["p1"]),
            ("email", "a@x.com", None, "A", ["p1"]),
            ("phone", "+111", None, "A", ["p2"]),
            ("device", "d1", None, "A", ["p1", "p2"]),
            ("click_token", "t1", "p1", "A", ["p1"]),
        ]
    )
    keys = set(lookup_keys(table).column("key_hash").to_pylist())
    expected = {
        key_hash("p1", "customer_id", "c1"),
        key_hash("p1", "email_sha256", sha("a@x.com")),
        key_hash("p2", "phone_sha256", sha("+111")),
        key_hash("p1", "device_id", "d1"),
        key_hash("p2", "device_id", "d1"),
    }
    assert keys == expected
    assert key_hash("p2", "customer_id", "c1") not in keys
    assert key_hash("p2", "email_sha256", sha("a@x.com")) not in keys


def test_link_ids_are_scoped_for_partner_records_and_global_for_contacts():
    links = set(
        link_ids(
            identity(
                [
                    ("customer", "c1", "p1", "A", ["p1"]),
                    ("device", "d1", None, "A", ["p1"]),
                    ("click_token", "t1", "p1", "A", ["p1"]),
                ]
            )
        )
        .column("link_hash")
        .to_pylist()
    )
    assert links == {link_hash("customer", "p1", "c1"), link_hash("device", None, "d1")}  # click tokens never link
    assert link_hash("customer", "p1", "c1") != link_hash("customer", "p2", "c1")
    assert link_hash("device", "p1", "d1") == link_hash("device", "p2", "d1")


def test_a_colliding_hash_answers_nobody():
    hashes = np.array([5, 3, 5, 9, 9], np.uint64)
    rows = np.array([1, 0, 2, 4, 4], np.int64)  # 5 -> two personas (a collision); 9 twice to one (a repeat)
    kept, kept_rows, clashes = _sorted_unique(hashes, rows)
    assert kept.tolist() == [3, 9] and kept_rows.tolist() == [0, 4] and clashes == 1


def test_build_partition_joins_features_scores_intents_and_keys():
    features = pa.table({"persona_id": ["B", "A"], "inputs": pa.array([b"\x00" * 8, b"\x01" * 8], pa.binary(8))})
    scores = pa.table(
        {
            "persona_id": ["A", "B", "A"],
            "segment": ["s1", "s1", "s2"],
            "score": [0.9, 0.1, 0.4],
            "percentile": [90.0, 10.0, 50.0],
            "model_version": ["v", "v", "w"],
            "member": [True, False, None],
        }
    )
    intents = pa.table(
        {
            "persona_id": ["A", "A", "A", "Z"],
            "name": ["x/y", "q", "Acme", "x"],
            "kind": ["categories", "categories", "brands", "categories"],
            "weight": [2.0, 5.0, 1.0, 9.0],
        }
    )
    keys = pa.table({"persona_id": ["A", "B", "Z"], "key_hash": pa.array([11, 22, 33], pa.uint64())})
    profiles, key_rows, link_rows, curve = build_partition(0, features, scores, intents, keys, None, ["s1", "s2"], 5)
    assert profiles.column("persona_id").to_pylist() == ["A", "B"]
    assert profiles.column("score__s1").to_pylist() == [np.float32(0.9), np.float32(0.1)]
    assert np.isnan(profiles.column("score__s2").to_pylist()[1])  # B was not scored for s2
    assert profiles.column("member__s2").to_pylist() == [False, False]
    assert profiles.column("intent_categories").to_pylist()[0] == [
        {"name": "q", "weight": 5.0},
        {"name": "x/y", "weight": 2.0},
    ]
    assert profiles.column("intent_brands").to_pylist() == [[{"name": "Acme", "weight": 1.0}], []]
    assert dict(zip(key_rows.column("key_hash").to_pylist(), key_rows.column("row").to_pylist())) == {11: 0, 22: 1}
    assert link_rows.num_rows == 0 and curve.num_rows > 0


def test_curves_map_a_score_to_the_percentile_the_batch_gave_it():
    rng = np.random.default_rng(1)
    score = np.sort(rng.random(5000))
    pct = 100 * (np.arange(5000) + 0.5) / 5000
    halves = [
        pa.table(
            {
                "persona_id": [str(i) for i in idx],
                "segment": ["s"] * len(idx),
                "score": score[idx],
                "percentile": pct[idx],
                "member": pct[idx] >= 90,
            }
        )
        for idx in (np.arange(0, 5000, 2), np.arange(1, 5000, 2))
    ]
    partials = [
        build_partition(
            0,
            pa.table({"persona_id": h.column("persona_id"), "inputs": pa.array([b""] * h.num_rows, pa.binary(0))}),
            h,
            None,
            None,
            None,
            ["s"],
            1,
        )[3]
        for h in halves
    ]
    curve = merge_curves(partials)["s"]
    assert np.all(np.diff(curve["percentile"]) >= 0)
    assert np.abs(np.interp(score, curve["score"], curve["percentile"]) - pct).max() < 0.2


def test_online_features_follow_the_catalogue_declarations():
    config = FeaturesConfig()
    names = [f.name for f in catalog(config)]
    online = online_features(config, names)
    chosen = {f.name for f in online}
    assert {
        "product_views_7d",
        "carts_30d",
        "orders_7d",
        "revenue_30d",
        "days_since_last_view",
        "cat03_views_90d",
    } <= chosen
    assert not chosen & {"aov_30d", "installment_orders_365d", "days_since_first_event", "view_to_cart_rate_30d"}
    as_of = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc).timestamp()
    base = np.zeros(len(names))
    base[names.index("days_since_last_cart")] = 3.0
    base[names.index("days_since_last_purchase")] = np.nan
    live = LiveEvents.empty()
    live.add(as_of + 86_400, "product_view", "fashion/shoes", "p1\x1fe1", None, 10.0)
    live.add(as_of + 2 * 86_400, "purchase", "fashion/shoes", "p1\x1fo1", 2, 10.0)
    categories = ["beauty", "books", "electronics", "fashion"]
    row, t = updated_features(base, names, online, live, as_of, categories)
    value = dict(zip(names, row))
    assert t == as_of + 2 * 86_400
    assert value["product_views_7d"] == 1 and value["orders_7d"] == 1 and value["items_7d"] == 2
    assert value["revenue_7d"] == 20.0 and value["cat03_views_90d"] == 1 and value["cat03_purchases_365d"] == 1
    assert value["days_since_last_view"] == 1.0 and value["days_since_last_purchase"] == 0.0
    assert value["days_since_last_cart"] == 5.0  # the batch's 3 days, aged by the 2 days since the cut-off


def test_the_live_path_moves_exactly_the_features_marked_online():
    """FEATURES.md's `live` marks (`Feature.online`) are what the online path updates: live events of every
    type in every category slot move each marked feature and no other."""
    config = FeaturesConfig()
    features = catalog(config)
    names = [f.name for f in features]
    marked = {f.name for f in features if f.online}
    online = online_features(config, names)
    assert {f.name for f in online} == marked and len(marked) > 20
    as_of = TS.timestamp()
    base = np.array([3.0 for _ in features])  # a days_since that is NaN would stay NaN without its event type
    categories = [f"category{slot:02d}" for slot in range(category_slots(config))]
    live = LiveEvents.empty()
    for n, event_type in enumerate(EVENT_TYPES):
        for category in categories:
            live.add(as_of + 3600 + n, event_type, f"{category}/x", f"p1\x1f{event_type}{category}", 2, 10.0)
    row, _ = updated_features(base, names, online, live, as_of, categories)
    assert {name for name, old, new in zip(names, base, row) if old != new} == marked


def test_shown_intents_add_live_weights_to_the_kept_ones():
    shown = shown_intents([{"name": "a", "weight": 3.0}, {"name": "b", "weight": 1.0}], {"c": 4.0, "b": 2.0}, 2)
    assert shown == [{"name": "c", "score": 0.4}, {"name": "a", "score": 0.3}]
