"""What a run reports about each stage: rows in and out, quarantined, seconds, peak memory (the driver's two
figures: `jobs.run.resources`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from jobs.storage import marker_or_none

if TYPE_CHECKING:
    from jobs.run.resources import PeakSampler
    from jobs.run.stage import Stage, StageContext


def _rows(ctx: StageContext, name: str) -> int | None:
    from jobs.run.layout import TABLES

    if name not in TABLES:
        return None
    marker = marker_or_none(ctx.layout.table(name), ctx.config.storage)
    return None if marker is None else int(marker.get("rows", 0))


def stage_summary(stage: Stage, ctx: StageContext, result: Any, seconds: float, sampler: PeakSampler) -> dict[str, Any]:
    """The stage's line of summary.json: the stage's own figures first, else its tables' row counts."""
    result = result if isinstance(result, dict) else {}
    outputs = {name: _rows(ctx, name) for name in stage.writes}
    inputs = [rows for rows in (_rows(ctx, name) for name in stage.reads) if rows is not None]
    quarantined = result.get("quarantined", outputs.get("quarantine"))
    rows_out = result.get("rows_out")
    if rows_out is None:  # the stage's main table: the first it publishes that is not the quarantine
        main = [rows for name, rows in outputs.items() if name != "quarantine" and rows is not None]
        rows_out = main[0] if main else None
    rows_in = result.get("rows_in", inputs[0] if inputs else None)
    return {
        "status": "ran",
        "seconds": round(seconds, 2),
        "rows_in": rows_in,
        "rows_out": rows_out,
        "quarantined": quarantined or 0,
        "tables": {name: rows for name, rows in outputs.items() if rows is not None},
        "peak_driver_rss_mb": round(sampler.peak_rss / 2**20, 1),
        "driver_peak_rss_mb": round(sampler.driver_peak_rss / 2**20, 1),
        "driver_rss_start_mb": None if sampler.start_rss is None else round(sampler.start_rss / 2**20, 1),
        "peak_object_store_mb": None if sampler.peak_store is None else round(sampler.peak_store / 2**20, 1),
        "object_store_spilled_mb": None if sampler.spilled is None else round(sampler.spilled / 2**20, 1),
        "result": json.loads(json.dumps(result, default=str)),
    }


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else str(value)


def format_summary(summary: dict[str, Any]) -> str:
    """The per-stage table printed at the end of a run."""
    header = ("stage", "status", "seconds", "rows in", "rows out", "quarantined", "driver MB", "store MB")
    rows = [header]
    for name, stage in summary.get("stages", {}).items():
        rows.append(
            (
                name,
                stage.get("status", ""),
                fmt(stage.get("seconds")),
                fmt(stage.get("rows_in")),
                fmt(stage.get("rows_out")),
                fmt(stage.get("quarantined")),
                fmt(stage.get("driver_peak_rss_mb", stage.get("peak_driver_rss_mb"))),
                fmt(stage.get("peak_object_store_mb")),
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
