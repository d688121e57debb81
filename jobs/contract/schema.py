"""The input contract's columns, types and vocabularies: the one source every module reads them from.

See /shared/contract/events.md. Columns not listed here are carried through untouched as strings.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from jobs.arrays import whole

TS_TYPE = pa.timestamp("us", tz="UTC")

CONTRACT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("ts", TS_TYPE),
        ("partner_id", pa.string()),
        ("event_type", pa.string()),
        ("session_id", pa.string()),
        ("device_id", pa.string()),
        ("email", pa.string()),
        ("phone", pa.string()),
        ("customer_id", pa.string()),
        ("subscriber_id", pa.string()),
        ("click_token", pa.string()),
        ("product_id", pa.string()),
        ("category", pa.string()),
        ("brand", pa.string()),
        ("price", pa.float64()),
        ("quantity", pa.int64()),
        ("order_id", pa.string()),
        ("currency", pa.string()),
        ("country", pa.string()),
        ("city", pa.string()),
        ("payment_method", pa.string()),
        ("device_type", pa.string()),
        ("traffic_source", pa.string()),
    ]
)
CONTRACT_COLUMNS = CONTRACT_SCHEMA.names
REQUIRED = ("event_id", "ts", "partner_id", "event_type")
EVENT_TYPES = (
    "page_view",
    "product_view",
    "add_to_cart",
    "purchase",
    "login",
    "subscribe",
    "message_sent",
    "message_click",
)
SUFFIXES = (".parquet", ".jsonl", ".json", ".jsonl.gz", ".json.gz")
DEVICE_TYPES = ("desktop", "mobile", "tablet")
PAYMENT_METHODS = ("card", "cash_on_delivery", "bank_transfer", "installments", "wallet")
TRAFFIC_SOURCES = ("direct", "search", "social", "ads", "email", "sms", "viber", "referral")

# Columns the reader adds to every canonical batch (`jobs.contract.reading.normalise_batch`): the file a row
# came from, why it breaks the contract (null for a valid row), its timestamp as written (for a Parquet
# timestamp already in the contract's type, only on rows with a reason: `reading.parse_ts`), its line in a
# JSON Lines file (null for Parquet) and, for a row with a reason, its raw text (the line with bytes that are
# not UTF-8 escaped as \xNN, or the row rendered as JSON). They travel with the rows to the quarantine and are
# dropped before events_resolved is written.
SOURCE = "_source_file"
REASON = "_reason"
TS_RAW = "_ts_raw"
LINE = "_line"
RAW = "_raw"
INTERNAL_COLUMNS = (SOURCE, REASON, TS_RAW, LINE, RAW)
_INTERNAL_TYPES = {LINE: pa.int64()}

# A JSON Lines line longer than this is not parsed: it is quarantined as `line_too_long` (its first
# RAW_KEEP_BYTES kept as raw text). It is also the block size of pyarrow's JSON reader.
MAX_LINE_BYTES = 1 << 20
RAW_KEEP_BYTES = 64 << 10


def canonical_schema(extra_columns: list[str]) -> pa.Schema:
    """The schema of every normalised batch: contract columns typed, extra columns as strings, internals."""
    extra = [pa.field(c, pa.string()) for c in extra_columns]
    internal = [pa.field(c, _INTERNAL_TYPES.get(c, pa.string())) for c in INTERNAL_COLUMNS]
    return pa.schema(list(CONTRACT_SCHEMA) + extra + internal)


# ------------------------------------------------------------------------------------------ type coercion
# How a value as written becomes the contract column's type: declared once, for JSON Lines and Parquet alike
# (a Parquet file whose `price` is int64 or a string column reads the same as one whose `price` is double).
# A value present but not readable as its column's type makes the row `bad_type:COLUMN`; a missing value
# (null, absent key, "" for a number) is null and never a reason by itself.
COERCION = {
    "string": "text as written; a number or true/false becomes its JSON text (customer_id 123 -> '123'); "
    "an object or a list is bad_type",
    "double": "a number, or text that reads as a decimal number ('12.50' -> 12.5, ' 3e2 ' -> 300.0); "
    "true/false, other text, objects and lists are bad_type",
    "int64": "a whole number, written as an integer, a float with no fraction (2.0) or text ('2'); 1.5, '1.5', "
    "true/false, numbers past int64, other text, objects and lists are bad_type",
    "timestamp": "an ISO-8601 string (naive means UTC) or a timestamp/date column; anything else is "
    "unparseable_ts, and a time outside the plausible range (input.plausible_ts_from .. run date + 1 day) "
    "is implausible_ts",
}
# Characters no contract string may hold (C0 controls and DEL): `control_characters`.
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f]"

_DECIMAL = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_INT64_LIMIT = 2.0**63


def coerce(column: pa.ChunkedArray | pa.Array, type_: pa.DataType) -> tuple[pa.Array, pa.Array]:
    """(values of the contract type, bad) by `COERCION`: `bad` is True where a value is present but unreadable."""
    column = whole(column)
    n = len(column)
    if column.type == type_ and not pa.types.is_floating(type_):
        return column, _none_bad(n)
    if pa.types.is_null(column.type):
        return pa.nulls(n, type_), _none_bad(n)
    if pa.types.is_nested(column.type):
        return pa.nulls(n, type_), pc.is_valid(column)
    if pa.types.is_string(type_):
        return _to_string(column), _none_bad(n)
    if pa.types.is_boolean(column.type) or not (
        pa.types.is_integer(column.type)
        or pa.types.is_floating(column.type)
        or pa.types.is_decimal(column.type)
        or pa.types.is_string(column.type)
        or pa.types.is_large_string(column.type)
    ):
        return pa.nulls(n, type_), pc.is_valid(column)
    if pa.types.is_integer(column.type):
        numbers = column
    elif pa.types.is_floating(column.type) or pa.types.is_decimal(column.type):
        numbers = pc.cast(column, pa.float64())
    else:
        text = pc.cast(column, pa.string())
        readable = pc.match_substring_regex(text, _DECIMAL)
        text = pc.utf8_trim_whitespace(pc.if_else(readable, text, pa.scalar(None, pa.string())))
        numbers = pc.cast(text, pa.float64())
    if pa.types.is_floating(numbers.type):  # inf and nan (1e400, NaN) are no prices
        numbers = pc.if_else(pc.is_finite(numbers), numbers, pa.scalar(None, numbers.type))
    if pa.types.is_integer(type_) and not pa.types.is_integer(numbers.type):
        integral = pc.and_(pc.equal(pc.round(numbers), numbers), pc.less(pc.abs(numbers), _INT64_LIMIT))
        numbers = pc.if_else(integral, numbers, pa.scalar(None, pa.float64()))
    values = pc.cast(numbers, type_)
    present = pc.and_(pc.is_valid(column), pc.invert(_blank(column)))
    return values, pc.and_(present, pc.is_null(values))


def _to_string(column: pa.Array) -> pa.Array:
    if pa.types.is_boolean(column.type):
        return pc.if_else(column, pa.scalar("true"), pa.scalar("false"))
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return pa.array([None if v is None else v.decode("utf-8", "backslashreplace") for v in column.to_pylist()])
    return pc.cast(column, pa.string())


def _blank(column: pa.Array) -> pa.Array:
    """True where a text value is empty or whitespace (a missing number, not a bad one)."""
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return pc.fill_null(pc.equal(pc.utf8_trim_whitespace(column), ""), False)
    return _none_bad(len(column))


def _none_bad(n: int) -> pa.Array:
    return pa.repeat(pa.scalar(False), n)
