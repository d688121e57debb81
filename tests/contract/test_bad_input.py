"""Real-world bad input (issue 14): each case is one file of otherwise good rows with one quirk.

Every case asserts: rows in (non-blank lines) = rows kept + rows quarantined; each quarantined row names its
file and line and keeps its raw text; the reason (with the field for bad_type) is the expected one; and the
share limit's message (a UserError: exit 2, one paragraph) names the file, the line and the reason. No Ray:
`read_events_local` runs the same reader and normaliser the Ray path runs per file.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs.config import StorageConfig
from jobs.contract import (
    LINE,
    MAX_LINE_BYTES,
    RAW,
    REASON,
    SOURCE,
    check_quarantine_share,
    plan_input,
    quarantine_examples,
    read_events_local,
    read_json_lines,
    reason_counts,
    split_invalid,
)
from jobs.contract.reading import parse_block
from jobs.errors import UserError

LOCAL = StorageConfig()
TS_RANGE = (dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc))
GOOD_ROWS = 20


def good(i: int, **changes) -> dict:
    row = {
        "event_id": f"e{i}",
        "ts": "2026-03-01T10:00:00Z",
        "partner_id": "p1",
        "event_type": "purchase",
        "device_id": f"d{i}",
        "email": f"user{i}@mail.bg",
        "phone": "+359888123456",
        "category": "electronics/phones",
        "price": 12.5,
        "quantity": 1,
    }
    row.update(changes)
    return {k: v for k, v in row.items() if v is not ...}


def line(row: dict) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode("utf-8")


def file_with(bad: bytes | list[bytes], at: int = 10) -> bytes:
    """GOOD_ROWS good lines with `bad` (one or more lines) inserted after line `at`."""
    bad = [bad] if isinstance(bad, bytes) else bad
    lines = [line(good(i)) for i in range(GOOD_ROWS)]
    return b"\n".join(lines[:at] + bad + lines[at:]) + b"\n"


def read(tmp_path: Path, name: str, data: bytes) -> pa.Table:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return read_events_local(plan_input(str(tmp_path), LOCAL), LOCAL, TS_RANGE)


def rows_in(data: bytes) -> int:
    return sum(1 for chunk in data.removeprefix(b"\xef\xbb\xbf").split(b"\n") if chunk.strip())


def assert_accounted(table: pa.Table, data: bytes, path: Path, reasons: dict[str, int]) -> pa.Table:
    kept, bad = split_invalid(table)
    assert table.num_rows == rows_in(data) == kept.num_rows + bad.num_rows
    assert reason_counts(bad) == reasons
    assert bad.column(SOURCE).to_pylist() == [str(path)] * bad.num_rows
    assert bad.column(LINE).null_count == 0 and bad.column(RAW).null_count == 0
    if reasons:
        with pytest.raises(UserError) as failed:
            check_quarantine_share(table.num_rows, reasons, 0.0, str(path), "RUN/quarantine", quarantine_examples(bad))
        message = str(failed.value)
        first = min(bad.column(LINE).to_pylist())
        assert str(path) in message and f"line {first}" in message and "\n" not in message
        assert all(reason in message for reason in reasons)
    return kept


# name, the bad line(s), the reasons expected
QUARANTINED = [
    ("price_text", line(good(90, price="abc")), {"bad_type:price": 1}),
    ("price_bool", line(good(90, price=True)), {"bad_type:price": 1}),
    ("price_object", line(good(90, price={"amount": 1})), {"bad_type:price": 1}),
    (
        "price_too_big_for_double",
        b'{"event_id":"x","ts":"2026-03-01","partner_id":"p1","event_type":"login","price":1e400}',
        {"bad_type:price": 1},
    ),
    (
        "price_nan_literal",
        b'{"event_id":"x","ts":"2026-03-01","partner_id":"p1","event_type":"login","price":NaN}',
        {"bad_type:price": 1},
    ),
    ("quantity_fraction", line(good(90, quantity=1.5)), {"bad_type:quantity": 1}),
    ("quantity_fraction_text", line(good(90, quantity="1.5")), {"bad_type:quantity": 1}),
    (
        "quantity_past_int64",
        b'{"event_id":"x","ts":"2026-03-01","partner_id":"p1","event_type":"login","quantity":99999999999999999999}',
        {"bad_type:quantity": 1},
    ),
    ("email_object", line(good(90, email={"address": "a@b.com"})), {"bad_type:email": 1}),
    ("phone_object", line(good(90, phone={"n": 1})), {"bad_type:phone": 1}),
    ("category_list", line(good(90, category=["a", "b"])), {"bad_type:category": 1}),
    ("event_id_object", line(good(90, event_id={"id": 1})), {"bad_type:event_id": 1}),
    ("truncated_line", line(good(90))[:40], {"unparseable_json": 1}),
    ("invalid_utf8_byte", line(good(90, city="Sofia")).replace(b"Sofia", b"So\xfffia"), {"invalid_utf8": 1}),
    ("latin1_line", line(good(90, city="Pleven")).replace(b"Pleven", b"Pl\xe9ven"), {"invalid_utf8": 1}),
    ("lone_surrogate_escape", line(good(90, city="X")).replace(b'"X"', b'"\\ud800"'), {"invalid_utf8": 1}),
    ("json_array_line", b"[1, 2, 3]", {"unparseable_json": 1}),
    ("json_scalar_line", b'"just a string"', {"unparseable_json": 1}),
    ("two_objects_on_a_line", line(good(90)) + b" " + line(good(91)), {"unparseable_json": 1}),
    ("csv_line", b"e90,2026-03-01,p1,login", {"unparseable_json": 1}),
    ("nul_in_event_id", line(good(90, event_id="e\x0090")), {"control_characters": 1}),
    ("nul_in_email", line(good(90, email="a\x00@b.com")), {"control_characters": 1}),
    ("escape_in_device_id", line(good(90, device_id="d\x1b[31m")), {"control_characters": 1}),
    ("ts_year_9999", line(good(90, ts="9999-01-01T00:00:00Z")), {"implausible_ts": 1}),
    ("ts_year_1970", line(good(90, ts="1970-01-01T00:00:00Z")), {"implausible_ts": 1}),
    ("ts_epoch_number", line(good(90, ts=1767225600)), {"unparseable_ts": 1}),
    ("ts_words", line(good(90, ts="yesterday")), {"unparseable_ts": 1}),
    ("missing_partner", line(good(90, partner_id=...)), {"missing_partner_id": 1}),
    ("empty_object", b"{}", {"missing_event_id": 1}),
    ("unknown_event_type", line(good(90, event_type="teleport")), {"unknown_event_type": 1}),
    ("deeply_nested", b'{"event_id":"x","deep":' + b"[" * 30000 + b"]" * 30000 + b"}", {"unparseable_json": 1}),
    ("null_then_nested_array_lines", [b"null", b'[["a", null]]'], {"unparseable_json": 2}),  # crashed pyarrow
    ("list_of_nulls_for_an_id", line(good(90, event_id=[None, None])), {"bad_type:event_id": 1}),
    (
        "several_at_once",
        [line(good(90, price="abc")), b"{", line(good(91, ts="1970-01-01T00:00:00Z"))],
        {"bad_type:price": 1, "unparseable_json": 1, "implausible_ts": 1},
    ),
]


@pytest.mark.parametrize("bad, reasons", [c[1:] for c in QUARANTINED], ids=[c[0] for c in QUARANTINED])
def test_a_bad_line_costs_that_line(tmp_path, bad, reasons):
    data = file_with(bad)
    table = read(tmp_path, "events.jsonl", data)
    assert_accounted(table, data, tmp_path / "events.jsonl", reasons)
    quarantined = table.filter(pc.is_valid(table.column(REASON)))
    assert quarantined.column(LINE).to_pylist()[0] == 11  # after the 10 good lines before it


def test_numeric_strings_are_numbers(tmp_path):
    data = file_with([line(good(90, price="12.50")), line(good(91, quantity="2")), line(good(92, price=" 3e2 "))])
    kept = assert_accounted(read(tmp_path, "events.jsonl", data), data, tmp_path / "events.jsonl", {})
    by_id = {r["event_id"]: r for r in kept.to_pylist()}
    assert by_id["e90"]["price"] == 12.5 and by_id["e91"]["quantity"] == 2 and by_id["e92"]["price"] == 300.0


def test_ids_written_as_numbers_are_text(tmp_path):
    data = file_with([line(good(90, event_id=90, customer_id=12345, device_id=True, extra={}))])
    kept = assert_accounted(read(tmp_path, "events.jsonl", data), data, tmp_path / "events.jsonl", {})
    row = kept.filter(pc.equal(kept.column("event_id"), "90")).to_pylist()[0]
    assert row["customer_id"] == "12345" and row["device_id"] == "true"


def test_a_key_first_seen_late_is_carried(tmp_path):
    lines = [line(good(i)) for i in range(800)] + [line(good(800, campaign="spring", nested={"a": [1]}))]
    data = b"\n".join(lines) + b"\n"
    kept = assert_accounted(read(tmp_path, "events.jsonl", data), data, tmp_path / "events.jsonl", {})
    assert kept.column("campaign").to_pylist()[-1] == "spring" and kept.column("campaign").null_count == 800
    assert json.loads(kept.column("nested").to_pylist()[-1]) == {"a": [1]}


def test_a_first_line_over_256_kib_is_read(tmp_path):
    data = file_with(line(good(90, note="x" * 300_000)), at=0)
    kept = assert_accounted(read(tmp_path, "events.jsonl", data), data, tmp_path / "events.jsonl", {})
    assert len(kept.column("note").to_pylist()[0]) == 300_000


def test_a_line_past_the_limit_is_quarantined_whole_and_kept_short(tmp_path):
    data = file_with(line(good(90, note="y" * (MAX_LINE_BYTES + 10))))
    table = read(tmp_path, "events.jsonl", data)
    assert_accounted(table, data, tmp_path / "events.jsonl", {"line_too_long": 1})
    raw = table.filter(pc.is_valid(table.column(REASON))).column(RAW).to_pylist()[0]
    assert raw.startswith('{"event_id": "e90"') and len(raw) < 100_000 and "bytes)" in raw


def test_a_long_line_across_read_chunks_keeps_line_numbers(tmp_path):
    data = file_with([line(good(90, note="z" * (MAX_LINE_BYTES * 3))), b"{broken"], at=5)
    table = read(tmp_path, "events.jsonl", data)
    assert_accounted(table, data, tmp_path / "events.jsonl", {"line_too_long": 1, "unparseable_json": 1})
    bad = table.filter(pc.is_valid(table.column(REASON)))
    assert sorted(bad.column(LINE).to_pylist()) == [6, 7]
    assert max(table.column(LINE).to_pylist()) == GOOD_ROWS + 2


def test_blank_lines_and_crlf_are_not_rows(tmp_path):
    data = file_with([b"", b"   ", line(good(90)) + b"\r"]).replace(b"\n", b"\r\n")
    kept = assert_accounted(read(tmp_path, "events.jsonl", data), data, tmp_path / "events.jsonl", {})
    assert kept.num_rows == GOOD_ROWS + 1
    assert kept.filter(pc.equal(kept.column("event_id"), "e90")).column(LINE).to_pylist() == [13]


def test_byte_order_mark_and_no_final_newline(tmp_path):
    data = b"\xef\xbb\xbf" + file_with(b"{oops").rstrip(b"\n")
    table = read(tmp_path, "events.jsonl", data)
    assert_accounted(table, data, tmp_path / "events.jsonl", {"unparseable_json": 1})
    assert table.column("event_id").to_pylist()[0] == "e0"


def test_gzip_file_with_a_bad_line(tmp_path):
    data = file_with(b'{"event_id": "e90", "ts": "2026')
    table = read(tmp_path, "events.jsonl.gz", data)
    assert_accounted(table, data, tmp_path / "events.jsonl.gz", {"unparseable_json": 1})


def test_mixed_types_in_every_row_of_a_column(tmp_path):
    rows = [line(good(i, price=(str(i) if i % 2 else i), quantity=(f"{i}" if i % 3 else i))) for i in range(50)]
    rows.append(line(good(50, price="n/a")))
    data = b"\n".join(rows) + b"\n"
    kept = assert_accounted(
        read(tmp_path, "events.jsonl", data), data, tmp_path / "events.jsonl", {"bad_type:price": 1}
    )
    assert kept.column("price").to_pylist() == [float(i) for i in range(50)]
    assert kept.column("quantity").to_pylist() == list(range(50))


def test_only_bad_lines_and_only_good_files(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(file_with([]))
    (tmp_path / "b.jsonl").write_bytes(line(good(1)) + b"\n{\n{\n")
    table = read_events_local(plan_input(str(tmp_path), LOCAL), LOCAL, TS_RANGE)
    kept, bad = split_invalid(table)
    assert kept.num_rows == GOOD_ROWS + 1 and reason_counts(bad) == {"unparseable_json": 2}
    assert quarantine_examples(bad) == {"unparseable_json": f"{tmp_path / 'b.jsonl'} line 2"}


def test_empty_files_among_good_ones_are_skipped(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(file_with([]))
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "empty.parquet").write_bytes(b"")
    plan = plan_input(str(tmp_path), LOCAL)
    assert sorted(plan.empty_files) == [str(tmp_path / "empty.jsonl"), str(tmp_path / "empty.parquet")]
    assert read_events_local(plan, LOCAL, TS_RANGE).num_rows == GOOD_ROWS


def test_a_file_that_is_not_json_lines_at_all_is_named(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(file_with([]))
    (tmp_path / "utf16.jsonl").write_bytes(file_with([]).decode().encode("utf-16"))
    with pytest.raises(UserError, match=r"utf16\.jsonl is not JSON Lines"):
        plan_input(str(tmp_path), LOCAL)


def test_parquet_files_whose_types_drift(tmp_path):
    base = [good(i) for i in range(6)]
    pq.write_table(pa.Table.from_pylist([dict(r, price=int(r["quantity"])) for r in base]), tmp_path / "a.parquet")
    texts = [dict(r, event_id=f"t{i}", price=str(r["price"]), quantity=str(r["quantity"])) for i, r in enumerate(base)]
    texts[0]["price"] = "abc"
    pq.write_table(pa.Table.from_pylist(texts), tmp_path / "b.parquet")
    nested = [dict(r, event_id=f"n{i}", email={"x": "a@b.com"}) for i, r in enumerate(base[:2])]
    pq.write_table(pa.Table.from_pylist(nested), tmp_path / "c.parquet")
    table = read_events_local(plan_input(str(tmp_path), LOCAL), LOCAL, TS_RANGE)
    kept, bad = split_invalid(table)
    assert table.num_rows == 14 and kept.num_rows == 11
    assert reason_counts(bad) == {"bad_type:price": 1, "bad_type:email": 2}
    assert sorted(set(kept.column("price").to_pylist())) == [1.0, 12.5]
    assert json.loads(bad.filter(pc.equal(bad.column("event_id"), "t0")).column(RAW)[0].as_py())["price"] == "abc"
    assert bad.column(LINE).null_count == bad.num_rows  # Parquet rows have no line; the file is named


def test_a_line_past_the_limit_across_small_reads_is_skipped_not_held():
    data = file_with([line(good(90, note="z" * (MAX_LINE_BYTES * 2))), b"{broken"], at=5)
    tables = list(read_json_lines(io.BytesIO(data), chunk_bytes=64 << 10))
    reasons = [r for t in tables if REASON in t.column_names for r in t.column(REASON).to_pylist() if r]
    lines = [n for t in tables for n in t.column(LINE).to_pylist()]
    assert reasons == ["line_too_long", "unparseable_json"] and lines == list(range(1, GOOD_ROWS + 3))


def test_a_truncated_gzip_file_is_named(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(file_with([]))
    packed = gzip.compress(b"".join(line(good(i)) + b"\n" for i in range(5000)))
    (tmp_path / "cut.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(UserError, match=r"cut\.jsonl\.gz cannot be read to its end"):
        read_events_local(plan_input(str(tmp_path), LOCAL), LOCAL, TS_RANGE)


def test_hive_folders_of_json_files_are_columns(tmp_path):
    folder = tmp_path / "day=2026-03-01" / "partner_id=p9"
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_bytes(line(good(1, partner_id=...)) + b"\n" + line(good(2, partner_id="p1")) + b"\n")
    table = read_events_local(plan_input(str(tmp_path), LOCAL), LOCAL, TS_RANGE)
    assert table.column("day").to_pylist() == ["2026-03-01"] * 2
    assert table.column("partner_id").to_pylist() == ["p9", "p1"]  # a row's own value wins


def test_a_big_block_with_bad_lines_is_halved_around_them():
    lines = [line(good(i)) for i in range(5000)]
    lines[1234] = b"{broken"
    lines[4321] = line(good(4321, price="12.50"))  # pyarrow cannot mix text and numbers in one column
    lines[4500] = b""
    tables = parse_block(b"\n".join(lines) + b"\n", 1)
    assert 2 < len(tables) < 40  # halves read by pyarrow; only small parts line by line
    numbers = [n for t in tables for n in t.column(LINE).to_pylist()]
    assert numbers == [n for n in range(1, 5001) if n != 4501]
    reasons = {
        n: r
        for t in tables
        if REASON in t.column_names
        for n, r in zip(t[LINE].to_pylist(), t[REASON].to_pylist())
        if r
    }
    assert reasons == {1235: "unparseable_json"}
