"""The run plan: every date and list a run's stages share, decided once and written to `RUN/plan.json`.

    run id, run date            who the run is (exports' RUN_DATE)
    as_of                       the scoring cut-off: features see only events before it
    cut-offs per segment        train_as_of < eval_as_of <= as_of (out-of-time evaluation), refit_as_of
    snapshots                   every cut-off a feature snapshot is needed at
    categories                  the feature category slots, the same at every cut-off

The plan is a pure function of the config's plan view and two facts of the resolved events (the last day
with an event, and events per top-level category per day), so it is decided as soon as those exist and
before any stage that uses it; no stage re-derives a date or a category list on its own. The facts are a
small table (`block_facts` of each block of events, `merge_facts` of the blocks: days x categories rows), so
the plan stage works them out where the events are and merges them (`jobs.stages.plan`).

Defaults: `as_of` is the day after the last event. A segment with horizon h evaluates at `as_of - h` (its
label window is then fully observed) and trains at `as_of - 2h` (training labels end where evaluation
begins); `training.eval_as_of` / `training.train_as_of` pin them. `refit_as_of = as_of - h` is the latest
cut-off whose label window is complete: the production model is refitted there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.config import PlanView, SegmentConfig
from jobs.errors import UserError


def top_level(category: str | None) -> str | None:
    """The feature category of a category path: its first level ("electronics/phones" -> "electronics")."""
    if category is None:
        return None
    head = category.split("/", 1)[0].strip().lower()
    return head or None


@dataclass(frozen=True)
class SegmentCutoffs:
    """The dates of one segment: training, out-of-time evaluation, and the production refit."""

    horizon_days: int
    train_as_of: dt.date
    eval_as_of: dt.date
    refit_as_of: dt.date
    eval_window_complete: bool


@dataclass(frozen=True)
class RunPlan:
    run_id: str
    run_date: dt.date
    as_of: dt.date
    categories: tuple[str, ...]
    cutoffs: Mapping[str, SegmentCutoffs] = field(default_factory=dict)

    @property
    def snapshots(self) -> tuple[dt.date, ...]:
        """Every cut-off a feature snapshot is needed at, oldest first (`as_of` is always one)."""
        dates = {self.as_of}
        for cut in self.cutoffs.values():
            dates.update((cut.train_as_of, cut.eval_as_of, cut.refit_as_of))
        return tuple(sorted(dates))

    def for_segment(self, name: str) -> SegmentCutoffs:
        return self.cutoffs[name]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_date": self.run_date.isoformat(),
            "as_of": self.as_of.isoformat(),
            "categories": list(self.categories),
            "snapshots": [d.isoformat() for d in self.snapshots],
            "cutoffs": {
                name: {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in asdict(cut).items()}
                for name, cut in sorted(self.cutoffs.items())
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunPlan:
        def date(value: str) -> dt.date:
            return dt.date.fromisoformat(value)

        cutoffs = {
            name: SegmentCutoffs(
                horizon_days=int(c["horizon_days"]),
                train_as_of=date(c["train_as_of"]),
                eval_as_of=date(c["eval_as_of"]),
                refit_as_of=date(c["refit_as_of"]),
                eval_window_complete=bool(c["eval_window_complete"]),
            )
            for name, c in data.get("cutoffs", {}).items()
        }
        return cls(
            run_id=data["run_id"],
            run_date=date(data["run_date"]),
            as_of=date(data["as_of"]),
            categories=tuple(data["categories"]),
            cutoffs=cutoffs,
        )

    @property
    def digest(self) -> str:
        """What a stage that reads the plan records in its fingerprint: the data decisions only. The run id
        and date are left out, so a new run date alone redoes only the stages that take the run identity."""
        decisions = {k: v for k, v in self.to_json().items() if k not in ("run_id", "run_date")}
        return hashlib.sha256(json.dumps(decisions, sort_keys=True).encode()).hexdigest()[:16]


def segment_cutoffs(
    segment: SegmentConfig, as_of: dt.date, train_as_of: dt.date | None, eval_as_of: dt.date | None
) -> SegmentCutoffs:
    horizon = dt.timedelta(days=segment.horizon_days)
    evaluation = eval_as_of or (as_of - horizon)
    training = train_as_of or (evaluation - horizon)
    if training + horizon > evaluation:
        raise UserError(
            f"segment {segment.name}: training labels [{training}, {training + horizon}) run past the "
            f"evaluation cut-off {evaluation}; the evaluation would not be out of time. Set training.train_as_of "
            f"<= {evaluation - horizon} or a later training.eval_as_of."
        )
    return SegmentCutoffs(
        horizon_days=segment.horizon_days,
        train_as_of=training,
        eval_as_of=evaluation,
        refit_as_of=as_of - horizon,
        eval_window_complete=evaluation + horizon <= as_of,
    )


def choose_categories(events_per_category: Mapping[str, int], top: int, required: Sequence[str] = ()) -> list[str]:
    """`required` plus the categories with the most events, `top` in all, sorted by name."""
    ranked = sorted(events_per_category.items(), key=lambda item: (-item[1], item[0]))
    chosen: list[str] = []
    for name in [*required, *(name for name, _ in ranked)]:
        if name and name not in chosen and len(chosen) < top:
            chosen.append(name)
    return sorted(chosen)


@dataclass(frozen=True)
class EventFacts:
    """What the plan needs to know of the resolved events: the last day with any event, and events per
    top-level category per day among events with a persona (what features can see)."""

    last_day: dt.date | None
    events_per_category_day: Mapping[tuple[dt.date, str], int]

    def events_per_category(self, before: dt.date) -> dict[str, int]:
        totals: dict[str, int] = {}
        for (day, category), n in self.events_per_category_day.items():
            if day < before:
                totals[category] = totals.get(category, 0) + n
        return totals

    @classmethod
    def from_table(cls, facts: pa.Table) -> EventFacts:
        """From a `FACTS_SCHEMA` table (`block_facts`, merged with `merge_facts`): days x categories rows."""
        last = pc.max(facts.column("day")).as_py() if facts.num_rows else None
        counted = facts.filter(pc.and_(pc.is_valid(facts.column("category")), pc.greater(facts.column("events"), 0)))
        per_day = {
            (day, category): int(n)
            for day, category, n in zip(*(counted.column(c).to_pylist() for c in FACTS_SCHEMA.names))
        }
        return cls(last_day=last, events_per_category_day=per_day)


# The EventFacts of some events as a table: one row per (UTC day, top-level category) with the events of that
# day and category that have a persona; a row with a null category (and the events without either) marks
# every day with any event. Small (days x categories), so each block's table merges into the run's cheaply.
FACTS_SCHEMA = pa.schema([("day", pa.date32()), ("category", pa.string()), ("events", pa.int64())])
FACTS_COLUMNS = ["ts", "persona_id", "category"]  # what `block_facts` reads of events_resolved
_DAY_US = 86_400_000_000


def block_facts(events: pa.Table) -> pa.Table:
    """The `FACTS_SCHEMA` table of one block of events_resolved rows (`FACTS_COLUMNS`)."""
    events = events.filter(pc.is_valid(events.column("ts")))
    if events.num_rows == 0:
        return FACTS_SCHEMA.empty_table()
    micros = pc.cast(events.column("ts"), pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    days = pa.array(np.floor_divide(micros, _DAY_US).astype(np.int32)).cast(pa.date32())
    encoded = pc.dictionary_encode(events.column("category").combine_chunks())
    heads = pa.array([top_level(c) for c in encoded.dictionary.to_pylist()], pa.string())
    category = heads.take(encoded.indices)
    counted = pc.and_(pc.is_valid(events.column("persona_id")), pc.is_valid(category)).combine_chunks()
    rows = pa.table(
        {
            "day": days,
            "category": pc.if_else(counted, category, pa.scalar(None, pa.string())),
            "events": pc.cast(counted, pa.int64()),
        }
    )
    return merge_facts(rows)


def merge_facts(*facts: pa.Table) -> pa.Table:
    """Several `FACTS_SCHEMA` tables as one (events summed per day and category); associative."""
    rows = pa.concat_tables([f.cast(FACTS_SCHEMA) for f in facts]) if facts else FACTS_SCHEMA.empty_table()
    merged = rows.group_by(["day", "category"]).aggregate([("events", "sum")])
    return merged.select(["day", "category", "events_sum"]).rename_columns(FACTS_SCHEMA.names).cast(FACTS_SCHEMA)


def build_plan(run_id: str, run_date: dt.date, view: PlanView, facts: EventFacts) -> RunPlan:
    """The plan of a run (pure): see the module docstring for the rules."""
    if view.as_of is not None:
        as_of = view.as_of
    elif facts.last_day is not None:
        as_of = facts.last_day + dt.timedelta(days=1)
    else:
        raise UserError(
            "the resolved events have no event with a persona and a timestamp: there is nothing to "
            "compute features from. Check the input's identifiers (see identity_audit/ and quarantine/)."
        )
    cutoffs = {s.name: segment_cutoffs(s, as_of, view.train_as_of, view.eval_as_of) for s in view.segments}
    if view.categories:
        categories = [c.strip().lower() for c in view.categories]
    else:
        required = list(dict.fromkeys(c for c in (top_level(s.category) for s in view.segments) if c))
        categories = choose_categories(facts.events_per_category(as_of), view.top_categories, required)
    return RunPlan(run_id=run_id, run_date=run_date, as_of=as_of, categories=tuple(categories), cutoffs=cutoffs)
