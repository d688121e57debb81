"""The input contract: file checks (UserError naming the file), row rules, quarantine, duplicates."""

import datetime as dt
import gzip
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs import contract
from jobs.config import JobConfig, StorageConfig
from jobs.errors import UserError

LOCAL = StorageConfig()
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def rows(n=3, partner="p1", **overrides):
    out = []
    for i in range(n):
        r = {"event_id": f"e{i}", "ts": T0 + dt.timedelta(minutes=i), "partner_id": partner, "event_type": "page_view",
             "device_id": f"d{i}", "price": 9.5, "quantity": 1, "true_person_id": f"t{i}"}
        r.update(overrides)
        out.append(r)
    return out


def write_parquet(path, records):
    pq.write_table(pa.Table.from_pylist(records), path)


def reasons(table):
    return table.column(contract.REASON).to_pylist()


def test_normalise_batch_types_and_row_rules():
    raw = pa.table({
        "event_id": ["a", "b", "", "d", "e", "f", "g"],
        "ts": ["2026-01-01T10:00:00Z", "2026-01-01 12:00:00+02:00", "2026-01-01T10:00:00Z", "yesterday",
               "2026-01-01T10:00:00Z", None, "2026-01-02"],
        "partner_id": ["p1", "p1", "p1", "p1", "p1", "p1", " "],
        "event_type": ["purchase", "login", "login", "login", "teleport", "login", "login"],
        "price": ["10.5", "x", None, None, None, None, None],
        "quantity": [1, 2, None, None, None, None, None],
        "true_person_id": [1, 2, 3, 4, 5, 6, 7],
    })
    out = contract.normalise_batch(raw, ["true_person_id"])
    assert out.schema == contract.canonical_schema(["true_person_id"])
    assert reasons(out) == [None, None, "missing_event_id", "unparseable_ts", "unknown_event_type", "missing_ts",
                            "missing_partner_id"]
    ts = out.column("ts").to_pylist()
    assert ts[0] == dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc)
    assert ts[1] == dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc)  # offsets become UTC
    assert out.column("price").to_pylist()[:2] == [10.5, None]  # a bad optional value becomes null
    assert out.column("true_person_id").to_pylist()[:2] == ["1", "2"]  # extra columns as strings
    assert out.column("email").null_count == 7  # optional columns missing from the file are null
    assert out.column(contract.TS_RAW).to_pylist()[3] == "yesterday"


def test_naive_timestamps_are_utc():
    raw = pa.table({"event_id": ["a"], "ts": pa.array([dt.datetime(2026, 1, 1, 8)], pa.timestamp("ms")),
                    "partner_id": ["p"], "event_type": ["login"]})
    out = contract.normalise_batch(raw, [])
    assert out.column("ts")[0].as_py() == dt.datetime(2026, 1, 1, 8, tzinfo=dt.timezone.utc)


def test_dedupe_keeps_the_first_deterministically():
    base = rows(3)
    dup_late = dict(base[1], ts=T0 + dt.timedelta(hours=5), device_id="late")
    dup_other_partner = dict(base[1], partner_id="p2")  # same event id at another partner: not a duplicate
    table = contract.normalise_batch(pa.Table.from_pylist(base + [dup_late, dup_other_partner]), ["true_person_id"])
    kept, bad = contract.dedupe(table)
    kept2, bad2 = contract.dedupe(table.take(pa.array([4, 3, 2, 1, 0])))
    assert kept.num_rows == 4 and bad.num_rows == 1
    assert reasons(bad) == ["duplicate_event_id"] and bad.column("device_id").to_pylist() == ["late"]
    assert sorted(kept.column("device_id").to_pylist()) == sorted(kept2.column("device_id").to_pylist())
    assert bad2.column("device_id").to_pylist() == ["late"]


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        contract.plan_input(str(tmp_path / "nope"), LOCAL)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no event files"):
        contract.plan_input(str(tmp_path / "empty"), LOCAL)


def test_empty_file_is_named(tmp_path):
    write_parquet(tmp_path / "good.parquet", rows())
    (tmp_path / "events-empty.jsonl").write_bytes(b"")
    with pytest.raises(UserError, match="events-empty.jsonl is empty"):
        contract.plan_input(str(tmp_path), LOCAL)


