"""The resolve stage through the runner, on a small generated sample: local disk and S3 (moto), the Ray
path against the single-process one, stable ids, the quarantine limit, bad input."""

import datetime as dt
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from resolve_runs import DAYS, PARTNERS, PERSONS, resolved, run_stages, write_files

from jobs.config import JobConfig
from jobs.contract import plan_input, read_events_local
from jobs.errors import UserError
from jobs.identity.rounds import resolve_local
from jobs.run.layout import RunLayout
from jobs.storage import MARKER, exists, join, read_arrow
from jobs.synthetic import generate_events

TABLES = ("quarantine", "events_resolved", "identity_map", "identity_audit", "personas")
RULES = {
    "blocklist",
    "invalid_email",
    "invalid_phone",
    "email_fanout",
    "phone_fanout",
    "customer_fanout",
    "subscriber_fanout",
    "shared_device",
    "shared_device_customers",
    "forwarded_click",
    "size_cap",
}


@pytest.fixture(scope="module")
def sample():
    return generate_events(PERSONS, PARTNERS, DAYS, seed=11)


def test_resolve_stage_tables_and_figures(ray_cluster, sample, tmp_path):
    write_files(sample, tmp_path / "events")
    config = JobConfig(events=str(tmp_path / "events"), ray={"num_partitions": 3})
    run_dir = str(tmp_path / "runs" / "r1")
    stage = run_stages(config, run_dir)["resolve"]
    result = stage["result"]
    assert result["rows_in"] == sample.num_rows == result["rows_out"] + result["quarantined"]
    assert (stage["rows_in"], stage["rows_out"], stage["quarantined"]) == (
        result["rows_in"],
        result["rows_out"],
        result["quarantined"],
    )
    assert result["reasons"] == {} or sum(result["reasons"].values()) == result["quarantined"]
    assert result["personas"] > PERSONS * 0.8 and result["identifiers_audited"] > 0
    assert result["partitions"] == 3 and result["files"] == 3 and result["hash_collisions"] == 0
    assert len(result["cc_rounds"]) >= 2 and set(result["stage_seconds"]) == set(result["driver_rss_mb_after"])
    storage = config.storage
    layout = RunLayout(run_dir)
    for table in TABLES:
        assert exists(join(layout.table(table), MARKER), storage)
    assert stage["tables"]["personas"] == result["personas"]
    assert stage["tables"]["events_resolved"] == result["rows_out"]
    events = read_arrow(layout.table("events_resolved"), storage)
    assert set(sample.column_names) | {"persona_id", "session_key"} == set(events.column_names)
    assert events.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert pc.sum(pc.is_valid(events.column("session_key"))).as_py() > 0.9 * events.num_rows
    assert pc.sum(pc.is_valid(events.column("persona_id"))).as_py() == result["rows_with_persona"]
    imap = read_arrow(layout.table("identity_map"), storage)
    assert imap.num_rows == result["identifiers_linked"]
    assert imap.schema.field("seen_at_partners").type == pa.list_(pa.string())
    assert set(imap.column("identifier_type").to_pylist()) >= {"device", "email", "phone", "customer"}
    phones = imap.filter(pc.equal(imap.column("identifier_type"), "phone")).column("identifier")
    assert pc.all(pc.starts_with(phones, "+")).as_py()
    personas = read_arrow(layout.table("personas"), storage)
    assert personas.num_rows == result["personas"]
    assert set(imap.column("persona_id").to_pylist()) == set(personas.column("persona_id").to_pylist())
    audit = read_arrow(layout.table("identity_audit"), storage)
    assert audit.num_rows == result["identifiers_audited"] > 0 and set(audit.column("rule").to_pylist()) <= RULES
    counted = dict(zip(*[c.to_pylist() for c in pc.value_counts(audit.column("rule")).flatten()]))
    assert result["audited_by_rule"] == counted

    # the distributed run gives exactly the single-process answer (bench_resolve's baseline): the same rows
    plan = plan_input(str(tmp_path / "events"), storage)
    single = resolve_local(read_events_local(plan, storage), config.identity)
    for name in ("personas", "identity_map", "events_resolved", "identity_audit"):
        written = read_arrow(layout.table(name), storage)
        assert _sorted(single[name].select(written.column_names).cast(written.schema)).equals(_sorted(written)), name
    local = single["events_resolved"]
    local_map = dict(
        zip(
            zip(local.column("partner_id").to_pylist(), local.column("event_id").to_pylist()),
            local.column("persona_id").to_pylist(),
        )
    )
    assert local_map == resolved(run_dir, storage)


