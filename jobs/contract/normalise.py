"""Normalising emails and phones, vectorised over Arrow columns.

Emails: Unicode NFKC, whitespace dropped, lowercase; whether it is an address at all is decided by
`email-validator` (RFC 5321/6531 syntax, internationalised local parts, IDN domains, no special-use domains
but `.test`, which test fixtures use; no DNS) and the local part must hold a letter or digit; then a `+tag`
is dropped, `googlemail.com` -> `gmail.com`, gmail dots removed. The domain is the library's (IDNA) form in
Unicode, so `xn--mller-kva.de` and `müller.de` are one domain. The export key recipe
(`jobs.exports.keys.KEY_RECIPE`) states these rules for partners.

Phones: `phonenumbers` E.164 with the event's country as the default region (`00CC` and `+CC` prefixes are
international).

Only the distinct values of a batch go through Python (dictionary encoding), and results are cached per
process, so the cost grows with distinct emails and phones, not with events; the ways of writing one number
with ASCII digits and separators share one parse (the library reads only their digits).

A value that cannot be an identifier (no `@`, too few digits, not a possible number) is kept as a
*flagged* value: it never links anyone, and the audit table lists it with the rule `invalid_email` /
`invalid_phone`. Blocklisted values are flagged `blocklist` the same way.
"""

from __future__ import annotations

import importlib
import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from email_validator import EmailNotValidError, validate_email

from jobs.arrays import whole

_NON_DIGITS = re.compile(r"\D+")

# email-validator checks the domain of every address it is given (IDNA, special-use names): about half its
# time. A log holds few distinct domains, and that check is a pure function of the domain, so it runs once
# per domain; the results (and the errors, which are not cached) are the library's own.
_validator = importlib.import_module("email_validator.validate_email")
_validator.validate_email_domain_name = lru_cache(maxsize=100_000)(_validator.validate_email_domain_name)


def normalise_email_value(raw: str | None) -> str | None:
    """One email the way `normalise_emails` does it (for tests and blocklists)."""
    return None if raw is None else email_value(raw)[0]


