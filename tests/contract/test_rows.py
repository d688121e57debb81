"""Row rules: duplicates, the quarantine's shape, the quarantine share limit."""

import datetime as dt

import pyarrow as pa
import pytest
from contract_events import T0, reasons, rows

from jobs.contract import (
    TS_RAW,
    canonical_schema,
    check_quarantine_share,
    dedupe,
    merge_counts,
    normalise_batch,
    quarantine_schema,
    reason_counts,
    split_invalid,
    to_quarantine,
)
from jobs.errors import UserError


def test_dedupe_keeps_the_first_deterministically():
    base = rows(3)
    dup_late = dict(base[1], ts=T0 + dt.timedelta(hours=5), device_id="late")
    dup_other_partner = dict(base[1], partner_id="p2")  # same event id at another partner: not a duplicate
    table = normalise_batch(pa.Table.from_pylist(base + [dup_late, dup_other_partner]), ["true_person_id"])
    kept, bad = dedupe(table)
    kept2, bad2 = dedupe(table.take(pa.array([4, 3, 2, 1, 0])))
    assert kept.num_rows == 4 and bad.num_rows == 1
    assert reasons(bad) == ["duplicate_event_id"] and bad.column("device_id").to_pylist() == ["late"]
    assert sorted(kept.column("device_id").to_pylist()) == sorted(kept2.column("device_id").to_pylist())
    assert bad2.column("device_id").to_pylist() == ["late"]
    assert bad.column(TS_RAW).to_pylist() == ["2026-01-01 05:00:00.000000Z"]  # its raw ts text, as read


def test_rows_with_a_reason_go_to_the_quarantine_in_its_shape():
    table = normalise_batch(
        pa.Table.from_pylist(rows(3) + rows(1, event_type="teleport", event_id="x")), ["true_person_id"]
    )
    valid, invalid = split_invalid(table)
    assert valid.num_rows == 3 and reasons(invalid) == ["unknown_event_type"]
    kept, bad = dedupe(table)
    assert kept.num_rows == 3 and reasons(bad) == ["unknown_event_type"]
    quarantine = to_quarantine(bad, ["true_person_id"])
    assert quarantine.schema == quarantine_schema(["true_person_id"])
    assert quarantine.schema.names[-5:] == ["ts_raw", "reason", "source_file", "line", "raw"]
    assert set(quarantine.schema.names) >= set(canonical_schema(["true_person_id"]).names) - {
        "_ts_raw",
        "_reason",
        "_source_file",
        "_line",
        "_raw",
    }
    assert quarantine.to_pylist()[0]["event_id"] == "x" and quarantine.column("reason").to_pylist() == [
        "unknown_event_type"
    ]
    assert reason_counts(bad) == {"unknown_event_type": 1}
    assert reason_counts(quarantine, "reason") == {"unknown_event_type": 1}
    assert merge_counts([{"b": 1, "a": 2}, {}, {"b": 3}]) == {"a": 2, "b": 4}


def test_quarantine_share_limit():
    assert check_quarantine_share(100, {"missing_ts": 1}, 0.01, "in/", "run/quarantine") == 0.01
    with pytest.raises(
        UserError,
        match=r"2 of 100 input rows \(2.00%\) broke the input contract.*missing_ts: 2.*"
        r"run/quarantine",
    ):
        check_quarantine_share(100, {"missing_ts": 2}, 0.01, "in/", "run/quarantine")
    with pytest.raises(UserError, match="input in/ holds no rows"):
        check_quarantine_share(0, {}, 0.01, "in/", "run/quarantine")


def test_quarantine_share_limit_names_the_plausible_times():
    low = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    high = dt.datetime(2026, 12, 2, 23, 59, 59, 999999, tzinfo=dt.timezone.utc)
    with pytest.raises(UserError, match=r"from 2000-01-01 to 2026-12-02 23:59:59 UTC .*--run-date") as raised:
        check_quarantine_share(10, {"implausible_ts": 5}, 0.01, "in/", "q", ts_range=(low, high))
    assert "\n" not in str(raised.value)
    with pytest.raises(UserError) as other:  # another reason: no word on times
        check_quarantine_share(10, {"missing_ts": 5}, 0.01, "in/", "q", ts_range=(low, high))
    assert "plausible" not in str(other.value)
