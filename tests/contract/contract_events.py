"""Small event tables for the contract tests (and the resolve stage's quarantine test)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.contract import REASON

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def rows(n=3, partner="p1", **overrides):
    out = []
    for i in range(n):
        r = {
            "event_id": f"e{i}",
            "ts": T0 + dt.timedelta(minutes=i),
            "partner_id": partner,
            "event_type": "page_view",
            "device_id": f"d{i}",
            "price": 9.5,
            "quantity": 1,
            "true_person_id": f"t{i}",
        }
        r.update(overrides)
        out.append(r)
    return out


def write_parquet(path, records):
    pq.write_table(pa.Table.from_pylist(records), path)


def reasons(table):
    return table.column(REASON).to_pylist()
