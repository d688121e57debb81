"""The Ray path: same table as the single-process baseline, blind to the future, and the stage end to end."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.catalog import feature_names
from features.compute import compute_features, compute_local, default_as_of, run_features
from jobs import io
from jobs.config import JobConfig, RayConfig
from jobs.generate import generate_events

from feature_events import AS_OF, hand_table

MID = dt.date(2026, 2, 20)  # a cut-off inside the generated events (2026-01-01 + 75 days)


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


def _dataset(table: pa.Table, blocks: int = 4):
    import ray.data

    step = -(-table.num_rows // blocks)
    return ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])


def _collect(ds) -> pa.Table:
    import ray

    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


def _bytes(table: pa.Table) -> bytes:
    """The table sorted by persona_id, as Arrow IPC bytes (NaN compares equal to NaN, bit for bit)."""
    table = table.sort_by("persona_id").combine_chunks().replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("as_of", [MID, AS_OF])
def test_partitions_give_the_single_process_table(ray_cluster, events, as_of):
    config = JobConfig(ray=RayConfig(num_partitions=3))
    distributed = _collect(compute_features(_dataset(events), as_of, config))
    local = compute_local(events, as_of, config)
    assert local.num_rows > 100 and local.column_names[2:] == feature_names(config.features)
    assert _bytes(distributed) == _bytes(local)
    # and with another partition count and block layout
    again = _collect(compute_features(_dataset(events, blocks=7), as_of, JobConfig(ray=RayConfig(num_partitions=5))))
    assert _bytes(again) == _bytes(local)


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
    ghost = later.slice(0, 50).set_column(later.schema.get_field_index("persona_id"), "persona_id",
                                          pa.array(["ghost"] * 50, later.schema.field("persona_id").type))
    return pa.concat_tables([later, past, ghost])  # the row order changes too


@pytest.mark.parametrize("as_of", [MID, dt.date(2026, 1, 20)])
def test_events_at_or_after_the_cut_off_change_nothing(ray_cluster, events, as_of):
    config = JobConfig(ray=RayConfig(num_partitions=3))
    changed = _rewrite_the_future(events, as_of)
    original = _collect(compute_features(_dataset(events), as_of, config))
    rewritten = _collect(compute_features(_dataset(changed), as_of, config))
    assert _bytes(original) == _bytes(rewritten)
    assert _bytes(compute_local(changed, as_of, config)) == _bytes(original)
    assert "ghost" not in original.column("persona_id").to_pylist() + rewritten.column("persona_id").to_pylist()
    # not vacuous: one day later the rewritten events are seen and the tables differ
    later = as_of + dt.timedelta(days=1)
    assert _bytes(compute_local(changed, later, config)) != _bytes(compute_local(events, later, config))


def test_events_without_persona_or_before_the_history_are_ignored(ray_cluster):
    table = hand_table()
    assert compute_local(table, AS_OF, JobConfig()).num_rows == 3
    empty = compute_local(table, dt.date(2020, 1, 1), JobConfig())
    assert empty.num_rows == 0 and empty.column_names[2:] == feature_names(JobConfig().features)
    assert _collect(compute_features(_dataset(table), dt.date(2020, 1, 1), JobConfig())).num_rows == 0


def test_default_as_of_is_the_day_after_the_last_event(ray_cluster):
    # the last event (a99) is on 2026-07-02
    assert default_as_of(_dataset(hand_table())) == dt.date(2026, 7, 3)


def test_run_features_cli_writes_the_table(ray_cluster, tmp_path, events):
    from typer.testing import CliRunner

    from jobs.cli import app

    run_dir = str(tmp_path / "runs" / "r1")
    io.write_arrow(events, io.join(run_dir, "events_resolved"), JobConfig().storage)
    result = CliRunner().invoke(app, ["features", "--run", run_dir, "--as-of", "2026-02-20"])
    assert result.exit_code == 0, result.output
    summary = json.loads(re.search(r"^\{$.*^\}$", result.stdout, flags=re.M | re.S).group(0))  # the echoed summary
    assert summary["as_of"] == "2026-02-20" and summary["features"] == len(feature_names(JobConfig().features))
    table_path = io.join(run_dir, "features")
    marker = io.read_marker(table_path, JobConfig().storage)
    assert marker["as_of"] == "2026-02-20" and marker["categories"] == summary["categories"]
    assert "electronics" in marker["categories"] and "zzz" not in marker["categories"]
    written = io.read_arrow(table_path, JobConfig().storage)
    assert _bytes(written) == _bytes(compute_local(events, MID, JobConfig()))
    assert summary["personas"] == written.num_rows == marker["rows"]


def test_run_features_defaults_and_errors(ray_cluster, tmp_path):
    storage = JobConfig().storage
    run_dir = str(tmp_path / "runs" / "r2")
    from jobs.errors import UserError

    with pytest.raises(UserError, match="not been published"):
        run_features(JobConfig(), run_dir)
    io.write_arrow(hand_table(), io.join(run_dir, "events_resolved"), storage)
    summary = run_features(JobConfig(), run_dir)
    assert summary["as_of"] == "2026-07-03" and summary["personas"] == 3
    with pytest.raises(UserError, match="no persona has events before"):
        run_features(JobConfig.model_validate({"features": {"as_of": "2020-01-01"}}), run_dir)


def test_true_person_id_is_never_read():
    from features.compute import INPUT_COLUMNS

    assert "true_person_id" not in INPUT_COLUMNS  # the stage reads exactly these columns
    table = hand_table()
    scrambled = table.set_column(table.schema.get_field_index("true_person_id"), "true_person_id",
                                 pa.array([f"x{i}" for i in range(table.num_rows)]))
    assert _bytes(compute_local(scrambled, AS_OF, JobConfig())) == _bytes(compute_local(table, AS_OF, JobConfig()))
