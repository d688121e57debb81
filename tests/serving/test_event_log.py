"""Compaction of the live event log: closed hours become one file, no event is lost or duplicated, a reader
never applies a micro-batch and the compacted file holding it, a rerun after a crash finishes the job, and the
batch reader reads the result (local folder and S3 on the moto server; no Ray)."""

from __future__ import annotations

import collections
import datetime as dt

import pyarrow as pa
import pytest

from jobs.config import StorageConfig
from jobs.contract import plan_input, read_events_local, split_invalid
from jobs.contract.schema import CONTRACT_SCHEMA
from jobs.run.layout import OnlineLayout
from jobs.serving.live import EventLog
from jobs.storage import list_files, read_bytes, write_bytes

NOW = dt.datetime(2026, 11, 30, 12, 5, tzinfo=dt.timezone.utc)
CLOSED = [NOW.replace(hour=10, minute=m, second=s) for m in (0, 7, 59) for s in (1, 30)]  # one closed hour
# this hour; the last hour, which closes 10 minutes after its end (a late group commit may still land in it)
OPEN = [NOW.replace(minute=4), NOW.replace(hour=11, minute=58), NOW.replace(hour=11, minute=59)]


def batch(n: int, rows: int = 3) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "event_id": f"e{n}-{i}",
                "ts": NOW - dt.timedelta(hours=3),
                "partner_id": "p1",
                "event_type": "product_view",
                "device_id": f"d{n}",
            }
            for i in range(rows)
        ],
        schema=CONTRACT_SCHEMA,
    )


def events_of(log: EventLog, files: list[str]) -> collections.Counter:
    return collections.Counter(
        (r["partner_id"], r["event_id"])
        for f in files
        for r in log.read(f).select(["partner_id", "event_id"]).to_pylist()
    )


@pytest.fixture(params=["local", "s3"])
def log(request, tmp_path) -> EventLog:
    if request.param == "local":
        return EventLog(OnlineLayout(str(tmp_path / "root")), StorageConfig())
    bucket, storage = request.getfixturevalue("s3_bucket"), request.getfixturevalue("storage")
    return EventLog(OnlineLayout(f"{bucket}/root"), storage)


def test_closed_hours_become_one_file_holding_every_event_once(log):
    for n, when in enumerate(CLOSED + OPEN):
        log.write(batch(n), now=when)
    everything = log.since(NOW.date())
    before = events_of(log, everything)
    assert len(everything) == len(CLOSED) + len(OPEN) and sum(before.values()) == 3 * len(everything)

    done = log.compact(now=NOW)
    assert done == {"hours": 1, "micro_batches": len(CLOSED), "rows": 3 * len(CLOSED), "finished": 0}
    hour_10 = list_files(f"{log.online.events}/2026-11-30/10", log.storage, suffixes=(".parquet",))
    assert len(hour_10) == 1 and "-compacted-" in hour_10[0]
    after = log.since(NOW.date())
    assert len(after) == 1 + len(OPEN)
    assert events_of(log, after) == before  # nothing lost, nothing twice
    assert log.compact(now=NOW)["hours"] == 0  # idempotent: nothing left to do

    # the next batch run reads the folder with its usual `events:` setting
    read = read_events_local(plan_input(log.online.events, log.storage), log.storage)
    kept, bad = split_invalid(read)
    assert bad.num_rows == 0 and kept.num_rows == sum(before.values())


def test_a_compaction_stopped_before_its_deletes_is_never_read_twice_and_is_finished_by_the_next(log):
    for n, when in enumerate(CLOSED):
        log.write(batch(n), now=when)
    micro = {path: read_bytes(path, log.storage) for path in log.since(NOW.date())}
    before = events_of(log, list(micro))
    log.compact(now=NOW)
    for path, data in list(micro.items())[:3]:  # the state of a crash after the compacted file was written
        write_bytes(path, data, log.storage)
    listed = list_files(log.online.events, log.storage, suffixes=(".parquet",))
    assert len(listed) == 4
    visible = log.since(NOW.date())
    assert len(visible) == 1 and events_of(log, visible) == before  # a replica applies each event once

    done = log.compact(now=NOW)
    assert (done["finished"], done["hours"]) == (3, 0)
    assert list_files(log.online.events, log.storage, suffixes=(".parquet",)) == visible
    assert events_of(log, visible) == before
