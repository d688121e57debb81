"""Reading the input: file checks (a UserError naming the file), batches normalised to one schema."""

import datetime as dt
import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from contract_events import reasons, rows, write_parquet

from jobs.config import StorageConfig
from jobs.contract import (
    REASON,
    SOURCE,
    TS_RAW,
    canonical_schema,
    normalise_batch,
    plan_input,
    read_events,
    read_events_local,
    reading,
)
from jobs.contract.reading import InputFile, file_groups, fill_ts_text, read_tasks
from jobs.errors import UserError
from jobs.raykit.shuffle import concat_pieces, hash_columns

LOCAL = StorageConfig()
KEYS = ["partner_id", "event_id"]  # the resolve stage's partitioning


def test_normalise_batch_types_and_row_rules():
    raw = pa.table(
        {
            "event_id": ["a", "b", "", "d", "e", "f", "g"],
            "ts": [
                "2026-01-01T10:00:00Z",
                "2026-01-01 12:00:00+02:00",
                "2026-01-01T10:00:00Z",
                "yesterday",
                "2026-01-01T10:00:00Z",
                None,
                "2026-01-02",
            ],
            "partner_id": ["p1", "p1", "p1", "p1", "p1", "p1", " "],
            "event_type": ["purchase", "login", "login", "login", "teleport", "login", "login"],
            "price": ["10.5", "x", None, None, None, None, None],
            "quantity": [1, 2, None, None, None, None, None],
            "true_person_id": [1, 2, 3, 4, 5, 6, 7],
        }
    )
    out = normalise_batch(raw, ["true_person_id"])
    assert out.schema == canonical_schema(["true_person_id"])
    assert reasons(out) == [
        None,
        "bad_type:price",
        "missing_event_id",
        "unparseable_ts",
        "unknown_event_type",
        "missing_ts",
        "missing_partner_id",
    ]
    ts = out.column("ts").to_pylist()
    assert ts[0] == dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc)
    assert ts[1] == dt.datetime(2026, 1, 1, 10, tzinfo=dt.timezone.utc)  # offsets become UTC
    assert out.column("price").to_pylist()[:2] == [10.5, None]  # "10.5" is a number; "x" costs the row
    assert out.column("true_person_id").to_pylist()[:2] == ["1", "2"]  # extra columns as strings
    assert out.column("email").null_count == 7  # optional columns missing from the file are null
    assert out.column(TS_RAW).to_pylist()[3] == "yesterday"


def test_naive_timestamps_are_utc():
    raw = pa.table(
        {
            "event_id": ["a"],
            "ts": pa.array([dt.datetime(2026, 1, 1, 8)], pa.timestamp("ms")),
            "partner_id": ["p"],
            "event_type": ["login"],
        }
    )
    out = normalise_batch(raw, [])
    assert out.column("ts")[0].as_py() == dt.datetime(2026, 1, 1, 8, tzinfo=dt.timezone.utc)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        plan_input(str(tmp_path / "nope"), LOCAL)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no event files"):
        plan_input(str(tmp_path / "empty"), LOCAL)
    with pytest.raises(UserError, match="no input events given"):
        plan_input("", LOCAL)


def test_empty_files_are_listed_and_skipped(tmp_path):
    write_parquet(tmp_path / "good.parquet", rows())
    (tmp_path / "events-empty.jsonl").write_bytes(b"")
    plan = plan_input(str(tmp_path), LOCAL)
    assert plan.empty_files == [str(tmp_path / "events-empty.jsonl")]
    assert [f.path for f in plan.files] == [str(tmp_path / "good.parquet")]
    (tmp_path / "good.parquet").unlink()
    with pytest.raises(UserError, match="holds only empty files"):
        plan_input(str(tmp_path), LOCAL)


