"""The whole job: stage order, completion markers, resume, summary.json, progress display, the demo.

A run lives in `ROOT/runs/RUN_ID`. Every stage publishes its tables atomically (jobs.io's `_SUCCESS`
markers); after it returns, the pipeline writes `RUN/_stages/STAGE.json`, the stage's completion marker:
a fingerprint of what the stage read (the config sections it depends on, `JobConfig.section_hash`, and
the write ids of its input tables) and the write ids of what it published.

A rerun skips a stage whose marker still matches. A stage that runs again publishes new write ids, so
every stage after it sees changed inputs and runs again too (their markers are removed before it starts).
A run killed at any point (SIGKILL included) resumes at the first stage without a valid marker: what a
half-finished stage left behind is either unpublished (invisible to readers) or overwritten by its rerun.

The run id is `config.run_id`, else the run date (`config.run_date`, else today in UTC), so a scheduled
run that is retried lands in the same run folder and only does what is left. One runner at a time: a run
holds `RUN/_stages/lease.json` while it runs (jobs.run.lease), and a second run of the same id stops with
exit code 2 instead of overwriting the first one's tables.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib
import json
import logging
import os
import posixpath
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from jobs import io
from jobs.config import PIPELINE_STAGES, JobConfig
from jobs.errors import UserError
from jobs.run.lease import run_lease
from jobs.raykit.session import ray_session

log = logging.getLogger(__name__)

EVENTS = "@events"  # a stage input that is the raw event files rather than a run table
STAGE_MARKERS = "_stages"
# Folders published as one marker file per item (models/SEGMENT/model_card.json, written last).
ITEM_MARKERS = ("model_card.json",)

DEMO_PARTNERS = 8
DEMO_DAYS = 180
DEMO_SEED = 7


@dataclass(frozen=True)
class Stage:
    """One pipeline step: `module:function` called as `function(config, run_dir=RUN_DIR) -> dict`."""

    name: str
    entry: str
    sections: tuple[str, ...]  # JobConfig fields whose values decide the stage's output
    inputs: tuple[str, ...]  # run tables it reads (EVENTS: the input event files)
    outputs: tuple[str, ...]  # run tables it publishes

    def function(self) -> Callable[..., dict]:
        module_name, function_name = self.entry.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                raise UserError(
                    f"stage {self.name!r} ({self.entry}) is not part of this build; "
                    f"list only the stages you have under `stages:` in the config."
                ) from None
            raise
        return getattr(module, function_name)


STAGES: tuple[Stage, ...] = (
    Stage(
        "resolve",
        "jobs.resolve:run_resolve",
        sections=("events", "input", "identity"),
        inputs=(EVENTS,),
        outputs=("quarantine", "events_resolved", "identity_map", "identity_audit", "personas"),
    ),
    Stage("features", "features.compute:run_features", sections=("features",), inputs=("events_resolved",),
          outputs=("features",)),
    Stage("train", "jobs.train:run_train", sections=("features", "segments", "training"),
          inputs=("events_resolved", "features"), outputs=("models",)),
    Stage("score", "jobs.score:run_score", sections=("segments", "scoring"), inputs=("features", "models"),
          outputs=("scores",)),
    Stage("export", "jobs.export:run_export", sections=("segments", "export", "run_date"),
          inputs=("scores", "identity_map"), outputs=()),
)
assert tuple(s.name for s in STAGES) == PIPELINE_STAGES


# --- versions of inputs and outputs ---------------------------------------------------------------


def _events_version(config: JobConfig) -> str | None:
    """Name, size and modification time of every input file (no content read), hashed."""
    files = io.list_files(config.events, config.storage)
    if not files:
        return None
    fs, _ = io.filesystem_for(files[0], config.storage)
    infos = fs.get_file_info([f[len("s3://"):] if io.is_s3(f) else f for f in files])
    listing = [(i.path, i.size, i.mtime_ns) for i in infos]
    return "files-" + hashlib.sha256(json.dumps(listing, default=str).encode()).hexdigest()[:16]


def _table_version(layout: io.RunLayout, name: str, config: JobConfig) -> str | None:
    """The write id a run table is published at; for a folder of items, a hash of the item markers."""
    if name == EVENTS:
        return _events_version(config)
    path = layout.table(name)
    marker = io.join(path, io.MARKER)
    if io.exists(marker, config.storage):
        return io.read_json(marker, config.storage)["write_id"]
    items = [f for f in io.list_files(path, config.storage) if posixpath.basename(f) in ITEM_MARKERS]
    if not items:
        return None
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode())
        digest.update(io.read_bytes(item, config.storage))
    return "items-" + digest.hexdigest()[:16]


def _table_rows(layout: io.RunLayout, name: str, config: JobConfig) -> int | None:
    marker = io.join(layout.table(name), io.MARKER)
    if name == EVENTS or not io.exists(marker, config.storage):
        return None
    return int(io.read_json(marker, config.storage).get("rows", 0))


def stage_fingerprint(stage: Stage, config: JobConfig, layout: io.RunLayout) -> tuple[str, dict[str, Any]]:
    """What decides a stage's output: its config sections and the versions of its inputs."""
    inputs = {name: _table_version(layout, name, config) for name in stage.inputs}
    config_hash = config.section_hash(*stage.sections)
    payload = {"stage": stage.name, "config": config_hash, "inputs": inputs}
    fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return fingerprint, {"config_hash": config_hash, "inputs": inputs}


