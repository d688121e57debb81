"""One round loop, two executors: Ray tasks over hash partitions give exactly the tables of one process."""

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from identity_events import background, canonical, event

from jobs.config import IdentityConfig
from jobs.contract import CONTRACT_COLUMNS, normalise_batch
from jobs.identity import junk
from jobs.identity.distributed import RayExecutor
from jobs.identity.rounds import LocalExecutor, attach_personas, check_rows, resolve_identity, resolve_local
from jobs.raykit.shuffle import hash_partition
from jobs.synthetic import generate_events

SORT_KEYS = {
    "events_resolved": ["partner_id", "event_id"],
    "identity_map": ["identifier_type", "identifier", "partner_id"],
    "personas": ["persona_id"],
    "identity_audit": ["rule", "identifier_type", "identifier", "partner_id"],
    "quarantine": ["partner_id", "event_id", "_reason"],
}


def resolve_on_ray(
    ray_cluster, events: pa.Table, config: IdentityConfig, partitions: int, one_task_edges: int = 0
) -> dict:
    """`resolve_local`'s work with the Ray executor, from blocks of `events` (what the resolve stage does)."""
    ex = RayExecutor(partitions, one_task_edges)
    blocks = [ray_cluster.put(events.slice(i, 97)) for i in range(0, events.num_rows, 97)]
    parts = hash_partition(blocks, ["partner_id", "event_id"], partitions)
    rows = check_rows(ex, parts, junk.blocklists(config))
    identity = resolve_identity(ex, rows.slim, config)
    resolved = attach_personas(ex, rows.kept, identity.event_personas)

    def table(refs):
        return pa.concat_tables(ray_cluster.get(refs))

    return {
        "events_resolved": table(resolved.parts),
        "quarantine": table(rows.quarantined),
        "identity_map": table(identity.identity_map),
        "personas": table(identity.personas),
        "identity_audit": table(identity.audit),
        "figures": identity.figures,
    }


def comparable(table: pa.Table) -> pa.Table:
    """NaN (the audit's threshold of a flagged identifier) as null, so that equal tables compare equal."""
    for i, field in enumerate(table.schema):
        if pa.types.is_floating(field.type):
            column = table.column(i)
            table = table.set_column(i, field, pc.if_else(pc.is_nan(column), pa.scalar(None, field.type), column))
    return table.combine_chunks()


def assert_same_tables(local: dict, distributed: dict) -> None:
    for name, keys in SORT_KEYS.items():
        order = [(k, "ascending") for k in keys]
        a, b = comparable(local[name].sort_by(order)), comparable(distributed[name].sort_by(order))
        assert a.schema == b.schema, name
        assert a.num_rows == b.num_rows and a.equals(b), name
    figures = ("personas", "identifiers_linked", "size_cap_hubs_left", "hash_collisions", "thresholds")
    assert {k: local["figures"][k] for k in figures} == {k: distributed["figures"][k] for k in figures}


def scenario_rows() -> list[dict]:
    """Every rule at once: blocklist, fan-out, shared device, forwarded click, the size cap, a duplicate."""
    rows = background(60) + background(20, partner="p2")
    rows += [event("p1", "bl1", 10, "purchase", device_id="dev-a", email="Test@test.com", customer_id="ca")]
    rows += [event("p1", f"j{i}", 100 + i, "purchase", device_id=f"dev-bg{i}", email="x@x.com") for i in range(25)]
    rows += [
        event("p1", f"cafe{i}", 3000 + i * 120, "login", device_id="cafe-pc", email=f"person{i}@example.org")
        for i in range(8)
    ]
    rows += [
        event("p1", "send", 10, "message_sent", click_token="tok1", email="person1@example.org"),
        event("p1", "click-a", 20, "message_click", click_token="tok1", device_id="dev-bg1"),
        event("p1", "click-b", 25, "message_click", click_token="tok1", device_id="dev-bg2"),
    ]
    # a chain of people, each device used with two neighbours' emails: no rule fires, one giant component
    for i in range(30):
        for n, email in ((0, f"chain{i}@example.org"), (1, f"chain{i + 1}@example.org")):
            rows.append(event("p3", f"chain{i}-{n}", 100 * i + 5 * n, "login", device_id=f"cd{i}", email=email))
    rows += [event("p1", "bg3-0-a", 5, device_id="dev-dup")]  # a duplicate event id: quarantined
    return rows


@pytest.mark.parametrize("partitions, one_task_edges", [(1, 0), (3, 0), (3, 10**9)])
def test_ray_and_local_give_the_same_tables(ray_cluster, partitions, one_task_edges):
    config = IdentityConfig(max_persona_identifiers=20, min_fanout_devices=4)
    events = canonical(scenario_rows())
    local = resolve_local(events, config)
    assert {"size_cap", "forwarded_click", "email_fanout", "blocklist", "shared_device"} <= set(
        local["identity_audit"].column("rule").to_pylist()
    )
    assert local["quarantine"].num_rows == 1
    on_ray = resolve_on_ray(ray_cluster, events, config, partitions, one_task_edges)
    assert_same_tables(local, on_ray)
    # the size-cap rounds ran; each components pass either in one task (0 star rounds) or in star rounds
    assert len(on_ray["figures"]["cc_rounds"]) >= 3
    assert (set(on_ray["figures"]["cc_rounds"]) == {0}) == bool(one_task_edges)


def test_ray_and_local_give_the_same_tables_on_generated_events(ray_cluster):
    sample = generate_events(250, 4, 30, seed=11)
    config = IdentityConfig()
    events = normalise_batch(sample, [c for c in sample.column_names if c not in CONTRACT_COLUMNS])
    local = resolve_local(events, config)
    assert local["personas"].num_rows > 200
    assert_same_tables(local, resolve_on_ray(ray_cluster, events, config, 4))


def test_local_executor_keeps_one_partition():
    ex = LocalExecutor()
    t = pa.table({"k": [1, 2]})
    keyed, per_call, small = ex.map(lambda x: (x, x, x.num_rows), [(t,), (t,)], [["k"], None], scalar_outputs=1)
    assert [p.num_rows for p in keyed] == [4] and [p.num_rows for p in per_call] == [2, 2] and small == [2, 2]
    (only,) = ex.map(lambda x: x, [(t,)], [["k"]])
    assert only == [t]