def test_corrupt_parquet_is_named(tmp_path):
    write_parquet(tmp_path / "a.parquet", rows())
    data = (tmp_path / "a.parquet").read_bytes()
    (tmp_path / "b.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"b\.parquet is not a readable Parquet file"):
        plan_input(str(tmp_path), LOCAL)


def test_missing_required_column_names_file_and_field(tmp_path):
    records = [{k: v for k, v in r.items() if k != "event_type"} for r in rows()]
    write_parquet(tmp_path / "x.parquet", records)
    with pytest.raises(UserError, match=r"x\.parquet has no required column event_type"):
        plan_input(str(tmp_path), LOCAL)
    (tmp_path / "x.parquet").unlink()
    (tmp_path / "y.jsonl").write_text(json.dumps({"event_id": "1", "ts": "2026-01-01", "partner_id": "p"}) + "\n")
    with pytest.raises(UserError, match=r"y\.jsonl has no required field event_type"):
        plan_input(str(tmp_path), LOCAL)


def test_not_json_lines(tmp_path):
    (tmp_path / "z.json").write_text("[1, 2, 3")
    with pytest.raises(UserError, match=r"z\.json is not JSON Lines"):
        plan_input(str(tmp_path), LOCAL)


def test_missing_bucket(storage):
    with pytest.raises(UserError, match="does not exist"):
        plan_input("s3://no-such-bucket-here/events/", storage)


def partitions(ray_cluster, pieces) -> list[pa.Table]:
    """The read's partitions as tables (what the next task's `map_exchange` makes of their pieces)."""
    return [concat_pieces(ray_cluster.get(list(p.refs))) for p in pieces]


def _jsonable(records):
    return [{k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in r.items()} for r in records]


def test_read_mixed_files_to_one_schema(ray_cluster, tmp_path):
    write_parquet(tmp_path / "a.parquet", rows(4, partner="pa"))
    write_parquet(tmp_path / "b.parquet", [dict(r, campaign="spring") for r in rows(3, partner="pb")])
    lines = "\n".join(json.dumps(r) for r in _jsonable(rows(2, partner="pc", email="A@B.com")))
    (tmp_path / "c.jsonl").write_text(lines + "\n")
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in _jsonable(rows(2, partner="pd", ts="not a time"))))
    plan = plan_input(str(tmp_path), LOCAL)
    assert plan.extra_columns == ["campaign", "true_person_id"]
    read = read_events(plan, LOCAL, None, KEYS, 3)
    parts = partitions(ray_cluster, read.partitions)
    table = pa.concat_tables(parts)
    assert read.rows == table.num_rows == 11 and read.extra_columns == ["campaign", "true_person_id"]
    assert all(p.schema == canonical_schema(read.extra_columns) for p in parts)  # JSON blocks lack `campaign`
    for i, part in enumerate(parts):  # every row in its key's partition
        assert (hash_columns(part, KEYS) % np.uint64(3) == i).all()
    by_partner = {p: table.filter(pc.equal(table.column("partner_id"), p)) for p in ("pa", "pb", "pc", "pd")}
    assert by_partner["pb"].column("campaign").to_pylist() == ["spring"] * 3
    assert by_partner["pa"].column("campaign").null_count == 4
    assert by_partner["pc"].column("email").to_pylist() == ["A@B.com"] * 2
    assert reasons(by_partner["pd"]) == ["unparseable_ts"] * 2
    assert by_partner["pd"].column(SOURCE).to_pylist()[0] == str(tmp_path / "d.jsonl.gz")
    local = read_events_local(plan, LOCAL)
    assert local.num_rows == 11 and local.schema == table.schema
    assert sorted(local.column(SOURCE).to_pylist()) == sorted(table.column(SOURCE).to_pylist())


def test_read_tasks_are_sized_by_bytes():
    files = [InputFile(f"f{i}", "parquet", size=10 << 20) for i in range(24)]
    assert read_tasks(files, cpus=2) == 4  # 240 MiB: 4 tasks of 64 MiB, and 2 per CPU
    assert read_tasks(files, cpus=2, task_bytes=20 << 20) == 12
    assert read_tasks(files, cpus=16) == 24  # never more than one per file
    assert read_tasks(files[:1], cpus=2) == 1


def test_a_parquet_file_is_read_in_batches_of_bounded_rows(tmp_path, monkeypatch):
    write_parquet(tmp_path / "big.parquet", rows(5))
    pq.write_table(pa.Table.from_pylist(rows(1)).slice(0, 0), tmp_path / "none.parquet")
    plan = plan_input(str(tmp_path), LOCAL)
    whole = read_events_local(plan, LOCAL)
    monkeypatch.setattr(reading, "PARQUET_BATCH_ROWS", 2)

    def read(name: str) -> list[pa.Table]:
        path = str(tmp_path / name)
        return list(reading.read_file(pafs.LocalFileSystem(), path, "parquet", plan.extra_columns, "", None))

    big = read("big.parquet")
    assert [t.num_rows for t in big] == [2, 2, 1]
    assert pa.concat_tables(big).to_pylist() == whole.to_pylist()  # the same rows as one whole read
    none = read("none.parquet")
    assert [t.num_rows for t in none] == [0] and none[0].schema == big[0].schema  # no rows: still a block


