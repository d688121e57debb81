"""Hand-built event tables for the identity tests (contract schema, minutes after 2026-01-01)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from jobs.contract import CONTRACT_SCHEMA, normalise_batch

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def event(
    partner: str, event_id: str, minute: float, event_type: str = "page_view", truth: str | None = None, **values
) -> dict:
    row = {name: None for name in CONTRACT_SCHEMA.names}
    row.update(
        event_id=event_id,
        partner_id=partner,
        event_type=event_type,
        ts=START + dt.timedelta(minutes=minute),
        country="BG",
    )
    row.update(values)
    row["true_person_id"] = truth
    return row


def table(rows: list[dict]) -> pa.Table:
    schema = CONTRACT_SCHEMA.append(pa.field("true_person_id", pa.string()))
    return pa.Table.from_pylist(rows, schema=schema)


def canonical(rows: list[dict]) -> pa.Table:
    """What the reader hands to resolution: normalised batches."""
    return normalise_batch(table(rows), ["true_person_id"])


def background(n: int, partner: str = "p1", start: int = 0, days: int = 3) -> list[dict]:
    """n ordinary people: one device, one email, one customer record each, a few sessions."""
    rows = []
    for i in range(start, start + n):
        for d in range(days):
            base = d * 1440 + (i % 600)
            rows.append(event(partner, f"bg{i}-{d}-a", base, truth=f"bg{i}", device_id=f"dev-bg{i}"))
            rows.append(
                event(
                    partner,
                    f"bg{i}-{d}-b",
                    base + 5,
                    "login",
                    truth=f"bg{i}",
                    device_id=f"dev-bg{i}",
                    email=f"person{i}@example.org",
                    customer_id=f"c{i}",
                )
            )
    return rows
