"""The input contract's columns, types and vocabularies: the one source every module reads them from.

See /shared/contract/events.md. Columns not listed here are carried through untouched as strings.
"""

from __future__ import annotations

import pyarrow as pa

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
# came from, why it breaks the contract (null for a valid row) and its timestamp as written. They travel
# with the rows to the quarantine and are dropped before events_resolved is written.
SOURCE = "_source_file"
REASON = "_reason"
TS_RAW = "_ts_raw"
INTERNAL_COLUMNS = (SOURCE, REASON, TS_RAW)


def canonical_schema(extra_columns: list[str]) -> pa.Schema:
    """The schema of every normalised batch: contract columns typed, extra columns as strings, internals."""
    extra = [pa.field(c, pa.string()) for c in extra_columns]
    internal = [pa.field(c, pa.string()) for c in INTERNAL_COLUMNS]
    return pa.schema(list(CONTRACT_SCHEMA) + extra + internal)
