"""Hand-built events for the feature tests: three personas whose every feature value is worked out by hand.

The cut-off is 2026-07-01 (a Wednesday); `ev(persona, id, d, "HH:MM", ...)` is an event on the date d days
before it at that UTC time, so its age at the cut-off is d - HH:MM/24h days.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from features.inputs import INPUT_SCHEMA
from jobs.config import StorageConfig
from jobs.storage import writing

AS_OF = dt.date(2026, 7, 1)
CUTOFF = dt.datetime(2026, 7, 1, tzinfo=dt.timezone.utc)
# the feature categories a run plan chooses for these events as of AS_OF (every top-level category seen)
CATEGORIES = ("books", "electronics", "fashion", "home")

# events_resolved rows carry every input column; true_person_id is here to prove it is never read.
SCHEMA = pa.schema(
    [*INPUT_SCHEMA, ("session_id", pa.string()), ("currency", pa.string()), ("true_person_id", pa.string())]
)


def ev(persona, event_id, d, hhmm, partner, event_type, **fields) -> dict:
    hours, minutes = (int(x) for x in hhmm.split(":"))
    ts = CUTOFF - dt.timedelta(days=d) + dt.timedelta(hours=hours, minutes=minutes)
    row = {name: None for name in SCHEMA.names}
    row.update(
        persona_id=persona,
        event_id=event_id,
        ts=ts,
        partner_id=partner,
        event_type=event_type,
        true_person_id="secret",
        currency="EUR" if fields.get("price") is not None else None,
    )
    row.update(fields)
    return row


A_DESKTOP = dict(device_id="dA1", device_type="desktop")
A_MOBILE = dict(device_id="dA2", device_type="mobile")


def hand_rows() -> list[dict]:
    phones = dict(category="electronics/phones", brand="B2")
    shoes = dict(category="fashion/shoes", brand="B4")
    return [
        # --- persona A: 17 events before the cut-off, one after it ---
        ev(
            "A",
            "a01",
            400,
            "10:00",
            "P1",
            "page_view",
            session_key="s0",
            **A_DESKTOP,
            traffic_source="direct",
            email="Alice@Example.com ",
            country="BG",
            city="Sofia",
        ),
        ev(
            "A",
            "a02",
            200,
            "09:00",
            "P1",
            "purchase",
            session_key="s1",
            **A_DESKTOP,
            traffic_source="direct",
            product_id="X1",
            category="books/novels",
            brand="B1",
            price=20.0,
            quantity=1,
            order_id="o1",
            payment_method="card",
            country="BG",
            city="Sofia",
            customer_id="c1",
        ),
        ev(
            "A",
            "a03",
            100,
            "14:00",
            "P2",
            "product_view",
            session_key="s2",
            **A_MOBILE,
            traffic_source="search",
            product_id="E1",
            **phones,
            price=100.0,
        ),
        ev(
            "A",
            "a04",
            100,
            "15:00",
            "P3",
            "product_view",
            session_key="s3",
            **A_MOBILE,
            traffic_source="search",
            product_id="E1",
            **phones,
            price=90.0,
        ),
        ev(
            "A",
            "a05",
            98,
            "10:00",
            "P3",
            "purchase",
            session_key="s4",
            **A_MOBILE,
            traffic_source="ads",
            product_id="E1",
            **phones,
            price=90.0,
            quantity=1,
            order_id="o2",
            payment_method="installments",
            country="bg",
            city="sofia ",
        ),
        ev(
            "A",
            "a06",
            98,
            "10:00",
            "P3",
            "purchase",
            session_key="s4",
            **A_MOBILE,
            traffic_source="ads",
            product_id="H1",
            category="home/kitchen",
            brand="B3",
            price=30.0,
            quantity=2,
            order_id="o2",
            payment_method="installments",
            country="BG",
            city="Sofia",
        ),
        ev(
            "A",
            "a07",
            60,
            "20:00",
            "P1",
            "add_to_cart",
            session_key="s5",
            **A_DESKTOP,
            traffic_source="direct",
            product_id="E2",
            category="electronics/laptops",
            brand="B2",
            price=500.0,
            quantity=1,
        ),
        ev(
            "A",
            "a08",
            60,
            "21:00",
            "P1",
            "purchase",
            session_key="s5",
            **A_DESKTOP,
            traffic_source="direct",
            product_id="E2",
            category="electronics/laptops",
            brand="B2",
            price=500.0,
            quantity=1,
            order_id="o3",
            payment_method="card",
        ),
        ev(
            "A",
            "a15",
            50,
            "12:00",
            "P2",
            "subscribe",
            session_key="s9",
            **A_MOBILE,
            traffic_source="direct",
            subscriber_id="sub9",
            phone="+359 88 123 4567",
            email="AliceW@gmail.com",
        ),
        ev(
            "A",
            "a09",
            20,
            "23:00",
            "P1",
            "product_view",
            session_key="s6",
            **A_MOBILE,
            traffic_source="email",
            product_id="F1",
            **shoes,
            price=50.0,
        ),
        ev(
            "A",
            "a10",
            20,
            "23:30",
            "P1",
            "add_to_cart",
            session_key="s6",
            **A_MOBILE,
            traffic_source="email",
            product_id="F1",
            **shoes,
            price=50.0,
            quantity=1,
        ),
        ev(
            "A",
            "a12",
            10,
            "08:00",
            "P1",
            "message_sent",
            click_token="tok2",
            subscriber_id="sub3",
            email="alice+news@example.com",
        ),
        ev(
            "A",
            "a17",
            6,
            "20:00",
            "P2",
            "product_view",
            session_key="s11",
            **A_MOBILE,
            traffic_source="search",
            product_id="F1",
            **shoes,
            price=45.0,
        ),
        ev(
            "A",
            "a11",
            5,
            "02:00",
            "P2",
            "purchase",
            session_key="s7",
            **A_MOBILE,
            traffic_source="social",
            product_id="F1",
            **shoes,
            price=45.0,
            quantity=None,
            order_id="o4",
            payment_method="crypto",
            country="RO",
            city="Bucharest",
            customer_id="c1",
        ),
        ev(
            "A",
            "a13",
            3,
            "08:00",
            "P2",
            "message_sent",
            click_token="tok1",
            subscriber_id="sub9",
            email="a.lice.w@googlemail.com",
            phone="0881 234 567",
        ),
        ev(
            "A",
            "a14",
            2,
            "12:00",
            "P2",
            "message_click",
            session_key="s10",
            **A_MOBILE,
            traffic_source="email",
            click_token="tok1",
        ),
        ev(
            "A",
            "a16",
            1,
            "18:00",
            "P1",
            "login",
            session_key="s8",
            **A_DESKTOP,
            traffic_source="direct",
            customer_id="c1",
            email="ALICE@example.com",
        ),
        ev(
            "A",
            "a99",
            -1,
            "10:00",
            "P1",
            "purchase",
            session_key="s99",
            **A_DESKTOP,
            product_id="X1",
            category="books/novels",
            price=999.0,
            quantity=1,
            order_id="o9",
            payment_method="card",
        ),
        ev("A", "a98", 0, "00:00", "P2", "product_view", product_id="Z1", category="toys/lego", price=1.0),
        # --- persona B: clicks A's campaign message tok2 (a forwarded link), buys an expensive phone ---
        ev(
            "B",
            "b01",
            9,
            "09:00",
            "P1",
            "message_click",
            session_key="sB1",
            device_id="dB1",
            device_type="mobile",
            traffic_source="email",
            click_token="tok2",
        ),
        ev(
            "B",
            "b02",
            30,
            "12:00",
            "P2",
            "product_view",
            session_key="sB2",
            device_id="dB1",
            device_type="mobile",
            traffic_source="search",
            product_id="E1",
            **phones,
            price=110.0,
        ),
        ev(
            "B",
            "b03",
            30,
            "12:05",
            "P1",
            "purchase",
            session_key="sB3",
            device_id="dB1",
            device_type="mobile",
            traffic_source="search",
            product_id="E3",
            **phones,
            price=200.0,
            quantity=1,
            order_id="ob1",
            payment_method="card",
        ),
        # --- persona C: a single anonymous page view ---
        ev("C", "c01", 15, "16:00", "P1", "page_view"),
        # --- no persona: ignored (its category and price would change categories and medians) ---
        ev(
            None,
            "n01",
            5,
            "10:00",
            "P1",
            "product_view",
            device_id="dX",
            product_id="T1",
            category="toys/lego",
            brand="B9",
            price=1000.0,
        ),
    ]


def hand_table() -> pa.Table:
    return pa.Table.from_pylist(hand_rows(), schema=SCHEMA)


def publish_events_resolved(table: pa.Table, table_path: str, storage: StorageConfig, parts: int = 3) -> None:
    """Publish `table` as a run's events_resolved (in `parts` files, so readers see several blocks)."""
    step = max(1, -(-table.num_rows // parts))
    with writing(table_path, storage) as writer:
        for i, start in enumerate(range(0, max(table.num_rows, 1), step)):
            writer.write_arrow(table.slice(start, step), name=f"part-{i:05d}")
