"""The features stage through the runner: every snapshot of the plan in one table partitioned by as_of, and
the fingerprint bug of issue 10 (a changed segment list left a stale features/ table)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from features.catalog import feature_names
from features.compute import compute_local
from jobs.config import FeaturesConfig, JobConfig, SegmentConfig, TrainingConfig
from jobs.errors import UserError
from jobs.run.layout import RunLayout
from jobs.run.pipeline import run_pipeline
from jobs.run.plan import RunPlan
from jobs.run.stage import Stage, ordered
from jobs.stages import features, plan
from jobs.storage import TableIn, marker_or_none, read_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "features"))  # the hand-built events of the features tests
from feature_events import hand_table, publish_events_resolved  # noqa: E402

STAGES = ordered([Stage.of(plan.run), Stage.of(features.run)])
RUN_DATE = dt.date(2026, 7, 3)


@pytest.fixture()
def layout(tmp_path) -> RunLayout:
    layout = RunLayout(str(tmp_path / "runs" / "r1"))
    publish_events_resolved(hand_table(), layout.table("events_resolved"), JobConfig().storage)
    return layout


def _run(config: JobConfig, layout: RunLayout) -> dict:
    return run_pipeline(config, STAGES, names=["plan", "features"], layout=layout)


def _table(layout: RunLayout, config: JobConfig) -> TableIn:
    return TableIn("features", layout.table("features"), config.storage)


def _bytes(table: pa.Table) -> bytes:
    table = table.sort_by("persona_id").combine_chunks().replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_every_snapshot_of_the_plan_in_one_table(ray_cluster, layout):
    # the training cut-off is pinned before the first event: that snapshot is empty, and still a partition
    config = JobConfig(run_date=RUN_DATE, training=TrainingConfig(train_as_of=dt.date(2025, 1, 1)))
    summary = _run(config, layout)
    decided = RunPlan.from_json(read_json(layout.plan, config.storage))
    assert decided.snapshots == (dt.date(2025, 1, 1), dt.date(2026, 6, 3), dt.date(2026, 7, 3))
    table = _table(layout, config)
    marker = table.marker
    assert marker["categories"] == list(decided.categories) == ["books", "electronics", "fashion", "home", "toys"]
    assert marker["snapshots"] == ["2025-01-01", "2026-06-03", "2026-07-03"]
    assert marker["features"] == len(feature_names(config.features))
    assert marker["partitions"] == {"as_of=2025-01-01": 0, "as_of=2026-06-03": 2, "as_of=2026-07-03": 3}
    for as_of in decided.snapshots:
        snapshot = table.arrow(partition={"as_of": as_of})
        expected = compute_local(hand_table(), as_of, config.features, decided.categories)
        assert snapshot.column_names == expected.column_names
        assert _bytes(snapshot) == _bytes(expected)
    whole = table.arrow()  # the date is a real column too, not only a folder name
    assert whole.num_rows == 5 and sorted(set(whole.column("as_of").to_pylist())) == list(decided.snapshots[1:])
    figures = summary["stages"]["features"]
    assert figures["rows_out"] == 5 and figures["rows_in"] == hand_table().num_rows


def test_a_changed_segment_list_reruns_features_and_an_unchanged_rerun_skips_them(ray_cluster, layout):
    # two category slots: the plan fills them with the largest categories, or the ones segments target
    buyers = SegmentConfig(name="buyers", kind="ecommerce_buyers")
    config = JobConfig(run_date=RUN_DATE, features=FeaturesConfig(top_categories=2), segments=[buyers])
    _run(config, layout)
    table = _table(layout, config)
    first = table.marker
    assert first["categories"] == ["electronics", "fashion"]

    again = _run(config, layout)
    assert again["stages"]["features"]["status"] == "skipped" and table.marker["write_id"] == first["write_id"]

    # a segment targeting toys: the features read toys into a slot now, so the table must be computed again
    toys = SegmentConfig(name="toy_lovers", kind="category_lovers", category="toys")
    changed = config.model_copy(update={"segments": [buyers, toys]})
    rerun = _run(changed, layout)
    assert rerun["stages"]["features"]["status"] != "skipped"
    second = table.marker
    assert second["write_id"] != first["write_id"] and second["categories"] == ["electronics", "toys"]
    decided = RunPlan.from_json(read_json(layout.plan, config.storage))
    expected = compute_local(hand_table(), decided.as_of, changed.features, decided.categories)
    assert _bytes(table.arrow(partition={"as_of": decided.as_of})) == _bytes(expected)


def test_no_persona_before_the_scoring_cut_off_is_a_user_error(ray_cluster, layout):
    config = JobConfig(run_date=RUN_DATE, features=FeaturesConfig(as_of=dt.date(2020, 1, 1)))
    with pytest.raises(UserError, match="no persona has events before the cut-off 2020-01-01"):
        _run(config, layout)
    assert marker_or_none(layout.table("features"), config.storage) is None  # nothing half-written is published
