"""Lookup keys, link ids and partner-scoped persona tokens.

A *lookup key* is what a partner may query by: `(partner, key_type, key)` for the key types of the serving
contract. It exists only for identifiers that partner supplied itself: its own customer/subscriber ids
(identity_map rows scoped to it), and the device ids, emails and phones whose `seen_at_partners` holds it.
Emails and phones are keyed by the export key recipe (`jobs.exports.keys.partner_keys`: sha256 hex of the
normalised value), so a partner computes the same key for its own contacts; raw emails and phones never
enter the online tables.

A *link id* is an identifier regardless of who asks: `(identifier_type, scope, identifier)` with the scope
partner for customer/subscriber ids and none for devices, emails and phones. Live events link through link
ids (an email first seen at p1 and now sent by p2 is the same person), and junk identifiers are link ids.

Both are 64-bit blake2b digests. A collision between two keys could answer one visitor with another's
profile, so it is never left silent: the replica that loads a release drops every key hash that points to
two different personas (the visitor gets a 404, never a stranger's profile) and logs the count.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.exports.keys import partner_keys, sha256_hex

KEY_TYPES = ("device_id", "customer_id", "subscriber_id", "email_sha256", "phone_sha256")
# identity_map / slim-event identifier types that live events link through (click tokens are weak links
# in the batch, audited when forwarded: they never link online)
LINK_TYPES = ("device", "email", "phone", "customer", "subscriber")
SCOPED_LINK_TYPES = ("customer", "subscriber")
_SEP = "\x1f"

KEY_ROWS = pa.schema([("persona_id", pa.string()), ("key_hash", pa.uint64())])
LINK_ROWS = pa.schema([("persona_id", pa.string()), ("link_hash", pa.uint64())])


def digest64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def key_hash(partner_id: str, key_type: str, key: str) -> int:
    return digest64(f"{partner_id}{_SEP}{key_type}{_SEP}{key}")


def link_hash(identifier_type: str, scope: str | None, identifier: str) -> int:
    scope = (scope or "") if identifier_type in SCOPED_LINK_TYPES else ""
    return digest64(f"{identifier_type}{_SEP}{scope}{_SEP}{identifier}")


def _hashes(values) -> pa.Array:
    return pa.array(np.fromiter((digest64(v) for v in values), dtype=np.uint64, count=len(values)), pa.uint64())


def lookup_keys(identity: pa.Table) -> pa.Table:
    """identity_map rows -> (persona_id, key_hash) for every partner-scoped lookup key they give.

    Customer/subscriber ids, emails and phones come from the export's `partner_keys` (the same isolation
    rules and key recipe as the files partners pull); device ids go to each partner that saw the device.
    """
    keyed = partner_keys(identity)
    persona = [keyed.column("persona_id")]
    text = [
        pc.binary_join_element_wise(keyed.column("partner_id"), keyed.column("key_type"), keyed.column("key"), _SEP)
    ]
    devices = identity.filter(
        pc.and_(pc.equal(identity.column("identifier_type"), "device"), pc.is_valid(identity.column("persona_id")))
    )
    if devices.num_rows:
        seen = devices.column("seen_at_partners").combine_chunks()
        parent = pc.list_parent_indices(seen)
        partners = pc.list_flatten(seen)
        present = pc.is_valid(partners)
        parent, partners = parent.filter(present), partners.filter(present)
        persona.append(devices.column("persona_id").take(parent))
        text.append(
            pc.binary_join_element_wise(
                partners, pa.scalar("device_id"), devices.column("identifier").take(parent), _SEP
            )
        )
    persona_ids = pa.chunked_array(persona, pa.string()).combine_chunks()
    texts = pa.chunked_array(text, pa.string()).combine_chunks()
    return pa.table([persona_ids, _hashes(texts.to_pylist())], schema=KEY_ROWS)


def link_ids(identity: pa.Table) -> pa.Table:
    """identity_map (or identity_audit) rows -> (persona_id, link_hash) of the identifiers that link."""
    kinds = identity.column("identifier_type")
    usable = pc.and_(pc.is_in(kinds, pa.array(LINK_TYPES)), pc.is_valid(identity.column("identifier")))
    rows = identity.filter(usable)
    scoped = pc.is_in(rows.column("identifier_type"), pa.array(SCOPED_LINK_TYPES))
    scope = pc.if_else(
        scoped, pc.fill_null(rows.column("partner_id").cast(pa.string()), ""), pa.scalar("", pa.string())
    )
    text = pc.binary_join_element_wise(rows.column("identifier_type"), scope, rows.column("identifier"), _SEP)
    persona = rows.column("persona_id") if "persona_id" in rows.column_names else pa.nulls(rows.num_rows, pa.string())
    return pa.table(
        [pa.chunked_array([persona], pa.string()).combine_chunks(), _hashes(text.to_pylist())], schema=LINK_ROWS
    )


def contact_key(value: str) -> str:
    """The export key recipe for one normalised email or phone (the same function the exports use)."""
    return sha256_hex(pa.array([value], pa.string()))[0].as_py()


def persona_token(secret: bytes, partner_id: str, persona_id: str) -> str:
    """The opaque persona id a partner sees: stable for that partner, unrelated across partners."""
    return hmac.new(secret, f"{partner_id}{_SEP}{persona_id}".encode(), hashlib.sha256).hexdigest()[:24]