def _sorted(table: pa.Table) -> pa.Table:
    """Rows in a defined order (every non-list column as a sort key; NaN as a sortable number)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_floating(field.type):
            table = table.set_column(i, field, pc.if_else(pc.is_nan(table[field.name]), -1.0, table[field.name]))
    keys = [(f.name, "ascending") for f in table.schema if not pa.types.is_list(f.type)]
    return table.sort_by(keys).combine_chunks()


def test_same_input_same_ids_and_a_later_day_keeps_ids(ray_cluster, sample, tmp_path):
    cut = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=DAYS - 1)
    early = sample.filter(pc.less(sample.column("ts"), pa.scalar(cut, pa.timestamp("us", tz="UTC"))))
    write_files(early, tmp_path / "early", chunks=2)
    write_files(sample, tmp_path / "all", chunks=4)
    runs = {}
    for name, folder in (("a", "early"), ("b", "early"), ("c", "all")):
        config = JobConfig(events=str(tmp_path / folder), ray={"num_partitions": 2 if name != "b" else 4})
        run_stages(config, str(tmp_path / name))
        runs[name] = resolved(str(tmp_path / name), config.storage)
    assert runs["a"] == runs["b"]  # same input, other partitioning: same ids
    before, after = runs["a"], runs["c"]
    groups_before: dict = {}
    for key, pid in before.items():
        groups_before.setdefault(pid, set()).add(key)
    groups_after: dict = {}
    for key, pid in after.items():
        if key in before:
            groups_after.setdefault(pid, set()).add(key)
    unchanged = [
        pid
        for pid, keys in groups_before.items()
        if pid is not None and groups_after.get(after[next(iter(keys))]) == keys
    ]
    assert len(unchanged) > 0.9 * len([p for p in groups_before if p is not None])
    for pid in unchanged:  # a persona that neither merged nor split keeps its id
        assert {after[k] for k in groups_before[pid]} == {pid}


def test_resolve_stage_reads_from_and_writes_to_s3(ray_cluster, sample, storage, s3_bucket):
    import boto3

    small = sample.slice(0, 3000)
    s3 = boto3.client("s3", endpoint_url=storage.endpoint_url, region_name="us-east-1")
    bucket = s3_bucket.removeprefix("s3://")
    for i, part in enumerate((small.slice(0, 1500), small.slice(1500))):
        sink = pa.BufferOutputStream()
        pq.write_table(part, sink)
        s3.put_object(Bucket=bucket, Key=f"in/events-{i}.parquet", Body=sink.getvalue().to_pybytes())
    line = json.dumps(
        {
            "event_id": "j1",
            "ts": "2026-01-03T10:00:00+00:00",
            "partner_id": "px",
            "event_type": "login",
            "email": "S3.Reader@Example.com",
            "device_id": "dj",
        }
    )
    s3.put_object(Bucket=bucket, Key="in/extra.jsonl", Body=line.encode())
    config = JobConfig(events=f"{s3_bucket}/in/", storage=storage, ray={"num_partitions": 2})
    result = run_stages(config, f"{s3_bucket}/runs/r1")["resolve"]["result"]
    assert result["rows_in"] == 3001 == result["rows_out"] + result["quarantined"]
    events = read_arrow(f"{s3_bucket}/runs/r1/events_resolved", storage, columns=["event_id", "persona_id", "email"])
    row = events.filter(pc.equal(events.column("event_id"), "j1")).to_pylist()[0]
    assert row["persona_id"] is not None and row["email"] == "S3.Reader@Example.com"
    quarantine = read_arrow(f"{s3_bucket}/runs/r1/quarantine", storage)
    assert quarantine.num_rows == result["quarantined"]


def test_quarantine_share_limit_fails_after_writing_quarantine(ray_cluster, tmp_path):
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    records = [
        {
            "event_id": f"e{i}",
            "ts": t0 + dt.timedelta(minutes=i),
            "partner_id": "p1",
            "event_type": "page_view" if i < 10 else "teleport",
            "device_id": f"d{i}",
        }
        for i in range(12)
    ]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "in" / "events.parquet")
    run_dir = str(tmp_path / "run")
    config = JobConfig(events=str(tmp_path / "in"), ray={"num_partitions": 2})
    with pytest.raises(UserError, match=r"2 of 12 input rows .* broke the input contract.*unknown_event_type: 2"):
        run_stages(config, run_dir)
    quarantine = read_arrow(RunLayout(run_dir).table("quarantine"), config.storage)
    assert quarantine.column("reason").to_pylist() == ["unknown_event_type"] * 2
    assert quarantine.column("source_file").to_pylist()[0] == str(tmp_path / "in" / "events.parquet")
    relaxed = JobConfig(events=str(tmp_path / "in"), ray={"num_partitions": 2}, input={"max_quarantine_share": 0.5})
    result = run_stages(relaxed, run_dir)["resolve"]["result"]
    assert result["rows_in"] == 12 == result["rows_out"] + result["quarantined"]
    assert result["reasons"] == {"unknown_event_type": 2}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: str(p / "missing"), "does not exist"),
        (lambda p: "s3://no-such-bucket-xyz/events", "does not exist"),
    ],
)
def test_bad_input_is_a_user_error(ray_cluster, tmp_path, storage, make, message):
    config = JobConfig(events=make(tmp_path), storage=storage)
    with pytest.raises(UserError, match=message) as error:
        run_stages(config, str(tmp_path / "run"))
    assert "jobs/" not in str(error.value)
