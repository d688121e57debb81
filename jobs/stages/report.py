"""The report stage: the run's HTML report (`RUN/report.html`), every segment's model quality on one page,
with who was scored and who is a member (`jobs.model.report`)."""

from __future__ import annotations

import json

from jobs.config import ReportView
from jobs.model import bundle
from jobs.model.report import render_page
from jobs.model.scoring import segment_counts
from jobs.run.layout import RunLayout
from jobs.run.plan import RunPlan
from jobs.run.stage import FileOut
from jobs.storage import TableIn


def run(view: ReportView, plan: RunPlan, models: TableIn, scores: TableIn, report: FileOut) -> dict:
    in_bundle = models.marker.get("segments", {})
    sections = [
        json.loads(models.file(RunLayout.model_file(s.name, bundle.METRICS)))
        for s in view.segments
        if s.name in in_bundle
    ]
    counts = segment_counts(scores.dataset(columns=["segment", "member"])) if scores.marker.get("rows") else {}
    report.write(render_page(f"Look-alike segments: run {plan.run_id}", sections, scoring=counts).encode())
    return {"segments": len(sections), "rows_in": scores.marker.get("rows"), "rows_out": len(sections)}
