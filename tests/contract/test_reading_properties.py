"""Property: whatever lines a file holds, reading it never crashes and accounts for every non-blank line.

Hypothesis mixes good rows with malformed ones (a field's type swapped, nested values, control characters,
truncation, bytes that are not UTF-8, huge values, odd timestamps, unknown keys, duplicate ids, not an
object at all). The reader and normaliser run on small blocks, so one file crosses several blocks and both
the fast path and the line-by-line path are exercised.
"""

from __future__ import annotations

import datetime as dt
import io
import json

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.contract import LINE, RAW, REASON, conform, normalise_batch, read_json_lines
from jobs.contract.reading import extra_columns_of

TS_RANGE = (dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc))
FIELDS = ["event_id", "ts", "partner_id", "event_type", "email", "phone", "price", "quantity", "category"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["12.50", "2", "1.5", "", " ", "\x00", "a\x1bb", "9999-01-01", "1970-01-01T00:00:00Z"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def good_rows(draw) -> dict:
    return {
        "event_id": f"e{draw(st.integers(0, 30))}",  # small range: duplicate ids happen
        "ts": draw(st.sampled_from(["2026-03-01T10:00:00Z", "2026-03-01 12:00:00+02:00", "2026-03-02"])),
        "partner_id": draw(st.sampled_from(["p1", "p2"])),
        "event_type": draw(st.sampled_from(["login", "purchase", "page_view"])),
        "price": draw(st.floats(0, 1000, allow_nan=False)),
        "quantity": draw(st.integers(1, 5)),
        "email": draw(st.sampled_from(["a@b.com", "Ann+x@GMAIL.com", "not an email"])),
    }


@st.composite
def lines(draw) -> bytes:
    row = draw(good_rows())
    kind = draw(st.sampled_from(["good", "swap", "unknown_key", "truncate", "bytes", "huge", "not_object", "blank"]))
    if kind == "swap":
        row[draw(st.sampled_from(FIELDS))] = draw(values)
    elif kind == "unknown_key":
        row[draw(st.text(min_size=1, max_size=8))] = draw(values)
    elif kind == "huge":
        row[draw(st.sampled_from(FIELDS))] = "x" * draw(st.integers(1000, 5000))
    text = json.dumps(row, ensure_ascii=draw(st.booleans())).encode("utf-8")
    if kind == "truncate":
        text = text[: draw(st.integers(0, len(text) - 1))]
    elif kind == "bytes":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.binary(min_size=1, max_size=4)) + text[at:]
    elif kind == "not_object":
        text = json.dumps(draw(values)).encode("utf-8")
    elif kind == "blank":
        text = draw(st.sampled_from([b"", b"   ", b"\r"]))
    return text.replace(b"\n", b" ")  # one line stays one line


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(lines(), min_size=1, max_size=40), st.sampled_from([64, 512, 4096]))
def test_every_line_is_a_row_and_nothing_crashes(file_lines, chunk_bytes):
    data = b"\n".join(file_lines) + b"\n"
    tables = [
        normalise_batch(raw, extra_columns_of(raw.column_names), ts_range=TS_RANGE, source_file="f.jsonl")
        for raw in read_json_lines(io.BytesIO(data), chunk_bytes=chunk_bytes)
    ]
    non_blank = [i + 1 for i, line in enumerate(file_lines) if line.strip()]
    if not tables:
        assert not non_blank
        return
    extra = sorted({c for t in tables for c in extra_columns_of(t.column_names)})
    table = pa.concat_tables([conform(t, extra) for t in tables])
    kept = pc.sum(pc.is_null(table.column(REASON))).as_py() or 0
    quarantined = pc.sum(pc.is_valid(table.column(REASON))).as_py() or 0
    assert table.num_rows == len(non_blank) == kept + quarantined
    assert table.column(LINE).to_pylist() == non_blank  # every row knows its line
    bad = table.filter(pc.is_valid(table.column(REASON)))
    assert bad.column(RAW).null_count == 0  # and every quarantined row keeps its raw text
