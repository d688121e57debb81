"""The plan stage: the run plan from events_resolved, its facts aggregated per block and merged on Ray."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from jobs.config import FeaturesConfig, JobConfig, PlanView
from jobs.errors import UserError
from jobs.run.layout import RunLayout
from jobs.run.pipeline import run_pipeline
from jobs.run.plan import EventFacts, RunPlan, block_facts, build_plan, merge_facts
from jobs.run.stage import Stage, ordered
from jobs.stages import plan
from jobs.storage import read_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "features"))  # the hand-built events of the features tests
from feature_events import SCHEMA, ev, hand_table, publish_events_resolved  # noqa: E402

RUN_DATE = dt.date(2026, 7, 3)


def _run_plan(tmp_path, events: pa.Table, config: JobConfig) -> RunPlan:
    layout = RunLayout(str(tmp_path / "runs" / "r1"))
    publish_events_resolved(events, layout.table("events_resolved"), config.storage)
    run_pipeline(config, ordered([Stage.of(plan.run)]), names=["plan"], layout=layout)
    return RunPlan.from_json(read_json(layout.plan, config.storage))


def test_the_plan_stage_decides_from_the_resolved_events(ray_cluster, tmp_path):
    config = JobConfig(run_date=RUN_DATE)
    decided = _run_plan(tmp_path, hand_table(), config)
    # the last event (a99) is on 2026-07-02; the segments' categories plus the others seen with a persona
    assert decided.as_of == dt.date(2026, 7, 3)
    assert decided.categories == ("books", "electronics", "fashion", "home", "toys")
    assert decided.snapshots == (dt.date(2026, 5, 4), dt.date(2026, 6, 3), dt.date(2026, 7, 3))
    # the facts merged from the blocks on Ray are those of the whole table in one piece
    local = build_plan("r1", RUN_DATE, PlanView.from_config(config), EventFacts.from_table(block_facts(hand_table())))
    assert decided == local


def test_pinned_cut_off_and_categories_come_from_the_config(ray_cluster, tmp_path):
    features = FeaturesConfig(as_of=dt.date(2026, 6, 1), categories=["Toys ", "books"])
    pinned = JobConfig(run_date=RUN_DATE, features=features)
    decided = _run_plan(tmp_path, hand_table(), pinned)
    assert decided.as_of == dt.date(2026, 6, 1) and decided.categories == ("toys", "books")


def test_no_event_is_a_user_error(ray_cluster, tmp_path):
    with pytest.raises(UserError, match="nothing to compute features from"):
        _run_plan(tmp_path, hand_table().slice(0, 0), JobConfig(run_date=RUN_DATE))


def _facts(rows: list[dict]) -> pa.Table:
    return block_facts(pa.Table.from_pylist(rows, schema=SCHEMA))


def test_block_facts_count_events_with_a_persona_per_day_and_top_level_category():
    rows = [
        ev("A", "e1", 3, "10:00", "P1", "product_view", category="Electronics/Phones"),
        ev("A", "e2", 3, "11:00", "P1", "purchase", category="electronics/laptops"),
        ev("B", "e3", 2, "10:00", "P1", "product_view", category="home"),
        ev("B", "e4", 2, "12:00", "P1", "page_view"),  # no category: counts for no category
        ev(None, "e5", 1, "10:00", "P1", "product_view", category="toys"),  # no persona: only marks its day
    ]
    facts = EventFacts.from_table(_facts(rows))
    assert facts.last_day == dt.date(2026, 6, 30)
    assert facts.events_per_category_day == {
        (dt.date(2026, 6, 28), "electronics"): 2,
        (dt.date(2026, 6, 29), "home"): 1,
    }
    # merging per-block facts gives the facts of the blocks together, in any grouping
    first, second, third = _facts(rows[:2]), _facts(rows[2:4]), _facts(rows[4:])
    whole = _facts(rows).sort_by([("day", "ascending"), ("category", "ascending")])
    for merged in (merge_facts(first, second, third), merge_facts(merge_facts(first, second), third)):
        assert merged.sort_by([("day", "ascending"), ("category", "ascending")]).equals(whole)
    assert EventFacts.from_table(merge_facts()) == EventFacts(last_day=None, events_per_category_day={})