def _marker_path(layout: io.RunLayout, stage: str) -> str:
    return layout.path(STAGE_MARKERS, f"{stage}.json")


def read_stage_marker(layout: io.RunLayout, stage: str, config: JobConfig) -> dict[str, Any] | None:
    path = _marker_path(layout, stage)
    if not io.exists(path, config.storage):
        return None
    try:
        return io.read_json(path, config.storage)
    except (ValueError, OSError):  # a marker cut short is no marker
        return None


def _is_done(stage: Stage, marker: dict[str, Any] | None, fingerprint: str, layout: io.RunLayout, config: JobConfig) -> bool:
    if not marker or marker.get("fingerprint") != fingerprint:
        return False
    recorded = marker.get("outputs", {})
    return all(_table_version(layout, name, config) == recorded.get(name) for name in stage.outputs)


# --- resource sampling ----------------------------------------------------------------------------


class _PeakSampler:
    """Peak driver RSS (psutil) and peak cluster object-store use (one raylet RPC) while a stage runs."""

    def __init__(self, interval_s: float = 0.5, store_every: int = 4):
        import psutil

        self._process = psutil.Process()
        self._interval = interval_s
        self._store_every = store_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)
        self._state = None
        self.peak_rss = 0
        self.peak_store: int | None = None

    def __enter__(self) -> "_PeakSampler":
        self._sample(store=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample(store=False)

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(self._interval):
            tick += 1
            self._sample(store=tick % self._store_every == 0)

    def _sample(self, store: bool) -> None:
        try:
            self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
        except Exception:  # noqa: BLE001 - sampling must never fail a stage
            pass
        if store:
            used = self._object_store_used()
            if used is not None:
                self.peak_store = max(self.peak_store or 0, used)

    def _object_store_used(self) -> int | None:
        if self._state is False:
            return None
        try:
            import ray
            from ray._private.internal_api import get_memory_info_reply, get_state_from_address

            if self._state is None:
                self._state = get_state_from_address(ray.get_runtime_context().gcs_address)
            reply = get_memory_info_reply(self._state, timeout_seconds=5.0)
            return int(reply.store_stats.object_store_bytes_used)
        except Exception:  # noqa: BLE001 - an internal API; without it the figure is just left out
            self._state = False
            return None


# --- the run --------------------------------------------------------------------------------------


def _utc_today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def resolve_run(config: JobConfig) -> tuple[str, dt.date]:
    """Run id and run date: explicit values first; a run folder that exists keeps the date it started with."""
    run_date = config.run_date
    run_id = config.run_id or (run_date or _utc_today()).isoformat()
    if run_date is None:
        layout = io.RunLayout.for_run(config.root, run_id)
        recorded = layout.path(STAGE_MARKERS, "run.json")
        if io.exists(recorded, config.storage):
            run_date = dt.date.fromisoformat(io.read_json(recorded, config.storage)["run_date"])
        elif config.run_id is None:
            run_date = dt.date.fromisoformat(run_id)
        else:
            run_date = _utc_today()
    return run_id, run_date


def _stage_summary(stage: Stage, layout: io.RunLayout, config: JobConfig, result: Any, seconds: float,
                   sampler: _PeakSampler) -> dict[str, Any]:
    result = result if isinstance(result, dict) else {}
    outputs = {name: _table_rows(layout, name, config) for name in stage.outputs}
    input_rows = [_table_rows(layout, name, config) for name in stage.inputs]
    known_inputs = [r for r in input_rows if r is not None]
    quarantined = result.get("quarantined", result.get("rows_quarantined", outputs.get("quarantine")))
    rows_out = result.get("rows_out")
    if rows_out is None:
        # the stage's main table: the first it publishes that is not the quarantine
        main = [rows for name, rows in outputs.items() if name != "quarantine" and rows is not None]
        rows_out = main[0] if main else None
    rows_in = result.get("rows_in")
    if rows_in is None and known_inputs:
        rows_in = known_inputs[0]
    return {
        "status": "ran",
        "seconds": round(seconds, 2),
        "rows_in": rows_in,
        "rows_out": rows_out,
        "quarantined": quarantined or 0,
        "tables": {name: rows for name, rows in outputs.items() if rows is not None},
        "peak_driver_rss_mb": round(sampler.peak_rss / 2**20, 1),
        "peak_object_store_mb": None if sampler.peak_store is None else round(sampler.peak_store / 2**20, 1),
        "result": _jsonable(result),
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _write_summary(layout: io.RunLayout, config: JobConfig, summary: dict[str, Any]) -> None:
    io.write_json(layout.path("summary.json"), summary, config.storage)


def run_pipeline(config: JobConfig, stages: Sequence[Stage] = STAGES) -> dict[str, Any]:
    """Run the configured stages in order, skipping finished ones; returns the run summary."""
    selected = [s for s in stages if s.name in config.stages]
    if any(s.name == "resolve" for s in selected) and not config.events:
        raise UserError("the resolve stage needs `events:` in the config: a file, folder or glob of event files.")
    io.check_bucket(config.root, config.storage)
    run_id, run_date = resolve_run(config)
    update: dict[str, Any] = {"run_id": run_id, "run_date": run_date}
    if config.export.root is None:  # ROOT/runs/... and ROOT/exports/... share ROOT unless told otherwise
        update["export"] = config.export.model_copy(update={"root": config.root})
    config = config.model_copy(update=update)
    layout = io.RunLayout.for_run(config.root, run_id)
    with run_lease(layout.path(STAGE_MARKERS, "lease.json"), run_id, config.storage):
        return _run_stages(config, layout, selected, stages)


def _run_stages(config: JobConfig, layout: io.RunLayout, selected: Sequence[Stage], stages: Sequence[Stage]) -> dict[str, Any]:
    run_id, run_date = config.run_id, config.run_date
    io.write_json(layout.path(STAGE_MARKERS, "run.json"), {"run_id": run_id, "run_date": run_date.isoformat()},
                  config.storage)

    started = time.monotonic()
    summary: dict[str, Any] = {
        "run_id": run_id,
        "run_date": run_date.isoformat(),
        "run_dir": layout.run_dir,
        "status": "running",
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "stages": {},
    }
    log.info("run %s (run date %s) in %s: stages %s", run_id, run_date, layout.run_dir, " -> ".join(s.name for s in selected))
    ray_up = False
    with contextlib.ExitStack() as ray_started:  # Ray starts with the first stage that has work to do
        for index, stage in enumerate(selected, 1):
            tag = f"[{index}/{len(selected)}] {stage.name}"
            fingerprint, read = stage_fingerprint(stage, config, layout)
            marker = read_stage_marker(layout, stage.name, config)
            if _is_done(stage, marker, fingerprint, layout, config):
                summary["stages"][stage.name] = {**marker.get("summary", {}), "status": "skipped"}
                log.info("%s: done already (inputs and config unchanged), skipped", tag)
                continue
            _invalidate(layout, config, stage, stages)
            if not ray_up:
                ray_started.enter_context(ray_session(config.ray))
                ray_up = True
            log.info("%s: started", tag)
            stage_started = time.monotonic()
            try:
                with _PeakSampler() as sampler:
                    result = stage.function()(config, run_dir=layout.run_dir)
            except BaseException as exc:
                seconds = time.monotonic() - stage_started
                log.error("%s: failed after %.1fs", tag, seconds)
                summary["stages"][stage.name] = {"status": "failed", "seconds": round(seconds, 2),
                                                 "error": f"{type(exc).__name__}: {exc}"[:2000]}
                summary["status"] = "failed"
                _write_summary(layout, config, summary)
                raise
            seconds = time.monotonic() - stage_started
            stage_summary = _stage_summary(stage, layout, config, result, seconds, sampler)
            io.write_json(_marker_path(layout, stage.name), {
                "stage": stage.name,
                "run_id": run_id,
                "fingerprint": fingerprint,
                **read,
                "outputs": {name: _table_version(layout, name, config) for name in stage.outputs},
                "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "summary": stage_summary,
            }, config.storage)
            summary["stages"][stage.name] = stage_summary
            _write_summary(layout, config, summary)
            log.info("%s: done in %.1fs (rows in %s, out %s%s; total %.1fs)", tag, seconds,
                     _fmt(stage_summary["rows_in"]), _fmt(stage_summary["rows_out"]),
                     f", quarantined {stage_summary['quarantined']}" if stage_summary["quarantined"] else "",
                     time.monotonic() - started)
    summary["status"] = "succeeded"
    summary["seconds"] = round(time.monotonic() - started, 2)
    summary["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    _write_summary(layout, config, summary)
    log.info("run %s finished in %.1fs\n%s", run_id, summary["seconds"], format_summary(summary))
    # what the CLI prints: the figures of the table; the stages' own details stay in summary.json
    brief = ("status", "seconds", "rows_in", "rows_out", "quarantined", "peak_driver_rss_mb", "peak_object_store_mb")
    return {**{k: v for k, v in summary.items() if k != "stages"}, "summary_path": layout.path("summary.json"),
            "stages": {name: {k: s[k] for k in brief if k in s} for name, s in summary["stages"].items()}}


def _invalidate(layout: io.RunLayout, config: JobConfig, stage: Stage, stages: Sequence[Stage]) -> None:
    """Remove the markers of `stage` and of every stage after it: they must not outlive a rerun."""
    names = [s.name for s in stages]
    for name in names[names.index(stage.name):]:
        io.delete(_marker_path(layout, name), config.storage)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_summary(summary: dict[str, Any]) -> str:
    """The per-stage table printed at the end of a run."""
    header = ("stage", "status", "seconds", "rows in", "rows out", "quarantined", "driver MB", "store MB")
    rows = [header]
    for name, stage in summary.get("stages", {}).items():
        rows.append((name, stage.get("status", ""), _fmt(stage.get("seconds")), _fmt(stage.get("rows_in")),
                     _fmt(stage.get("rows_out")), _fmt(stage.get("quarantined")),
                     _fmt(stage.get("peak_driver_rss_mb")), _fmt(stage.get("peak_object_store_mb"))))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- the demo -------------------------------------------------------------------------------------


def run_demo(out: str = "demo-out", persons: int = 3000) -> str:
    """Generate a sample, run every stage on a local Ray over local disk, say where everything landed."""
    if io.is_s3(out):
        raise UserError("`segments demo` writes to a local folder; use `segments run --config` for s3:// roots.")
    from jobs.generate import run_generate

    out = os.path.abspath(out)
    events = io.join(out, "events")
    config = JobConfig(events=events, root=out, run_id="demo")
    params = {"persons": persons, "partners": DEMO_PARTNERS, "days": DEMO_DAYS, "seed": DEMO_SEED}
    stamp = io.join(events, "_demo.json")
    if io.exists(stamp, config.storage) and io.read_json(stamp, config.storage) == params and io.list_files(events, config.storage):
        log.info("demo sample in %s is current (%s), not regenerated", events, params)
    else:
        log.info("generating the demo sample in %s: %s", events, params)
        io.delete(events, config.storage)
        run_generate(config, out=events, **params)
        io.write_json(stamp, params, config.storage)
    summary = run_pipeline(config)
    layout = io.RunLayout(summary["run_dir"])
    export_root = io.join(out, "exports")
    partners = sorted({posixpath.basename(posixpath.dirname(posixpath.dirname(posixpath.dirname(f))))
                       for f in io.list_files(export_root, config.storage) if f.endswith(".parquet")}) \
        if io.exists(export_root, config.storage) else []
    exports = (f"{export_root}  ({len(partners)} partners: {', '.join(partners)})" if partners else
               f"none: no segment met its training minimums, see {layout.path('models', 'report.html')}")
    # the per-stage table was just logged with the run's end; this says where to look
    lines = [
        f"demo run {summary['status']} in {summary['seconds']:.0f}s",
        f"events:   {events}",
        f"run:      {layout.run_dir}  (summary.json, personas/, features/, models/, scores/ ...)",
        f"report:   {layout.path('models', 'report.html')}",
        f"exports:  {exports}",
    ]
    return "\n".join(lines)
