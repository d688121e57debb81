"""The keys a partner's export holds: only identifiers that the partner gave us itself.

  * `customer_id` / `subscriber_id`: identity_map rows scoped to that partner (`partner_id` = the partner);
  * `email_sha256` / `phone_sha256`: sha256 hex of the normalised email / E.164 phone, only for identity_map
    rows whose `seen_at_partners` holds the partner (the partner sent that very email or phone).

Nothing else: no persona ids, no device ids, no other partner's ids or contact details, even when the
persona is shared. A persona the partner never saw has no key for it and so never reaches its export. The
online lookup keys (`jobs.serving`) follow the same rules and recipe.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.arrays import distinct
from jobs.contract.normalise import normalise_emails, normalise_phone_value

KEY_TYPES = {
    "customer_id": "the partner's own customer id, as the partner sent it",
    "subscriber_id": "the partner's own subscriber id, as the partner sent it",
    "email_sha256": "sha256 hex of the email this partner sent, normalised by key_recipe.email_sha256",
    "phone_sha256": "sha256 hex of the phone this partner sent, normalised by key_recipe.phone_sha256 (E.164)",
}
# How a partner computes the same keys for its own contacts: every rule `jobs.contract.normalise` applies, in
# order. A change to the normaliser is a new version here (partners match keys across runs by it).
KEY_RECIPE = {
    "version": "v2",
    "email_sha256": [
        "Unicode NFKC normalisation (full-width and compatibility characters become their plain forms)",
        "remove every whitespace character (Unicode whitespace)",
        "lowercase (Unicode)",
        "validate with the Python library email-validator (>= 2.1): validate_email(text, "
        "check_deliverability=False, test_environment=True), its other options at their defaults "
        "(internationalised addresses allowed; quoted local parts, IP-address domains and special-use domains "
        "other than .test refused); if it refuses, there is no key; otherwise LOCAL is its local_part and "
        "DOMAIN its domain (IDN domains in Unicode form, so xn--mller-kva.de and müller.de are the same)",
        "LOCAL must hold at least one letter or digit (Unicode); otherwise there is no key",
        "drop everything from the first '+' in LOCAL",
        "DOMAIN googlemail.com becomes gmail.com",
        "for gmail.com remove every '.' in LOCAL",
        "LOCAL must not be empty; otherwise there is no key",
        "key = sha256 hex (lowercase) of the UTF-8 bytes of LOCAL@DOMAIN",
    ],
    "phone_sha256": [
        "trim surrounding whitespace; a number with no digit has no key",
        "a leading '00' becomes '+'",
        "without a leading '+' and without a country, a number of more than 10 digits is read as '+' + digits",
        "parse with Google's libphonenumber, the event's country (ISO 3166-1 alpha-2) as the default region",
        "it must be a possible number (libphonenumber is_possible_number); otherwise there is no key",
        "format as E.164, e.g. +359888123456",
        "key = sha256 hex (lowercase) of the UTF-8 bytes of the E.164 string",
    ],
    "customer_id": ["the id exactly as the partner sent it (no hashing)"],
    "subscriber_id": ["the id exactly as the partner sent it (no hashing)"],
}


def contact_keys(email: str | None = None, phone: str | None = None, country: str | None = None) -> dict[str, str]:
    """The export keys a partner computes for one contact of its own (`segments exports keys`)."""
    keys: dict[str, str] = {}
    if email is not None:
        normalised, valid = normalise_emails(pa.array([email], pa.string()))
        if valid[0].as_py():
            keys["email_sha256"] = hashlib.sha256(normalised[0].as_py().encode("utf-8")).hexdigest()
    if phone is not None:
        e164, valid = normalise_phone_value(phone, country)
        if valid:
            keys["phone_sha256"] = hashlib.sha256(e164.encode("utf-8")).hexdigest()
    return keys


KEYS_SCHEMA = pa.schema(
    [("persona_id", pa.string()), ("partner_id", pa.string()), ("key_type", pa.string()), ("key", pa.string())]
)
# the identity_map columns the keys are made of
IDENTITY_COLUMNS = ["identifier_type", "identifier", "partner_id", "persona_id", "seen_at_partners"]

_SCOPED_TYPES = {"customer": "customer_id", "subscriber": "subscriber_id"}
_CONTACT_TYPES = {"email": "email_sha256", "phone": "phone_sha256"}


def sha256_hex(values: pa.Array) -> pa.Array:
    """sha256 hex digest of every string (UTF-8)."""
    return pa.array([hashlib.sha256(v.encode("utf-8")).hexdigest() for v in values.to_pylist()], pa.string())


def partner_keys(batch: pa.Table) -> pa.Table:
    """identity_map rows -> (persona_id, partner_id, key_type, key): the keys each partner gave us itself.

    A customer / subscriber id goes to its own (scoping) partner only, and not at all when the partners
    that carried it do not include that partner (inconsistent rows are dropped, never re-routed). An email /
    phone goes, hashed, to each partner in its seen_at_partners and to no other.
    """
    n = batch.num_rows
    if n == 0:
        return KEYS_SCHEMA.empty_table()
    id_type = batch.column("identifier_type").to_numpy(zero_copy_only=False)
    scope = batch.column("partner_id").to_numpy(zero_copy_only=False)
    seen = batch.column("seen_at_partners")
    if isinstance(seen, pa.ChunkedArray):
        seen = seen.combine_chunks()
    flat = pc.list_flatten(seen).to_numpy(zero_copy_only=False)
    parent = pc.list_parent_indices(seen).to_numpy().astype(np.int64)
    seen_count = np.bincount(parent, minlength=n) if len(parent) else np.zeros(n, dtype=np.int64)
    has_identity = pc.and_(pc.is_valid(batch.column("persona_id")), pc.is_valid(batch.column("identifier")))
    has_identity = has_identity.to_numpy(zero_copy_only=False)
    out = []

    # customer / subscriber: keyed for the scoping partner only.
    scope_listed = np.zeros(n, dtype=bool)
    if len(parent):
        scope_listed[parent[(flat == scope[parent]) & (flat != None)]] = True  # noqa: E711 (object arrays)
    for source, key_type in _SCOPED_TYPES.items():
        take = (id_type == source) & (scope != None) & has_identity & (scope_listed | (seen_count == 0))  # noqa: E711
        rows = pa.array(np.flatnonzero(take))
        if len(rows) == 0:
            continue
        out.append(
            pa.table(
                {
                    "persona_id": batch.column("persona_id").take(rows),
                    "partner_id": batch.column("partner_id").take(rows),
                    "key_type": pa.repeat(key_type, len(rows)),
                    "key": batch.column("identifier").take(rows),
                },
                schema=KEYS_SCHEMA,
            )
        )

    # email / phone: hashed, one row per partner that sent it.
    for source, key_type in _CONTACT_TYPES.items():
        if not len(parent):
            break
        pick = np.flatnonzero((id_type[parent] == source) & has_identity[parent] & (flat != None))  # noqa: E711
        if len(pick) == 0:
            continue
        parents = parent[pick]
        rows = distinct(parents)
        digest = np.full(n, None, dtype=object)
        digest[rows] = sha256_hex(batch.column("identifier").take(pa.array(rows))).to_numpy(zero_copy_only=False)
        out.append(
            pa.table(
                {
                    "persona_id": batch.column("persona_id").take(pa.array(parents)),
                    "partner_id": pa.array(flat[pick], pa.string()),
                    "key_type": pa.repeat(key_type, len(parents)),
                    "key": pa.array(digest[parents], pa.string()),
                },
                schema=KEYS_SCHEMA,
            )
        )
    return pa.concat_tables(out) if out else KEYS_SCHEMA.empty_table()
