"""The plan stage: the run plan (as_of, every cut-off, the feature categories) from the resolved events.

It reads what the plan needs of events_resolved (`jobs.run.plan.FACTS_COLUMNS`): each file gives a small
(day, category, events) table in the task that reads it, a tree of Ray tasks merges them, and `build_plan` decides.
The runner writes the returned plan to `RUN/plan.json` and hands it to every later stage.
"""

from __future__ import annotations

import logging

from jobs.config import PlanView
from jobs.raykit.reduce import tree_reduce
from jobs.run.plan import FACTS_COLUMNS, EventFacts, RunPlan, block_facts, build_plan, merge_facts
from jobs.run.stage import RunIdentity
from jobs.storage import TableIn

log = logging.getLogger(__name__)


def run(view: PlanView, identity: RunIdentity, events_resolved: TableIn) -> RunPlan:
    partials = events_resolved.blocks(columns=FACTS_COLUMNS, then=block_facts)  # a task per file
    facts = EventFacts.from_table(tree_reduce(partials, merge_facts))
    plan = build_plan(identity.run_id, identity.run_date, view, facts)
    log.info(
        "plan: as_of %s, snapshots %s, categories %s",
        plan.as_of,
        ", ".join(d.isoformat() for d in plan.snapshots),
        ", ".join(plan.categories),
    )
    return plan