def test_corrupt_parquet_is_named(tmp_path):
    write_parquet(tmp_path / "a.parquet", rows())
    data = (tmp_path / "a.parquet").read_bytes()
    (tmp_path / "b.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"b\.parquet is not a readable Parquet file"):
        contract.plan_input(str(tmp_path), LOCAL)


def test_missing_required_column_names_file_and_field(tmp_path):
    records = [{k: v for k, v in r.items() if k != "event_type"} for r in rows()]
    write_parquet(tmp_path / "x.parquet", records)
    with pytest.raises(UserError, match=r"x\.parquet has no required column event_type"):
        contract.plan_input(str(tmp_path), LOCAL)
    (tmp_path / "x.parquet").unlink()
    (tmp_path / "y.jsonl").write_text(json.dumps({"event_id": "1", "ts": "2026-01-01", "partner_id": "p"}) + "\n")
    with pytest.raises(UserError, match=r"y\.jsonl has no required field event_type"):
        contract.plan_input(str(tmp_path), LOCAL)


def test_not_json_lines(tmp_path):
    (tmp_path / "z.json").write_text("[1, 2, 3")
    with pytest.raises(UserError, match=r"z\.json is not JSON Lines"):
        contract.plan_input(str(tmp_path), LOCAL)


def test_missing_bucket(storage):
    with pytest.raises(UserError, match="does not exist"):
        contract.plan_input("s3://no-such-bucket-here/events/", storage)


def _jsonable(records):
    return [{k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in r.items()} for r in records]


def test_read_mixed_files_to_one_schema(ray_cluster, tmp_path):
    write_parquet(tmp_path / "a.parquet", rows(4, partner="pa"))
    write_parquet(tmp_path / "b.parquet", [dict(r, campaign="spring") for r in rows(3, partner="pb")])
    lines = "\n".join(json.dumps(r) for r in _jsonable(rows(2, partner="pc", email="A@B.com")))
    (tmp_path / "c.jsonl").write_text(lines + "\n")
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in _jsonable(rows(2, partner="pd", ts="not a time"))))
    plan = contract.plan_input(str(tmp_path), LOCAL)
    assert plan.extra_columns == ["campaign", "true_person_id"]
    table = pa.concat_tables(ray_cluster.get(contract.read_events(plan, LOCAL).to_arrow_refs()))
    assert table.num_rows == 11
    assert table.schema == contract.canonical_schema(plan.extra_columns)
    by_partner = {p: table.filter(pc.equal(table.column("partner_id"), p)) for p in ("pa", "pb", "pc", "pd")}
    assert by_partner["pb"].column("campaign").to_pylist() == ["spring"] * 3
    assert by_partner["pa"].column("campaign").null_count == 4
    assert by_partner["pc"].column("email").to_pylist() == ["A@B.com"] * 2
    assert reasons(by_partner["pd"]) == ["unparseable_ts"] * 2
    assert by_partner["pd"].column(contract.SOURCE).to_pylist()[0].endswith("d.jsonl.gz")
    local = contract.read_events_local(plan, LOCAL)
    assert local.num_rows == 11 and local.schema == table.schema


def test_quarantine_share_limit_fails_after_writing_quarantine(ray_cluster, tmp_path):
    from jobs import io
    from jobs.resolve import run_resolve

    records = rows(10) + [dict(r, event_type="teleport", event_id=f"bad{i}") for i, r in enumerate(rows(2))]
    (tmp_path / "in").mkdir()
    write_parquet(tmp_path / "in" / "events.parquet", records)
    run_dir = str(tmp_path / "run")
    config = JobConfig(events=str(tmp_path / "in"), ray={"num_partitions": 2})
    with pytest.raises(UserError, match=r"2 of 12 input rows .* broke the input contract.*unknown_event_type: 2"):
        run_resolve(config, run_dir)
    quarantine = io.read_arrow(io.RunLayout(run_dir).table("quarantine"), config.storage)
    assert quarantine.column("reason").to_pylist() == ["unknown_event_type"] * 2
    assert quarantine.column("source_file").to_pylist()[0].endswith("events.parquet")
    relaxed = JobConfig(events=str(tmp_path / "in"), ray={"num_partitions": 2}, input={"max_quarantine_share": 0.5})
    summary = run_resolve(relaxed, run_dir)
    assert summary["rows_in"] == 12 == summary["rows_resolved"] + summary["rows_quarantined"]
    assert summary["quarantined_by_reason"] == {"unknown_event_type": 2}