@lru_cache(maxsize=1_000_000)
def email_value(raw: str) -> tuple[str | None, bool]:
    """(LOCAL@DOMAIN, True) for an address; (the text cleaned, False) for something that is not one."""
    text = "".join(unicodedata.normalize("NFKC", raw).split()).lower()
    if not text:
        return None, False
    try:
        address = validate_email(text, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return text, False
    local, domain = address.local_part, address.domain
    if not any(ch.isalnum() for ch in local):  # 😀😀@x.com is well-formed, but nobody's address
        return text, False
    local = local.split("+", 1)[0]
    domain = "gmail.com" if domain == "googlemail.com" else domain
    local = local.replace(".", "") if domain == "gmail.com" else local
    return (f"{local}@{domain}", True) if local else (text, False)


def normalise_emails(column: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """(normalised, valid) for a string column; nulls and blank strings stay null, valid is False there.

    Only the distinct values are normalised (dictionary encoding), whatever their repeats: plain ASCII
    addresses by Arrow kernels (`_normalise_plain`), the rest through `email_value` one by one.
    """
    col = whole(pc.cast(column, pa.string()))
    encoded = pc.dictionary_encode(col)
    distinct = encoded.dictionary
    cleaned = pc.replace_substring_regex(pc.ascii_lower(distinct), _ASCII_WHITESPACE, "")
    plain = pc.match_substring_regex(cleaned, _PLAIN_ADDRESS)
    values, valid = _normalise_plain(cleaned, plain)
    rest = np.flatnonzero(~plain.to_numpy(zero_copy_only=False))
    if len(rest):
        results = [email_value(v) for v in distinct.take(pa.array(rest)).to_pylist()]
        values = _scatter(values, rest, pa.array([r[0] for r in results], pa.string()))
        valid = _scatter(valid, rest, pa.array([r[1] for r in results], pa.bool_()))
    return values.take(encoded.indices), pc.fill_null(valid.take(encoded.indices), False)


# A plain address: ASCII, once its ASCII whitespace (what str.split() drops from an ASCII string) is gone,
# one @, a dot-atom local part of common characters. For it `email_value` reduces to the library's domain
# check (once per distinct domain, `_domain_verdict`), its length limit and the project's rules, all of which
# `_normalise_plain` applies with Arrow kernels: NFKC leaves ASCII as it is, and str.lower() lowers only A-Z.
_ASCII_WHITESPACE = r"[\t\n\v\f\r\x1c-\x1f ]+"
_PLAIN_ADDRESS = r"^[a-z0-9_+-]+(\.[a-z0-9_+-]+)*@[a-z0-9.-]+$"
_MAX_ADDRESS_BYTES = 254  # email-validator's EMAIL_MAX_LENGTH (RFC 3696 errata 1690), in UTF-8 bytes


@lru_cache(maxsize=100_000)
def _domain_verdict(domain: str) -> tuple[str, int] | None:
    """The library's verdict on a domain after the @-sign: None if it rejects it, else (the normalised
    domain, the longest of its three forms in UTF-8 bytes: as typed, normalised, IDNA ASCII), from which
    the address's length limit follows."""
    try:
        address = validate_email("a@" + domain, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return None
    forms = (domain, address.domain, address.ascii_domain)
    return address.domain, max(len(f.encode()) for f in forms)


def _normalise_plain(cleaned: pa.Array, plain: pa.Array) -> tuple[pa.Array, pa.Array]:
    """`email_value` of the distinct values (lowercased, ASCII whitespace dropped) where `plain` holds."""
    parts = pc.extract_regex(pc.if_else(plain, cleaned, pa.scalar(None, pa.string())), r"^(?P<l>[^@]*)@(?P<d>.*)$")
    local, domain = pc.struct_field(parts, "l"), pc.struct_field(parts, "d")
    domains = pc.dictionary_encode(domain)
    verdicts = [_domain_verdict(d) for d in domains.dictionary.to_pylist()]
    domain_ok = pa.array([v is not None for v in verdicts], pa.bool_()).take(domains.indices)
    normalised = pa.array([v[0] if v else None for v in verdicts], pa.string()).take(domains.indices)
    longest = pa.array([v[1] if v else 0 for v in verdicts], pa.int64()).take(domains.indices)
    short_enough = pc.less_equal(pc.add(pc.add(pc.utf8_length(local), 1), longest), _MAX_ADDRESS_BYTES)
    normalised = pc.if_else(pc.equal(normalised, "googlemail.com"), "gmail.com", normalised)
    untagged = pc.replace_substring_regex(local, r"\+.*", "")
    gmail = pc.fill_null(pc.equal(normalised, "gmail.com"), False)
    untagged = pc.if_else(gmail, pc.replace_substring(untagged, ".", ""), untagged)
    valid = pc.fill_null(
        pc.and_(
            pc.and_(domain_ok, short_enough),
            pc.and_(pc.match_substring_regex(local, "[a-z0-9]"), pc.greater(pc.utf8_length(untagged), 0)),
        ),
        False,
    )
    address = pc.binary_join_element_wise(untagged, normalised, "@")
    return pc.if_else(valid, address, cleaned), valid


def _scatter(values: pa.Array, positions: np.ndarray, new: pa.Array) -> pa.Array:
    """`values` with `new` at `positions` (sorted, distinct)."""
    index = np.full(len(values), -1, np.int64)
    index[positions] = np.arange(len(positions))
    pick_new = pa.array(index >= 0)
    return pc.if_else(pick_new, new.take(pa.array(np.maximum(index, 0))), values)


def phone_digits(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Digits of a phone as typed (blocklist comparisons)."""
    col = pc.cast(column, pa.string())
    return pc.replace_substring_regex(col, r"\D+", "")


@lru_cache(maxsize=1_000_000)
def normalise_phone_value(raw: str | None, country: str | None) -> tuple[str | None, bool]:
    """(E.164, True) for a possible number; (digits, False) for something that is not a phone."""
    if raw is None:
        return None, False
    text = raw.strip()
    digits = _NON_DIGITS.sub("", text)
    if not digits:
        return (None, False)
    if text.startswith("00"):
        text = "+" + text[2:]
    elif text.startswith("+"):
        pass
    elif not country and len(digits) > 10:
        text = "+" + digits
    region = (country or "").upper() or None
    if len(text) <= _LONGEST_PARSED and _PLAIN_PHONE.fullmatch(text) and len(_NON_DIGITS.sub("", text)) >= 3:
        # the library reads only the digits of such a text: one parse serves every way of writing a number
        # in one region ("0888 123 456" and "(0888) 123-456", "+359 88..." and "+35988...")
        e164 = _e164(("+" if text.startswith("+") else "") + _NON_DIGITS.sub("", text), region)
    else:
        e164 = _e164(text, region)
    return (e164, True) if e164 else (digits, False)


# ASCII digits and the separators people type between them, after an optional +: no extension, letter,
# second number or Unicode digit can hide in such a text (those go to the library as typed)
_PLAIN_PHONE = re.compile(r"\+?[0-9 ().-]*")
_LONGEST_PARSED = 250  # phonenumbers refuses longer input (its _MAX_INPUT_STRING_LENGTH)


@lru_cache(maxsize=1_000_000)
def _e164(text: str, region: str | None) -> str | None:
    """The E.164 form of a possible number, or None."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_phones(
    column: pa.Array | pa.ChunkedArray, country: pa.Array | pa.ChunkedArray
) -> tuple[pa.Array, pa.Array]:
    """(normalised, valid): E.164 where possible, else the digits typed (flagged invalid); nulls stay null."""
    phones = whole(pc.cast(column, pa.string()))
    countries = whole(pc.cast(country, pa.string()))
    n = len(phones)
    present = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(phones)), 0), False)
    idx = np.flatnonzero(present.to_numpy(zero_copy_only=False))
    out = np.full(n, None, dtype=object)
    ok = np.zeros(n, dtype=bool)
    if len(idx):
        pairs = pa.table({"p": phones.take(pa.array(idx)), "c": countries.take(pa.array(idx))})
        keyed = pc.binary_join_element_wise(pairs["p"], pc.fill_null(pairs["c"], ""), "\x1f")
        uniq, inverse = np.unique(keyed.to_numpy(zero_copy_only=False).astype(object), return_inverse=True)
        results = [normalise_phone_value(*_split_key(k)) for k in uniq]
        values = np.array([r[0] for r in results], dtype=object)
        valids = np.array([r[1] for r in results], dtype=bool)
        out[idx] = values[inverse]
        ok[idx] = valids[inverse]
    return pa.array(out, pa.string()), pa.array(ok)


def _split_key(key: str) -> tuple[str, str | None]:
    phone, _, country = key.rpartition("\x1f")
    return phone, (country or None)


def normalised_email_blocklist(values: Iterable[str]) -> list[str]:
    """The configured email blocklist in normalised form."""
    arr, _ = normalise_emails(pa.array(list(values), pa.string()))
    return sorted({v for v in arr.to_pylist() if v})


def phone_blocklist_digits(values: Iterable[str]) -> list[str]:
    """The configured phone blocklist as digits (compared with the digits typed, `phone_digits`)."""
    return sorted({_NON_DIGITS.sub("", v) for v in values if _NON_DIGITS.sub("", v)})
