"""The purchases-only profile: a one-partner retail log of identified purchases, cohorts that arrive and lapse."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from jobs.synthetic import SCHEMA
from jobs.synthetic.profiles import KEPT_COLUMNS, generate_profile, purchases_only
from jobs.synthetic.reference import START_US


@pytest.fixture(scope="module")
def log():
    return generate_profile("purchases-only", 1500, 8, 548, 5)


def test_one_partner_identified_purchases_only(log):
    assert log.schema == SCHEMA and log.num_rows > 500
    assert pc.unique(log.column("partner_id")).to_pylist() == ["p001"]
    assert pc.unique(log.column("event_type")).to_pylist() == ["purchase"]
    assert log.column("customer_id").null_count == 0
    for name in set(SCHEMA.names) - set(KEPT_COLUMNS):
        assert log.column(name).null_count == log.num_rows, name


def test_history_spans_the_days_and_cohorts_lapse(log):
    days = (log.column("ts").cast("int64").to_numpy() - START_US) / 86_400e6
    assert days.max() > 500  # about 18 months of history
    person = log.column("true_person_id").to_numpy(zero_copy_only=False)
    first = {p: days[person == p].min() for p in np.unique(person)}
    last = {p: days[person == p].max() for p in np.unique(person)}
    # customers keep arriving: a quarter of them first buy after the first six months
    assert np.mean([f > 180 for f in first.values()]) > 0.25
    # and lapse: of the customers acquired in the first quarter, most stop buying before the last quarter
    early = [p for p, f in first.items() if f < 137]
    assert np.mean([last[p] < 411 for p in early]) > 0.5


def test_same_seed_same_log_other_seed_other_log(log):
    assert generate_profile("purchases-only", 1500, 8, 548, 5).equals(log)
    assert not generate_profile("purchases-only", 1500, 8, 548, 6).equals(log)


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="purchases-only"):
        generate_profile("views-only", 10, 1, 10, 1)


def test_purchases_only_of_an_empty_log_is_empty():
    assert purchases_only(SCHEMA.empty_table(), 10, 1).num_rows == 0
