"""The Ray path: every snapshot from one shuffle gives the single-process table of each cut-off, and is blind
to the future."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from feature_events import AS_OF, CATEGORIES, hand_table

from features.catalog import feature_names
from features.compute import compute_local
from features.distributed import features_distributed
from features.inputs import INPUT_COLUMNS
from jobs.config import FeaturesConfig, JobConfig, PlanView
from jobs.run.plan import EventFacts, block_facts, build_plan
from jobs.synthetic import generate_events

MID = dt.date(2026, 2, 20)  # a cut-off inside the generated events (2026-01-01 + 75 days)
CONFIG = FeaturesConfig()


def _with_stand_in_personas(events: pa.Table) -> pa.Table:
    """Generated events with a persona per device (else email, phone, subscriber): no ground truth used."""
    persona = pc.coalesce(events["device_id"], pc.utf8_lower(events["email"]), events["phone"], events["subscriber_id"])
    events = events.drop_columns(["true_person_id"])
    return events.append_column("persona_id", persona).append_column("session_key", events["session_id"])


@pytest.fixture(scope="module")
def events() -> pa.Table:
    generated = _with_stand_in_personas(generate_events(persons=250, partners=4, days=75, seed=3))
    hand = hand_table().drop_columns(["true_person_id"]).select(generated.column_names)
    return pa.concat_tables([generated.cast(hand.schema), hand])


@pytest.fixture(scope="module")
def categories(events) -> tuple[str, ...]:
    """What the run plan chooses for these events with the scoring cut-off AS_OF."""
    view = PlanView.from_config(JobConfig(features=FeaturesConfig(as_of=AS_OF)))
    return build_plan("r1", AS_OF, view, EventFacts.from_table(block_facts(events))).categories


def _blocks(table: pa.Table, blocks: int = 4) -> list:
    import ray

    step = -(-table.num_rows // blocks)
    return [ray.put(table.slice(i, step)) for i in range(0, table.num_rows, step)]


def _collect(refs: list) -> pa.Table:
    import ray

    return pa.concat_tables(ray.get(refs))


def _bytes(table: pa.Table) -> bytes:
    """The table sorted by persona_id, as Arrow IPC bytes (NaN compares equal to NaN, bit for bit)."""
    table = table.sort_by("persona_id").combine_chunks().replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_every_snapshot_of_one_shuffle_is_the_single_process_table(ray_cluster, events, categories):
    snapshots = [MID, AS_OF]
    tables = [_collect(ds) for ds in features_distributed(_blocks(events), snapshots, categories, CONFIG, 3)]
    for as_of, table in zip(snapshots, tables):
        local = compute_local(events, as_of, CONFIG, categories)
        assert local.num_rows > 100 and local.column_names[2:] == feature_names(CONFIG)
        assert set(table.column("as_of").to_pylist()) == {as_of}
        assert _bytes(table) == _bytes(local)
    assert tables[0].num_rows < tables[1].num_rows  # personas appear over time: the snapshots differ
    # and with another partition count and block layout, one cut-off at a time
    for as_of, table in zip(snapshots, tables):
        (again,) = features_distributed(_blocks(events, blocks=7), [as_of], categories, CONFIG, 5)
        assert _bytes(_collect(again)) == _bytes(table)


def _rewrite_the_future(events: pa.Table, as_of: dt.date) -> pa.Table:
    """Every event at or after the cut-off changed in every column that matters, a third removed, more added."""
    cutoff = pa.scalar(dt.datetime(as_of.year, as_of.month, as_of.day, tzinfo=dt.timezone.utc))
    future = pc.greater_equal(events["ts"], cutoff)
    past, later = events.filter(pc.invert(future)), events.filter(future)
    assert later.num_rows > 1000, "the test needs events after the cut-off"
    n = later.num_rows
    rng = np.random.default_rng(0)
    personas = pc.unique(past["persona_id"].drop_null()).to_numpy(zero_copy_only=False)
    tokens = pc.unique(past["click_token"].drop_null()).to_numpy(zero_copy_only=False)
    replaced = {
        "persona_id": pa.array(rng.choice(personas, n)),  # attach future events to personas with a past
        "event_type": pa.array(rng.choice(["purchase", "message_click", "product_view", "add_to_cart"], n)),
        "category": pa.array(rng.choice(["zzz/leak", "toys/lego", "electronics/phones"], n)),
        "price": pa.array(rng.uniform(1, 5000, n)),
        "quantity": pa.array(rng.integers(1, 9, n)),
        "click_token": pa.array(rng.choice(tokens, n)),  # clicks on past campaign messages
        "product_id": pa.array(rng.choice(pc.unique(past["product_id"].drop_null()).to_numpy(zero_copy_only=False), n)),
        "order_id": pa.array([f"leak{i}" for i in range(n)]),
        "device_id": pa.array([f"leak-device{i % 50}" for i in range(n)]),
        "payment_method": pa.array(rng.choice(["installments", "wallet"], n)),
        "country": pa.array(rng.choice(["US", "JP"], n)),
    }
    for name, values in replaced.items():
        later = later.set_column(later.schema.get_field_index(name), name, values.cast(later.schema.field(name).type))
    later = later.filter(pa.array(np.arange(n) % 3 != 0))
    ghost = later.slice(0, 50).set_column(
        later.schema.get_field_index("persona_id"),
        "persona_id",
        pa.array(["ghost"] * 50, later.schema.field("persona_id").type),
    )
    return pa.concat_tables([later, past, ghost])  # the row order changes too


@pytest.mark.parametrize("as_of", [MID, dt.date(2026, 1, 20)])
def test_events_at_or_after_the_cut_off_change_nothing(ray_cluster, events, categories, as_of):
    changed = _rewrite_the_future(events, as_of)
    (original,) = features_distributed(_blocks(events), [as_of], categories, CONFIG, 3)
    (rewritten,) = features_distributed(_blocks(changed), [as_of], categories, CONFIG, 3)
    original, rewritten = _collect(original), _collect(rewritten)
    assert _bytes(original) == _bytes(rewritten)
    assert _bytes(compute_local(changed, as_of, CONFIG, categories)) == _bytes(original)
    assert "ghost" not in original.column("persona_id").to_pylist() + rewritten.column("persona_id").to_pylist()
    # not vacuous: one day later the rewritten events are seen and the tables differ
    later = as_of + dt.timedelta(days=1)
    assert _bytes(compute_local(changed, later, CONFIG, categories)) != _bytes(
        compute_local(events, later, CONFIG, categories)
    )


def test_events_without_persona_or_before_the_history_are_ignored(ray_cluster):
    table = hand_table()
    assert compute_local(table, AS_OF, CONFIG, CATEGORIES).num_rows == 3
    empty = compute_local(table, dt.date(2020, 1, 1), CONFIG, CATEGORIES)
    assert empty.num_rows == 0 and empty.column_names[2:] == feature_names(CONFIG)
    early, late = features_distributed(_blocks(table), [dt.date(2020, 1, 1), AS_OF], CATEGORIES, CONFIG, 2)
    assert _collect(early).num_rows == 0 and _collect(late).num_rows == 3


def test_true_person_id_is_never_read():
    assert "true_person_id" not in INPUT_COLUMNS  # the stage reads exactly these columns
    table = hand_table()
    scrambled = table.set_column(
        table.schema.get_field_index("true_person_id"),
        "true_person_id",
        pa.array([f"x{i}" for i in range(table.num_rows)]),
    )
    assert _bytes(compute_local(scrambled, AS_OF, CONFIG, CATEGORIES)) == _bytes(
        compute_local(table, AS_OF, CONFIG, CATEGORIES)
    )
