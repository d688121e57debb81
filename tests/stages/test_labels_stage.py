"""Labels stage: one `labels/` table with a partition per cut-off of the plan, each holding exactly the
positives the single-process definitions find, for the segments that need that cut-off."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from jobs.config import JobConfig, LabelsView, SegmentConfig
from jobs.run.layout import EVENTS_RESOLVED, LABELS, RunLayout
from jobs.run.plan import RunPlan, SegmentCutoffs, segment_cutoffs
from jobs.segments.definitions import label_column, labels_table
from jobs.stages import labels
from jobs.stages.labels import cutoff_segments
from jobs.storage import TableIn, TableOut, writing

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 1, tzinfo=UTC)
D = dt.date(2026, 3, 1)
SCHEMA = pa.schema(
    [("persona_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC"))]
    + [
        (c, pa.string())
        for c in ("event_type", "partner_id", "product_id", "category", "brand", "order_id", "event_id")
    ]
)


def days(n: int) -> dt.date:
    return D + dt.timedelta(days=n)


def random_events(personas: int = 300, seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(personas):
        for k in range(int(rng.integers(0, 14))):
            kind = ["product_view", "purchase", "add_to_cart"][int(rng.integers(0, 3))]
            rows.append(
                {
                    "persona_id": f"p{i}",
                    "ts": T0 + dt.timedelta(days=float(rng.uniform(-8, 34))),
                    "event_type": kind,
                    "partner_id": f"p{int(rng.integers(0, 3))}",
                    "product_id": f"x{int(rng.integers(0, 4))}",
                    "category": ["home/a", "fashion/b"][int(rng.integers(0, 2))],
                    "brand": None,
                    "order_id": f"o{i}-{k}",
                    "event_id": f"e{i}-{k}",
                }
            )
    rows.append({**rows[0], "persona_id": None, "event_id": "anonymous"})  # no persona: nobody's label
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def cut(horizon: int, train: int, evaluation: int, refit: int) -> SegmentCutoffs:
    return SegmentCutoffs(horizon, days(train), days(evaluation), days(refit), True)


SEGMENTS = [
    SegmentConfig(name="b", kind="ecommerce_buyers"),
    SegmentConfig(name="h", kind="price_hunters"),
    SegmentConfig(name="c", kind="high_interest", category="home", horizon_days=10),
    SegmentConfig(name="late", kind="ecommerce_buyers"),
]
PLAN = RunPlan(
    "r1",
    days(40),
    days(40),
    ("fashion", "home"),
    {
        "b": cut(30, -4, 0, 0),
        "h": cut(30, -4, 0, 0),
        "c": cut(10, 0, 10, 10),
        "late": cut(30, 90, 90, 90),  # after every event: a cut-off without a positive
    },
)


def test_cutoffs_default_to_fully_observed_windows_and_each_segment_lists_its_own():
    seg = SegmentConfig(name="b", kind="ecommerce_buyers", horizon_days=30)
    defaults = segment_cutoffs(seg, dt.date(2026, 5, 1), None, None)
    assert (defaults.eval_as_of, defaults.train_as_of, defaults.refit_as_of) == (
        dt.date(2026, 4, 1),
        dt.date(2026, 3, 2),
        dt.date(2026, 4, 1),
    )
    assert defaults.eval_window_complete
    needed = cutoff_segments(SEGMENTS, PLAN)
    assert list(needed) == [days(-4), days(0), days(10), days(90)]
    assert {d: [s.name for s in segs] for d, segs in needed.items()} == {
        days(-4): ["b", "h"],
        days(0): ["b", "h", "c"],
        days(10): ["c"],
        days(90): ["late"],
    }


def test_labels_stage_matches_the_single_process_definitions_at_every_cutoff(ray_cluster, tmp_path):
    config = JobConfig(root=str(tmp_path), ray={"num_partitions": 3}, segments=SEGMENTS)
    layout = RunLayout(str(tmp_path / "runs" / "r1"))
    events = random_events()
    with writing(layout.table(EVENTS_RESOLVED), config.storage) as writer:
        writer.write_arrow(events)
    source = TableIn(EVENTS_RESOLVED, layout.table(EVENTS_RESOLVED), config.storage)
    result = labels.run(
        LabelsView.from_config(config), PLAN, source, TableOut(LABELS, layout.table(LABELS), config.storage)
    )

    table = TableIn(LABELS, layout.table(LABELS), config.storage)
    cutoffs = table.marker["cutoffs"]
    assert cutoffs == {d.isoformat(): [s.name for s in segs] for d, segs in cutoff_segments(SEGMENTS, PLAN).items()}
    assert result["rows_in"] == events.num_rows and result["rows_out"] == table.marker["rows"]
    by_name = {s.name: s for s in SEGMENTS}
    for as_of_text, names in cutoffs.items():
        as_of = dt.date.fromisoformat(as_of_text)
        part = table.arrow(partition={"as_of": as_of})
        assert part.column_names == ["persona_id", "as_of", *(label_column(n) for n in names)]
        assert set(part.column("as_of").to_pylist()) <= {as_of}
        ids = np.asarray(part.column("persona_id").to_pylist(), dtype=object)
        assert len(set(ids)) == len(ids), "one row per persona"
        flags = np.column_stack([part.column(label_column(n)).to_numpy() for n in names]) if len(ids) else None
        if len(ids):
            assert (flags.max(axis=1) == 1).all(), "only personas with a positive somewhere"
        for j, name in enumerate(names):
            expected = sorted(labels_table(events, by_name[name], as_of).column("persona_id").to_pylist())
            got = sorted(ids[flags[:, j] == 1].tolist()) if len(ids) else []
            assert got == expected, (name, as_of)
            if name != "late":
                assert expected, f"the test data has positives of {name} at {as_of}"
    assert table.marker["partitions"][f"as_of={days(90).isoformat()}"] == 0, "an empty cut-off is still there"
