import random
import re

import pyarrow as pa
import pytest

from jobs.contract import normalise
from jobs.contract.normalise import (
    normalise_email_value,
    normalise_emails,
    normalise_phone_value,
    normalise_phones,
    normalised_email_blocklist,
    phone_blocklist_digits,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("John.Smith@Example.com", "john.smith@example.com"),
        ("  john.smith@example.com ", "john.smith@example.com"),
        ("john.smith+shop@example.com", "john.smith@example.com"),
        ("J.o.h.n.Smith+promo@gmail.com", "johnsmith@gmail.com"),
        ("john.smith@googlemail.com", "johnsmith@gmail.com"),
        ("john smith@abv.bg", "johnsmith@abv.bg"),
    ],
)
def test_email_variants_normalise_to_one(raw, expected):
    assert normalise_email_value(raw) == expected


def test_email_invalid_and_missing():
    values, valid = normalise_emails(pa.array(["not-an-email", "", None, "a@b.co"]))
    assert values.to_pylist() == ["not-an-email", None, None, "a@b.co"]
    assert valid.to_pylist() == [False, False, False, True]


@pytest.mark.parametrize(
    "raw, country",
    [
        ("+359 88 123 4567", "BG"),
        ("00359881234567", "BG"),
        ("0881234567", "BG"),
        ("(088) 123-4567", "BG"),
        ("088-123-45-67", "BG"),
        ("+359881234567", "DE"),
        ("00359 88 123 4567", None),
    ],
)
def test_phone_formats_give_one_e164(raw, country):
    assert normalise_phone_value(raw, country) == ("+359881234567", True)


def test_phone_national_number_uses_the_event_country():
    assert normalise_phone_value("030 1234567", "DE") == ("+49301234567", True)
    assert normalise_phone_value("0712345678", "RO")[0].startswith("+40")


def test_phone_invalid_kept_as_digits_and_flagged():
    assert normalise_phone_value("12", "BG") == ("12", False)
    values, valid = normalise_phones(pa.array(["12", None, " ", "0881234567"]), pa.array(["BG", "BG", "BG", "BG"]))
    assert values.to_pylist() == ["12", None, None, "+359881234567"]
    assert valid.to_pylist() == [False, False, False, True]


def test_phone_writings_that_share_a_parse_give_what_the_library_gives_as_typed(monkeypatch):
    rnd = random.Random(12)
    numbers = ["359881234567", "0881234567", "4915714818297", "0048603003926", "16502530000", "0030694614805", "12"]
    regions = [None, "BG", "DE", "pl", "US", "GB", "XX", "CN"]
    cases = [("+ 00(725 68862690", "CN"), ("+0.08667659", "PL"), ("1-2", "US"), ("555 123 4567 x12", "US")]
    cases.append(("+1" + "2" * 300, None))
    for _ in range(1500):
        digits = rnd.choice(numbers)[rnd.randint(0, 3) :]
        text = "".join(d + (rnd.choice(" -.()") if rnd.random() < 0.3 else "") for d in digits)
        prefix, suffix = rnd.choice(["", "", "+", "00", "+ ", "+0", "(", " "]), rnd.choice(["", "", " ", "#"])
        cases.append((prefix + text + suffix, rnd.choice(regions)))
    shared = [normalise.normalise_phone_value(*c) for c in cases]
    normalise.normalise_phone_value.cache_clear()
    monkeypatch.setattr(normalise, "_PLAIN_PHONE", re.compile(r"(?!)"))  # every text to the library as typed
    try:
        assert shared == [normalise.normalise_phone_value(*c) for c in cases]
    finally:
        normalise.normalise_phone_value.cache_clear()


def test_blocklists_are_normalised():
    assert normalised_email_blocklist(["Test@Test.com ", "no.email+x@gmail.com"]) == [
        "noemail@gmail.com",
        "test@test.com",
    ]
    assert phone_blocklist_digits(["000-000-0000", "12 34"]) == ["0000000000", "1234"]


@pytest.mark.parametrize(
    "raw, expected, valid",
    [
        ("Jösé.Müller+tag@Exämple.com", "jösé.müller@exämple.com", True),  # internationalised, IDN domain
        ("x@xn--mller-kva.de", "x@müller.de", True),  # punycode and Unicode domains are one domain
        ("ａｎｎ@ｅｘａｍｐｌｅ.com", "ann@example.com", True),  # NFKC first: full-width forms
        ("ann\u00a0lee@abv.bg", "annlee@abv.bg", True),  # a no-break space is whitespace
        ("😀😀@x.com", "😀😀@x.com", False),  # well-formed, but no letter or digit: nobody's address
        ("a..b@x.com", "a..b@x.com", False),
        ("user@localhost", "user@localhost", False),
        ("user@site.invalid", "user@site.invalid", False),  # special-use domain
        ("a0@shop.test", "a0@shop.test", True),  # .test is accepted: test fixtures use it
        ('"quoted"@x.com', '"quoted"@x.com', False),
        ("+promo@gmail.com", "+promo@gmail.com", False),  # nothing left before the tag
    ],
)
def test_email_validity_is_the_library_s(raw, expected, valid):
    values, ok = normalise_emails(pa.array([raw, raw, None]))
    assert values.to_pylist() == [expected, expected, None] and ok.to_pylist() == [valid, valid, False]


def test_vectorised_emails_equal_the_library_value_by_value():
    """Plain addresses take Arrow kernels, the rest email_value: every value must come out as email_value
    (the library, one value at a time) gives it, on values built to sit at the edges of the plain path."""
    import random

    from jobs.contract.normalise import email_value

    rng = random.Random(11)
    pieces = list("abcXYZ09._+-@") + ["\x0b", "\x1c", "\x1f", "\r\n", "\x85", "\xa0", " ", "\t", "..", "@@"]
    pieces += ["é", "K", "ſ", "\u212a", "!", "#", '"', "<", ">", "\u3000", "１", "ä", "xn--mller-kva", ".com"]
    domains = ["gmail.com", "GoogleMail.com", "xn--mller-kva.de", "müller.de", "ex-ample.co", "a..b.com", "-a.com"]
    domains += ["a.com-", "123.45", "x.test", "x.local", "localhost", "b", "abv.bg", "a" * 64 + ".com"]
    domains += [("a" * 63 + ".") * 4 + "com", ("b" * 60 + ".") * 3 + "com"]
    values = []
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.6:
            local = "".join(rng.choice(pieces[:19]) for _ in range(rng.randint(1, 8)))
            text = (local if rng.random() < 0.9 else "a" * rng.randint(60, 200)) + "@" + rng.choice(domains)
        values.append(text)
    values += ["+@gmail.com", "+tag@x.com", ".a@x.com", "a.@x.com", "a..b@x.com", "_@x.com", "a.b+c@googlemail.com"]
    got, valid = normalise_emails(pa.array([*values, None], pa.string()))
    want = [email_value(v) for v in values] + [(None, False)]
    assert list(zip(got.to_pylist(), valid.to_pylist())) == want
    assert 0 < sum(valid.to_pylist()) < len(values)
