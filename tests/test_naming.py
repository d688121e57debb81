import datetime as dt

import pytest

from jobs.errors import UserError
from jobs.run.naming import validate_partner_id, validate_run_date, validate_segment_name


@pytest.mark.parametrize("good", ["p1", "partner-01", "acme.de", "P_2", "a", "x" * 64, "shop.co.uk"])
def test_good_partner_ids(good):
    assert validate_partner_id(good) == good


@pytest.mark.parametrize(
    "bad, why",
    [
        ("", "empty"),
        ("..", "'..'"),
        ("../p2", "path separator"),
        ("p1/../p2", "path separator"),
        ("p1/x", "path separator"),
        ("p1\\x", "path separator"),
        ("a..b", "'..'"),
        (".hidden", "starts with a dot"),
        ("_staging", "reserved for staging"),
        ("-p", "start with a letter or digit"),
        ("p\x00", "control"),
        ("p1\n", "control"),
        ("p\u200b1", "control or invisible"),
        ("p 1", "whitespace"),
        ("p1*", "characters other than"),
        ("pärtner", "characters other than"),
        ("x" * 65, "65 characters long"),
    ],
)
def test_bad_partner_ids(bad, why):
    with pytest.raises(UserError, match="partner id .* is not allowed") as err:
        validate_partner_id(bad)
    assert why in str(err.value)


def test_partner_id_must_be_text():
    with pytest.raises(UserError, match="must be a string"):
        validate_partner_id(None)


@pytest.mark.parametrize("good", ["ecommerce_buyers", "seg_a", "x1", "a" * 64])
def test_good_segment_names(good):
    assert validate_segment_name(good) == good


@pytest.mark.parametrize("bad", ["", "Seg", "seg-a", "seg.a", "../seg", "seg/a", "_seg", ".seg", "seg\n", "a" * 65])
def test_bad_segment_names(bad):
    with pytest.raises(UserError, match="segment name .* is not allowed"):
        validate_segment_name(bad)


def test_run_dates():
    assert validate_run_date("2026-03-01") == "2026-03-01"
    assert validate_run_date(dt.date(2026, 3, 1)) == "2026-03-01"
    assert validate_run_date(dt.datetime(2026, 3, 1, 12, 0)) == "2026-03-01"
    for bad in ["2026-3-1", "2026-03-01/..", "../2026-03-01", "20260301", "", None]:
        with pytest.raises(UserError, match="YYYY-MM-DD"):
            validate_run_date(bad)
    with pytest.raises(UserError, match="not a calendar date"):
        validate_run_date("2026-02-30")
