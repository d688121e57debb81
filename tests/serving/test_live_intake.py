"""Live validation is batch validation: every bad row of issue 14's table (tests/contract/test_bad_input.py),
posted as a live body, is refused with the reason the batch reader gives the same line, and the good rows
around it are accepted (pure: no Ray, no HTTP; test_app.py posts some of them over HTTP)."""

from __future__ import annotations

import collections
import datetime as dt
import importlib.util
import json
from pathlib import Path

import pytest

from jobs.config import JobConfig
from jobs.serving.live import RequestError, intake, live_ts_range

_spec = importlib.util.spec_from_file_location(
    "bad_input_table", Path(__file__).parents[1] / "contract" / "test_bad_input.py"
)
bad_input = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bad_input)  # the one table of bad lines, not a copy

NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.timezone.utc)
TS_RANGE = live_ts_range(JobConfig(), NOW)
CASES = [c[1:] for c in bad_input.QUARANTINED]
IDS = [c[0] for c in bad_input.QUARANTINED]


def lines_of(bad: bytes | list[bytes]) -> list[bytes]:
    return [bad] if isinstance(bad, bytes) else bad


def rejected_reasons(body: bytes) -> tuple[collections.Counter, int]:
    result = intake(body, "p1", set(), 1000, TS_RANGE)
    return collections.Counter(r["reason"] for r in result.rejected), result.accepted.num_rows


@pytest.mark.parametrize("bad, reasons", CASES, ids=IDS)
def test_a_bad_json_line_is_refused_with_the_batch_reason(bad, reasons):
    good = [bad_input.line(bad_input.good(i)) for i in range(2)]
    body = b"\n".join([good[0], *lines_of(bad), good[1]])
    assert rejected_reasons(body) == (collections.Counter(reasons), 2)


def _objects(bad: bytes | list[bytes]) -> list[dict] | None:
    try:
        items = [json.loads(b) for b in lines_of(bad)]
    except (ValueError, RecursionError):
        return None
    return items if all(isinstance(i, dict) for i in items) else None


ARRAY_CASES = [(c, i) for c, i in zip(CASES, IDS) if _objects(c[0]) is not None]


@pytest.mark.parametrize("bad, reasons", [c for c, _ in ARRAY_CASES], ids=[i for _, i in ARRAY_CASES])
def test_a_bad_object_in_a_json_array_is_refused_with_the_batch_reason(bad, reasons):
    body = json.dumps([bad_input.good(0), *_objects(bad), bad_input.good(1)]).encode()
    assert rejected_reasons(body) == (collections.Counter(reasons), 2)


def test_rejected_rows_are_indexed_in_body_order_and_non_objects_read_as_the_batch_reads_them():
    body = json.dumps([bad_input.good(0), "a string", [1], bad_input.good(1, price={"x": 1})]).encode()
    result = intake(body, "p1", set(), 1000, TS_RANGE)
    assert result.rejected == [
        {"index": 1, "reason": "unparseable_json"},
        {"index": 2, "reason": "unparseable_json"},
        {"index": 3, "reason": "bad_type:price"},
    ]
    assert result.accepted.column("event_id").to_pylist() == ["e0"]


def test_a_body_that_is_no_event_is_a_request_error():
    for body, code in [
        (b"  ", "empty_body"),
        (b"[]", "empty_body"),
        (b"42", "malformed_body"),
        (b"x\ny", "malformed_body"),
    ]:
        with pytest.raises(RequestError) as refused:
            intake(body, "p1", set(), 1000, TS_RANGE)
        assert (refused.value.status, refused.value.code) == (400, code)
