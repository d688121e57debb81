"""The runner: stages in order, completion markers, resume, summary.json.

A run lives in a run folder (`ROOT/runs/RUN_ID`, `jobs.run.layout`). Each stage publishes its outputs
atomically (`jobs.storage`); after it returns, the runner writes `RUN/_stages/STAGE.json`: the stage's
fingerprint (its config view, its inputs' versions: `jobs.run.stage`) and the versions of what it wrote.

A rerun skips a stage whose marker still matches. A stage that runs again publishes new versions, so the
stages that read them see changed inputs and run again too; a stage whose rerun decides the same thing (the
plan, when only the run date moved) leaves the stages after it valid.
A run killed at any point (SIGKILL included) resumes at the first stage without a valid marker: what a
half-finished stage left behind is unpublished (invisible to readers) or overwritten by its rerun.

The run id is `config.run_id`, else the run date (`config.run_date`, else today in UTC), so a scheduled
run that is retried lands in the same run folder and only does what is left. One runner at a time: a run
holds `RUN/_stages/lease.json` while it runs (`jobs.run.lease`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Any

from jobs.config import ExportView, JobConfig
from jobs.errors import UserError
from jobs.raykit.session import ray_session, route_ray_logs
from jobs.run.layout import RunLayout
from jobs.run.lease import run_lease
from jobs.run.logs import run_log
from jobs.run.plan import RunPlan
from jobs.run.resources import PeakSampler, release_unused_memory
from jobs.run.stage import EXPORTS, PLAN, RunIdentity, Stage, StageContext, upstream_of
from jobs.run.summary import fmt, format_summary, stage_summary
from jobs.storage import check_bucket, check_writable, delete, read_json_or_none, write_json

log = logging.getLogger(__name__)


def utc_today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def run_layout(config: JobConfig, layout: RunLayout | None = None) -> RunLayout:
    """The run folder: the one given, else `ROOT/runs/RUN_ID` (run id: config, else the run date)."""
    return layout or RunLayout.for_run(config.root, config.run_id or (config.run_date or utc_today()).isoformat())


def run_identity(config: JobConfig, layout: RunLayout | None = None) -> RunIdentity:
    """Run id and run date: explicit values first; a run folder that exists keeps the date it started with."""
    layout = run_layout(config, layout)
    run_id = config.run_id or layout.run_id
    if config.run_date is not None:
        return RunIdentity(run_id, config.run_date)
    recorded = read_json_or_none(layout.run_record, config.storage)
    if recorded and recorded.get("run_date"):
        return RunIdentity(run_id, dt.date.fromisoformat(recorded["run_date"]))
    try:
        return RunIdentity(run_id, dt.date.fromisoformat(run_id))
    except ValueError:
        return RunIdentity(run_id, utc_today())


def read_plan(layout: RunLayout, config: JobConfig) -> RunPlan | None:
    data = read_json_or_none(layout.plan, config.storage)
    return None if data is None else RunPlan.from_json(data)


def _is_done(stage: Stage, marker: dict[str, Any] | None, fingerprint: str, ctx: StageContext) -> bool:
    if not marker or marker.get("fingerprint") != fingerprint:
        return False
    recorded = marker.get("outputs", {})
    return all(ctx.version(name) == recorded.get(name) for name in stage.writes)


def select(stages: Sequence[Stage], names: Sequence[str], layout: RunLayout, config: JobConfig) -> list[Stage]:
    """The named stages, plus the plan stage whenever a chosen stage reads the plan (it is cheap and derived)."""
    chosen = [s for s in stages if s.name in names]
    if any(PLAN in s.reads for s in chosen):
        chosen = [s for s in stages if s in chosen or PLAN in s.writes]
    unknown = sorted(set(names) - {s.name for s in stages})
    if unknown:
        raise UserError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(s.name for s in stages)}.")
    return chosen


def run_pipeline(
    config: JobConfig, stages: Sequence[Stage], names: Sequence[str] | None = None, layout: RunLayout | None = None
) -> dict[str, Any]:
    """Run the named stages (default: `config.stages`) of `stages` in order, skipping finished ones.

    Where the run writes is checked before anything is read (exit 2 naming the folder); the run's log goes to
    `RUN/logs/` (`jobs.run.logs`)."""
    layout = run_layout(config, layout)
    check_bucket(layout.run_dir, config.storage)
    check_writable(layout.run_dir, config.storage)
    identity = run_identity(config, layout)
    config = config.model_copy(update={"run_id": identity.run_id, "run_date": identity.run_date})
    chosen = select(stages, list(names or config.stages), layout, config)
    if any(EXPORTS in stage.writes for stage in chosen):
        exports_root = ExportView.from_config(config).root
        check_bucket(exports_root, config.storage)
        check_writable(exports_root, config.storage)
    with run_log(layout, config.storage) as log_file, run_lease(layout.lease, identity.run_id, config.storage):
        log.info("run log: %s", log_file)
        return _run(config, layout, identity, tuple(stages), chosen)


def _run(
    config: JobConfig, layout: RunLayout, identity: RunIdentity, stages: tuple[Stage, ...], chosen: list[Stage]
) -> dict[str, Any]:
    write_json(
        layout.run_record, {"run_id": identity.run_id, "run_date": identity.run_date.isoformat()}, config.storage
    )
    started = time.monotonic()
    summary: dict[str, Any] = {
        "run_id": identity.run_id,
        "run_date": identity.run_date.isoformat(),
        "run_dir": layout.run_dir,
        "status": "running",
        "started_at": _now(),
        "stages": {},
    }
    log.info(
        "run %s (run date %s) in %s: stages %s",
        identity.run_id,
        identity.run_date,
        layout.run_dir,
        " -> ".join(s.name for s in chosen),
    )
    ctx = StageContext(config, layout, identity, read_plan(layout, config))
    with contextlib.ExitStack() as ray_started:  # Ray starts with the first stage that has work to do
        for index, stage in enumerate(chosen, 1):
            tag = f"[{index}/{len(chosen)}] {stage.name}"
            fingerprint, read = ctx.fingerprint(stage)
            marker = read_json_or_none(layout.stage_marker(stage.name), config.storage)
            if _is_done(stage, marker, fingerprint, ctx):
                summary["stages"][stage.name] = {**marker.get("summary", {}), "status": "skipped"}
                log.info("%s: done already (inputs and config unchanged), skipped", tag)
                continue
            _check_inputs(stage, stages, ctx)
            delete(layout.stage_marker(stage.name), config.storage)  # in flux until it finishes
            if not ray_started._exit_callbacks:
                ray_started.enter_context(ray_session(config.ray, worker_output=config.logging.verbose))
            route_ray_logs()  # a library a stage imports (Ray Train, Serve) may have added its own handlers
            log.info("%s: started", tag)
            stage_started = time.monotonic()
            try:
                with PeakSampler() as sampler:
                    result = stage.function(**ctx.arguments(stage))
                release_unused_memory()  # the next stage's driver figure starts from what this one still holds
            except BaseException as exc:
                seconds = time.monotonic() - stage_started
                log.error("%s: failed after %.1fs", tag, seconds)
                summary["stages"][stage.name] = {
                    "status": "failed",
                    "seconds": round(seconds, 2),
                    "error": f"{type(exc).__name__}: {exc}"[:2000],
                }
                summary["status"] = "failed"
                write_json(layout.summary, summary, config.storage)
                raise
            seconds = time.monotonic() - stage_started
            if isinstance(result, RunPlan):
                write_json(layout.plan, result.to_json(), config.storage)
                ctx = StageContext(config, layout, identity, result)
                result = {"plan": result.to_json()}
            figures = stage_summary(stage, ctx, result, seconds, sampler)
            write_json(
                layout.stage_marker(stage.name),
                {
                    "stage": stage.name,
                    "run_id": identity.run_id,
                    "fingerprint": fingerprint,
                    **read,
                    "outputs": {name: ctx.version(name) for name in stage.writes},
                    "finished_at": _now(),
                    "summary": figures,
                },
                config.storage,
            )
            summary["stages"][stage.name] = figures
            write_json(layout.summary, summary, config.storage)
            log.info(
                "%s: done in %.1fs (rows in %s, out %s%s; total %.1fs)",
                tag,
                seconds,
                fmt(figures["rows_in"]),
                fmt(figures["rows_out"]),
                f", quarantined {figures['quarantined']}" if figures["quarantined"] else "",
                time.monotonic() - started,
            )
    summary.update(status="succeeded", seconds=round(time.monotonic() - started, 2), finished_at=_now())
    write_json(layout.summary, summary, config.storage)
    log.info("run %s finished in %.1fs\n%s", identity.run_id, summary["seconds"], format_summary(summary))
    # what the CLI prints: the figures of the table; the stages' own details stay in summary.json
    brief = (
        "status",
        "seconds",
        "rows_in",
        "rows_out",
        "quarantined",
        "peak_driver_rss_mb",
        "driver_peak_rss_mb",
        "peak_object_store_mb",
    )
    return {
        **{k: v for k, v in summary.items() if k != "stages"},
        "summary_path": layout.summary,
        "stages": {name: {k: s[k] for k in brief if k in s} for name, s in summary["stages"].items()},
    }


def _check_inputs(stage: Stage, stages: tuple[Stage, ...], ctx: StageContext) -> None:
    """A clear error when a stage's input was never produced (its producing stage was not run)."""
    for producer in upstream_of(stage, stages):
        missing = [name for name in producer.writes if name in stage.reads and ctx.version(name) is None]
        if missing:
            raise UserError(
                f"stage {stage.name} reads {', '.join(missing)} of run {ctx.identity.run_id}, which "
                f"the {producer.name} stage has not produced yet: run `segments {producer.name}` (or "
                f"`segments run`) first."
            )


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
