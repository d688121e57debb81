"""Persona table: stable ids, current email/phone, counts; ids survive a later day of events."""

import numpy as np
import pyarrow.compute as pc
from identity_events import background, canonical, event

from jobs.config import IdentityConfig
from jobs.identity.personas import persona_hex
from jobs.identity.rounds import resolve_local


def personas_by_event(out):
    r = out["events_resolved"]
    return dict(zip(r.column("event_id").to_pylist(), r.column("persona_id").to_pylist()))


def person_rows():
    rows = background(15)
    rows += [
        event(
            "p1", "x1", 10, "login", device_id="dx", email="Old.Mail@example.com", customer_id="cx", phone="0881111111"
        ),
        event("p2", "x2", 4000, "purchase", device_id="dx", email="new.mail@example.com", phone="+359 88 222 2222"),
        event("p2", "x3", 4010, "product_view", device_id="dx"),
    ]
    return rows


def test_persona_table_current_contacts_and_counts():
    out = resolve_local(canonical(person_rows()), IdentityConfig())
    by_event = personas_by_event(out)
    pid = by_event["x1"]
    assert by_event["x2"] == by_event["x3"] == pid
    persona = out["personas"].filter(pc.equal(out["personas"].column("persona_id"), pid)).to_pylist()[0]
    assert persona["current_email"] == "new.mail@example.com"
    assert persona["current_phone"] == "+359882222222"
    assert (persona["n_devices"], persona["n_emails"], persona["n_phones"], persona["n_customers"]) == (1, 2, 2, 1)
    assert persona["partners"] == ["p1", "p2"]
    imap = out["identity_map"].filter(pc.equal(out["identity_map"].column("identifier"), "dx")).to_pylist()[0]
    assert imap["persona_id"] == pid and imap["seen_at_partners"] == ["p1", "p2"] and imap["n_events"] == 3
    cust = out["identity_map"].filter(pc.equal(out["identity_map"].column("identifier"), "cx")).to_pylist()[0]
    assert cust["partner_id"] == "p1" and cust["identifier_type"] == "customer"


def test_same_input_same_ids():
    a = personas_by_event(resolve_local(canonical(person_rows()), IdentityConfig()))
    b = personas_by_event(resolve_local(canonical(list(reversed(person_rows()))), IdentityConfig()))
    assert a == b


def test_a_later_day_keeps_ids_of_personas_that_did_not_merge_or_split():
    rows = person_rows()
    before = personas_by_event(resolve_local(canonical(rows), IdentityConfig()))
    later = [
        event("p1", "n1", 9000, "login", device_id="brand-new-device", email="person3@example.org"),
        event("p2", "n2", 9010, "login", device_id="dev-new", email="someone.new@example.org"),
    ]
    after = personas_by_event(resolve_local(canonical(rows + later), IdentityConfig()))
    assert all(after[e] == p for e, p in before.items())
    assert after["n1"] == before["bg3-0-b"]  # a new device joined person 3: same persona id
    assert after["n2"] not in set(before.values())


def test_persona_id_is_the_earliest_identifiers_hash():
    assert persona_hex(np.array([1, 2**64 - 1], dtype=np.uint64)).to_pylist() == [
        "0000000000000001",
        "ffffffffffffffff",
    ]
