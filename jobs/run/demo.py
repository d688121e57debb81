"""`segments demo`: a synthetic sample, the whole pipeline on a local Ray over local disk, and where it landed.

The sample is generated once per size: a stamp in the events folder (`_demo.json`, hidden from the
pipeline's reading) records what is there, and a second demo with the same size only runs the pipeline,
which finds every stage done and says so.
"""

from __future__ import annotations

import logging
import os

from jobs.config import ExportView, JobConfig, LoggingConfig, StorageConfig
from jobs.errors import UserError
from jobs.exports.partners import exported_partners
from jobs.run.layout import ExportLayout, RunLayout
from jobs.run.pipeline import run_pipeline
from jobs.stages import pipeline
from jobs.storage import check_writable, delete, is_s3, join, list_files, read_json_or_none, write_json
from jobs.synthetic import write_events

log = logging.getLogger(__name__)

RUN_ID = "demo"
PARTNERS = 8
DAYS = 180
SEED = 7
MIN_PERSONS = 1000  # fewer people leave every segment below its training minimums
STAMP = "_demo.json"


def run_demo(out: str = "demo-out", persons: int = 3000, verbose: bool = False) -> str:
    """Generate a sample (unless the one in OUT/events is current), run every stage, say where things are."""
    if persons < MIN_PERSONS:
        raise UserError(
            f"the demo needs --persons of at least {MIN_PERSONS} (got {persons}): with fewer people no segment "
            "reaches its training minimums."
        )
    if is_s3(out):
        raise UserError("`segments demo` writes to a local folder; use `segments run --config` for s3:// roots.")
    out = os.path.abspath(out)
    storage = StorageConfig()
    check_writable(out, storage)
    events = join(out, "events")
    config = JobConfig(events=events, root=out, run_id=RUN_ID, logging=LoggingConfig(verbose=verbose))
    ensure_sample(events, persons, storage)
    summary = run_pipeline(config, pipeline())
    layout = RunLayout(summary["run_dir"])
    exports_root = ExportView.from_config(config).root
    partners = exported_partners(exports_root, storage)
    exports = (
        f"{ExportLayout(exports_root).base}  ({len(partners)} partners: {', '.join(partners)})"
        if partners
        else f"none: no segment met its training minimums, see {layout.report}"
    )
    # the per-stage table was just logged with the run's end; this says where to look
    return "\n".join(
        [
            f"demo run {summary['status']} in {summary['seconds']:.0f}s",
            f"events:   {events}",
            f"run:      {layout.run_dir}  (summary.json, personas/, features/, models/, scores/ ...)",
            f"report:   {layout.report}",
            f"exports:  {exports}",
        ]
    )


def ensure_sample(events: str, persons: int, storage: StorageConfig) -> None:
    """The demo's event files in `events`, generated only when the ones there are not of this size."""
    params = {"persons": persons, "partners": PARTNERS, "days": DAYS, "seed": SEED}
    stamp = join(events, STAMP)
    if read_json_or_none(stamp, storage) == params and list_files(events, storage):
        log.info("demo sample in %s is current (%s), not regenerated", events, params)
        return
    log.info("generating the demo sample in %s: %s", events, params)
    delete(events, storage)
    write_events(events, storage, **params)
    write_json(stamp, params, storage)
