"""Each junk rule on hand-built events: the identifier is audited with its rule and does not glue people."""

import numpy as np
import pyarrow.compute as pc
import pytest
from identity_events import background, canonical, event

from jobs.config import IdentityConfig
from jobs.identity import junk
from jobs.identity.rounds import resolve_local


def resolve(rows, **identity):
    return resolve_local(canonical(rows), IdentityConfig(**identity))


def audit_rows(out, rule):
    audit = out["identity_audit"]
    return audit.filter(pc.equal(audit.column("rule"), rule)).to_pylist()


def persona_of(out, event_id):
    r = out["events_resolved"]
    return r.filter(pc.equal(r.column("event_id"), event_id)).column("persona_id")[0].as_py()


def test_blocklisted_email_is_audited_and_links_nobody():
    rows = background(20)
    rows += [
        event("p1", "a1", 10, "purchase", device_id="dev-a", email="Test@test.com", customer_id="ca"),
        event("p1", "b1", 20, "purchase", device_id="dev-b", email="test@test.com ", customer_id="cb"),
    ]
    out = resolve(rows)
    hits = audit_rows(out, "blocklist")
    assert [(h["identifier_type"], h["identifier"]) for h in hits] == [("email", "test@test.com")]
    assert hits[0]["figure"] == 2  # events that carried it
    assert persona_of(out, "a1") != persona_of(out, "b1")


def test_invalid_phone_is_audited():
    rows = background(5) + [event("p1", "x", 1, "purchase", device_id="dev-x", phone="12")]
    assert [h["identifier"] for h in audit_rows(resolve(rows), "invalid_phone")] == ["12"]


def test_email_typed_on_many_devices_is_fanout_junk():
    rows = background(60)
    for i in range(25):  # 25 strangers type the same non-blocklisted junk email at checkout
        rows.append(
            event("p1", f"j{i}", 100 + i, "purchase", device_id=f"dev-bg{i}", email="x@x.com", customer_id=f"c{i}")
        )
    out = resolve(rows)
    hits = audit_rows(out, "email_fanout")
    assert [h["identifier"] for h in hits] == ["x@x.com"]
    assert hits[0]["figure"] == 25 and hits[0]["threshold"] < 25
    assert persona_of(out, "j0") != persona_of(out, "j1")


def test_phone_fanout_and_config_override():
    rows = background(40)
    for i in range(6):
        rows.append(event("p1", f"ph{i}", 100 + i, "purchase", device_id=f"dev-bg{i}", phone="0888 123 456"))
    assert audit_rows(resolve(rows), "phone_fanout") == []  # 6 devices: within the learned floor
    hits = audit_rows(resolve(rows, max_people_per_email=3), "phone_fanout")
    assert [(h["identifier"], h["figure"], h["threshold"]) for h in hits] == [("+359888123456", 6, 3)]


def test_shared_device_with_many_logins_and_anonymous_session_gets_no_persona():
    rows = background(40)
    for i in range(8):  # an internet cafe computer: 8 people log in over a week, hours apart
        rows.append(
            event(
                "p1",
                f"cafe{i}",
                3000 + i * 120,
                "login",
                device_id="cafe-pc",
                email=f"person{i}@example.org",
                customer_id=f"c{i}",
            )
        )
    rows.append(event("p1", "cafe-anon", 3000 + 9 * 120, device_id="cafe-pc"))
    out = resolve(rows)
    assert [h["identifier"] for h in audit_rows(out, "shared_device")] == ["cafe-pc"]
    assert persona_of(out, "cafe-anon") is None
    assert len({persona_of(out, f"cafe{i}") for i in range(8)}) == 8
    assert persona_of(out, "cafe3") == persona_of(out, "bg3-0-b")  # the login still attributes to its person