@pytest.mark.parametrize("sizes", [[10] * 24, [1, 1, 1, 50, 1, 1, 30, 1], [5, 0, 0, 7], [3]])
@pytest.mark.parametrize("tasks", [1, 2, 4, 8])
def test_file_groups_are_runs_of_consecutive_files_of_about_the_same_bytes(sizes, tasks):
    files = [InputFile(f"f{i}", "parquet", size=size) for i, size in enumerate(sizes)]
    tasks = min(tasks, len(files))
    groups = file_groups(files, tasks)
    assert [f for g in groups for f in g] == files  # every file once, in order
    assert len(groups) == tasks and all(groups)
    share = sum(sizes) / tasks
    # a group holds at most its share of the bytes and one file more
    assert all(sum(f.size for f in g) <= share + max(sizes) for g in groups)


def test_many_small_files_are_read_by_few_tasks(ray_cluster, tmp_path):
    # Ray Data would split 30 files into 200+ blocks; the reader asks for a few tasks of several files
    for i in range(30):
        write_parquet(tmp_path / f"e{i:02d}.parquet", rows(5, partner=f"p{i}"))
    plan = plan_input(str(tmp_path), LOCAL)
    cpus = int(ray_cluster.cluster_resources()["CPU"])
    assert read_tasks(plan.files, cpus) <= 2 * cpus
    read = read_events(plan, LOCAL, None, KEYS, 4)
    table = pa.concat_tables(partitions(ray_cluster, read.partitions))
    assert len(read.partitions) == 4 and read.rows == table.num_rows == 150
    assert len(set(table.column(SOURCE).to_pylist())) == 30


def test_read_from_s3_names_files_with_their_scheme(ray_cluster, storage, s3_bucket):
    import boto3

    sink = pa.BufferOutputStream()
    pa.parquet.write_table(pa.Table.from_pylist(rows(3)), sink)
    boto3.client("s3", endpoint_url=storage.endpoint_url, region_name="us-east-1").put_object(
        Bucket=s3_bucket.removeprefix("s3://"), Key="in/a.parquet", Body=sink.getvalue().to_pybytes()
    )
    plan = plan_input(f"{s3_bucket}/in/", storage)
    assert [f.path for f in plan.files] == [f"{s3_bucket}/in/a.parquet"] and plan.source_prefix == "s3://"
    table = pa.concat_tables(partitions(ray_cluster, read_events(plan, storage, None, KEYS, 2).partitions))
    local = read_events_local(plan, storage)
    assert table.column(SOURCE).to_pylist() == local.column(SOURCE).to_pylist() == [f"{s3_bucket}/in/a.parquet"] * 3


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", ["UTC", "Europe/Sofia", "+02:00", None])
def test_timestamp_raw_text_is_arrows_text(unit, tz):
    """ts_raw of a timestamp column is Arrow's own text of it, whatever the unit and zone (UTC takes a
    faster road to the same text)."""
    scale = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    values = [0, None, 1_700_000_000 * scale + scale // 8, -scale // 4]  # fractions of a second where the unit has them
    column = pa.array(values, pa.timestamp(unit, tz=tz))
    batch = normalise_batch(pa.table({"event_id": ["a", "b", "c", "d"], "ts": column}), [])
    assert batch.column(TS_RAW).equals(pa.chunked_array([pc.cast(column, pa.string())]))


def test_raw_text_of_a_contract_timestamp_is_written_only_for_rows_that_need_it():
    """A ts column already in the contract's type keeps its text off the valid rows (the usual batch writes
    none); a quarantined row, and a duplicate found after reading (`fill_ts_text`), gets Arrow's text."""
    column = pa.array([0, 1_700_000_000_123_456, None], pa.timestamp("us", tz="UTC"))
    ids = {"event_id": ["a", "b", "c"], "partner_id": ["p1"] * 3}
    batch = normalise_batch(pa.table({**ids, "ts": column, "event_type": ["page_view"] * 3}), [])
    assert batch.column(REASON).to_pylist() == [None, None, "missing_ts"]
    assert batch.column(TS_RAW).to_pylist() == [None, None, None]
    texts = ["1970-01-01 00:00:00.000000Z", "2023-11-14 22:13:20.123456Z", None]
    assert fill_ts_text(batch).column(TS_RAW).to_pylist() == texts
    every_row_quarantined = normalise_batch(pa.table({**ids, "ts": column}), [])  # no event_type
    assert every_row_quarantined.column(TS_RAW).to_pylist() == texts