def test_family_device_with_two_customer_records_at_one_partner():
    rows = background(30)
    rows += [
        event("p1", "fam-a", 5000, "login", device_id="tablet", customer_id="c1"),
        event("p1", "fam-b", 5100, "login", device_id="tablet", customer_id="c2"),
    ]
    out = resolve(rows)
    hits = audit_rows(out, "shared_device_customers")
    assert [(h["identifier"], h["figure"]) for h in hits] == [("tablet", 2)]
    assert persona_of(out, "fam-a") != persona_of(out, "fam-b")


def test_click_token_clicked_on_several_devices_is_forwarded():
    rows = background(30)
    rows += [
        event("p1", "send", 10, "message_sent", click_token="tok1", email="person1@example.org", subscriber_id="s1"),
        event("p1", "click-a", 20, "message_click", click_token="tok1", device_id="dev-bg1"),
        event("p1", "click-b", 25, "message_click", click_token="tok1", device_id="dev-bg2"),
    ]
    out = resolve(rows)
    assert [h["identifier"] for h in audit_rows(out, "forwarded_click")] == ["tok1"]
    assert persona_of(out, "bg1-0-a") != persona_of(out, "bg2-0-a")


def test_click_token_never_merges_two_identified_people_but_attaches_anonymous_devices():
    rows = background(30)
    rows += [  # sent to person 1, clicked only by person 2 (forwarded, recipient never clicked)
        event("p1", "send1", 10, "message_sent", click_token="fwd", email="person1@example.org"),
        event("p1", "click1", 20, "message_click", click_token="fwd", device_id="dev-bg2"),
        # sent to person 3, clicked on a phone that never logged in: that phone becomes person 3's
        event("p1", "send3", 10, "message_sent", click_token="own", email="person3@example.org"),
        event("p1", "click3", 30, "message_click", click_token="own", device_id="phone-of-3"),
        event("p1", "browse3", 32, "product_view", device_id="phone-of-3"),
    ]
    out = resolve(rows)
    hits = audit_rows(out, "forwarded_click")
    assert [(h["identifier"], h["figure"]) for h in hits] == [("fwd", 2)]
    assert persona_of(out, "bg1-0-a") != persona_of(out, "bg2-0-a")
    assert persona_of(out, "browse3") == persona_of(out, "bg3-0-b")


def test_size_cap_splits_a_giant_component():
    rows = background(30)
    for i in range(40):  # one customer record used with 40 different emails: glue under the fan-out floor
        rows.append(
            event(
                "p2",
                f"glue{i}",
                100 + i,
                "login",
                customer_id="shared-account",
                email=f"glue{i}@example.org",
                device_id=f"d-glue{i}",
            )
        )
    out = resolve(rows, max_persona_identifiers=20, min_fanout_devices=100)
    hits = audit_rows(out, "size_cap")
    assert "shared-account" in [h["identifier"] for h in hits]
    assert len({persona_of(out, f"glue{i}") for i in range(40)}) == 40


def test_learned_threshold_is_a_fence_with_a_floor_and_can_be_overridden():
    hist = np.bincount(np.r_[np.ones(700, int), np.full(200, 2), np.full(90, 3), np.full(10, 40)])
    config = IdentityConfig()
    th = junk.learn_thresholds({"email_fanout": hist}, config)
    assert th.values["email_fanout"] == max(config.min_fanout_devices, 2 + 3 * (2 - 1))
    assert th.learned["email_fanout"]["source"] == "learned"
    wide = np.bincount(np.r_[np.ones(300, int), np.full(300, 4), np.full(300, 8)])
    assert junk.learn_thresholds({"email_fanout": wide}, config).values["email_fanout"] == 8 + 3 * (8 - 1)
    fixed = junk.learn_thresholds({"email_fanout": hist}, IdentityConfig(max_people_per_email=7))
    assert fixed.values["email_fanout"] == 7 and fixed.learned["email_fanout"]["source"] == "config"


@pytest.mark.parametrize("rule", [r for r, _, _ in junk.FANOUT_RULES])
def test_every_learned_rule_has_a_threshold(rule):
    th = junk.learn_thresholds({}, IdentityConfig())
    assert th.values[rule] >= 1
