"""The pipeline's mechanics (markers, skip, rerun, invalidation, run ids, summary) and, with the real
stages, resume after SIGKILL and a Ray worker killed mid-stage."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import io
from jobs.config import JobConfig, StorageConfig, load_config
from jobs.errors import UserError
from jobs.pipeline import EVENTS, STAGES, Stage, format_summary, run_pipeline

REPO = Path(__file__).resolve().parents[1]


# --- mechanics, with small stand-in stages defined here (the product's STAGES are the real ones) ------


@dataclasses.dataclass(frozen=True)
class ToyStage(Stage):
    fn: Callable = None

    def function(self):
        return self.fn


class Calls:
    def __init__(self):
        self.counts: dict[str, int] = {}
        self.fail: set[str] = set()

    def stage(self, name: str, reads: str | None, writes: str) -> Callable:
        def run(config: JobConfig, run_dir: str) -> dict:
            self.counts[name] = self.counts.get(name, 0) + 1
            if name in self.fail:
                raise RuntimeError(f"{name} broke")
            layout = io.RunLayout(run_dir)
            if reads is None:
                table = pq.read_table(io.list_files(config.events, config.storage)[0])
            else:
                table = io.read_arrow(layout.table(reads), config.storage)
            table = table.append_column(name, pa.array([config.features.top_categories] * table.num_rows))
            io.write_arrow(table, layout.table(writes), config.storage)
            return {"rows_in": table.num_rows, "rows_out": table.num_rows}

        return run


def toy_stages(calls: Calls) -> tuple[Stage, ...]:
    chain = [("resolve", None, "t_resolve", ("events", "identity"), (EVENTS,)),
             ("features", "t_resolve", "t_features", ("features",), ("t_resolve",)),
             ("train", "t_features", "t_train", ("training",), ("t_features",)),
             ("score", "t_train", "t_score", ("scoring",), ("t_train",)),
             ("export", "t_score", "t_export", ("export", "run_date"), ("t_score",))]
    return tuple(ToyStage(name, "unused:unused", sections, inputs, (writes,), fn=calls.stage(name, reads, writes))
                 for name, reads, writes, sections, inputs in chain)


@pytest.fixture()
def toy(tmp_path, ray_cluster):
    events = tmp_path / "events"
    events.mkdir()
    pq.write_table(pa.table({"x": [1, 2, 3]}), events / "events-p1-0000.parquet")
    calls = Calls()
    config = JobConfig(events=str(events), root=str(tmp_path / "root"), run_id="r1")
    return config, calls, toy_stages(calls)


def ran(summary: dict) -> list[str]:
    return [name for name, s in summary["stages"].items() if s["status"] == "ran"]


def test_rerun_skips_finished_stages_and_config_change_reruns_downstream(toy):
    config, calls, stages = toy
    first = run_pipeline(config, stages)
    assert ran(first) == ["resolve", "features", "train", "score", "export"]
    run = Path(first["run_dir"])
    marker = json.loads((run / "_stages" / "features.json").read_text())
    assert marker["config_hash"] == config.section_hash("features")
    assert marker["inputs"]["t_resolve"] == io.read_marker(str(run / "t_resolve"), config.storage)["write_id"]
    assert marker["outputs"]["t_features"] == io.read_marker(str(run / "t_features"), config.storage)["write_id"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert summary["stages"]["resolve"]["rows_in"] == 3 and summary["stages"]["resolve"]["rows_out"] == 3
    assert summary["stages"]["resolve"]["peak_driver_rss_mb"] > 10
    assert "seconds" in summary["stages"]["export"] and summary["stages"]["resolve"]["tables"] == {"t_resolve": 3}
    assert summary["stages"]["resolve"]["result"] == {"rows_in": 3, "rows_out": 3}
    assert "result" not in first["stages"]["resolve"], "the printed summary stays brief; details in summary.json"

    second = run_pipeline(config, stages)
    assert ran(second) == [] and all(s["status"] == "skipped" for s in second["stages"].values())
    assert calls.counts == dict.fromkeys(calls.counts, 1)
    assert "skipped" in format_summary(second)

    # a section only the features stage reads: resolve is kept, features and everything after rerun
    changed = config.model_copy(update={"features": config.features.model_copy(update={"top_categories": 3})})
    third = run_pipeline(changed, stages)
    assert ran(third) == ["features", "train", "score", "export"]
    assert io.read_arrow(str(run / "t_export"), config.storage).column("features").to_pylist() == [3, 3, 3]

    # a section only export reads: just export
    fourth = run_pipeline(changed.model_copy(update={"run_date": dt.date(2026, 5, 1)}), stages)
    assert ran(fourth) == ["export"]


def test_changed_events_or_republished_table_rerun_from_there(toy, tmp_path):
    config, calls, stages = toy
    run_pipeline(config, stages)
    time.sleep(0.01)
    pq.write_table(pa.table({"x": [1, 2, 3, 4]}), tmp_path / "events" / "events-p1-0000.parquet")
    assert ran(run_pipeline(config, stages)) == ["resolve", "features", "train", "score", "export"]

    # someone republished an output by hand: that stage's marker no longer matches its output
    layout = io.RunLayout.for_run(config.root, "r1")
    io.write_arrow(pa.table({"x": [9]}), layout.table("t_train"), config.storage)
    assert ran(run_pipeline(config, stages)) == ["train", "score", "export"]


def test_markers_and_summary_on_s3(toy, s3_bucket, storage):
    config, calls, stages = toy
    config = config.model_copy(update={"root": s3_bucket + "/segments", "storage": storage})
    assert ran(run_pipeline(config, stages)) == ["resolve", "features", "train", "score", "export"]
    changed = config.model_copy(update={"scoring": config.scoring.model_copy(update={"top_percent": 5.0})})
    summary = run_pipeline(changed, stages)
    assert ran(summary) == ["score", "export"]
    layout = io.RunLayout.for_run(config.root, "r1")
    assert io.read_json(layout.path("summary.json"), storage)["stages"]["resolve"]["status"] == "skipped"
    assert io.read_json(layout.path("_stages", "export.json"), storage)["inputs"]["t_score"] == \
        io.read_marker(layout.table("t_score"), storage)["write_id"]


def test_failed_stage_resumes_where_it_stopped(toy):
    config, calls, stages = toy
    calls.fail.add("train")
    with pytest.raises(RuntimeError, match="train broke"):
        run_pipeline(config, stages)
    run = Path(io.RunLayout.for_run(config.root, "r1").run_dir)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["stages"]["train"]["status"] == "failed"
    assert "train broke" in summary["stages"]["train"]["error"]
    assert sorted(p.stem for p in (run / "_stages").glob("*.json")) == ["features", "resolve", "run"]

    calls.fail.clear()
    assert ran(run_pipeline(config, stages)) == ["train", "score", "export"]
    assert calls.counts == {"resolve": 1, "features": 1, "train": 2, "score": 1, "export": 1}


def test_run_id_comes_from_the_run_date_and_stages_can_be_listed(toy):
    config, calls, stages = toy
    scheduled = config.model_copy(update={"run_id": None, "run_date": dt.date(2026, 3, 1), "stages": ["resolve"]})
    summary = run_pipeline(scheduled, stages)
    assert summary["run_id"] == "2026-03-01" and summary["run_dir"].endswith("/runs/2026-03-01")
    assert list(summary["stages"]) == ["resolve"]

    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    unscheduled = config.model_copy(update={"run_id": None, "stages": ["resolve"]})
    assert run_pipeline(unscheduled, stages)["run_id"] == today

    # an explicit run id keeps the run date it was first started with
    named = config.model_copy(update={"run_id": "named", "stages": ["resolve"]})
    first = run_pipeline(named, stages)
    assert first["run_date"] == today
    marker = Path(first["run_dir"]) / "_stages" / "run.json"
    marker.write_text(json.dumps({"run_id": "named", "run_date": "2026-01-31"}))
    assert run_pipeline(named, stages)["run_date"] == "2026-01-31"


def test_config_problems_are_user_errors(tmp_path, ray_cluster):
    with pytest.raises(UserError, match="events"):
        run_pipeline(JobConfig(root=str(tmp_path)))
    missing = Stage("resolve", "jobs.no_such_module:run", ("events",), (EVENTS,), ())
    with pytest.raises(UserError, match="not part of this build"):
        run_pipeline(JobConfig(root=str(tmp_path), events=str(tmp_path), run_id="x"), (missing,))
    with pytest.raises(UserError, match="stages"):
        load_config(None, {"stages": ["resolve", "deploy"]})


def test_stage_table_is_consistent_with_the_agreed_layout():
    names = [s.name for s in STAGES]
    assert names == ["resolve", "features", "train", "score", "export"]
    produced = {EVENTS}
    for stage in STAGES:
        assert set(stage.inputs) <= produced, f"{stage.name} reads a table no earlier stage writes"
        produced |= set(stage.outputs)
        JobConfig().section_hash(*stage.sections)  # every section exists


# --- with the real stages: resume after SIGKILL, a Ray worker killed mid-stage -----------------------

VOLATILE = {"created_at", "write_id", "written_at", "generated_at", "seconds"}


def _stage_modules(names) -> None:
    for stage in STAGES:
        if stage.name in names:
            pytest.importorskip(stage.entry.split(":")[0])


def _rows(table: pa.Table) -> list[str]:
    keep = [c for c in table.column_names if c not in VOLATILE]
    return sorted(json.dumps(row, sort_keys=True, default=str) for row in table.select(keep).to_pylist())


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE and not k.endswith("write_id")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def run_contents(root: Path, run_id: str) -> dict[str, object]:
    """Every published table of a run (rows, order-free), model cards and exports, minus write ids/times."""
    storage = StorageConfig()
    contents: dict[str, object] = {}
    run = root / "runs" / run_id
    for marker in sorted(run.rglob(io.MARKER)):
        table = marker.parent
        contents[str(table.relative_to(run))] = _rows(io.read_arrow(str(table), storage))
    for card in sorted(run.rglob("model_card.json")):
        contents[str(card.relative_to(run))] = _strip(json.loads(card.read_text()))
    exports = root / "exports"
    for manifest in sorted(exports.rglob("manifest.json")) if exports.exists() else []:
        folder = manifest.parent
        parts = [pq.read_table(p) for p in sorted(folder.glob("*.parquet"))]
        contents[str(folder.relative_to(root))] = _rows(pa.concat_tables(parts)) if parts else []
        contents[str(manifest.relative_to(root))] = _strip({k: v for k, v in json.loads(manifest.read_text()).items()
                                                            if k not in {"parts", "run_id"}})
    return contents


SAMPLE = dict(persons=300, partners=3, days=75, seed=11)
STAGE_NAMES = list(JobConfig().stages)


def small_job(events: Path, root: Path, **extra) -> dict:
    return {"events": str(events), "root": str(root), "run_id": "r", "run_date": "2026-03-20", "stages": STAGE_NAMES,
            "ray": {"num_partitions": 2},
            "segments": [{"name": "ecommerce_buyers", "kind": "ecommerce_buyers"}],  # one model keeps it quick
            "training": {"min_positives": 5, "min_negatives": 5, "num_boost_round": 10, "early_stopping_rounds": 5,
                         "report_every": 5},
            **extra}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ray_cluster):
    """A small generated sample and one uninterrupted run of every stage on the test session's Ray."""
    _stage_modules(STAGE_NAMES)
    from jobs.generate import run_generate

    base = tmp_path_factory.mktemp("pipeline")
    events = base / "events"
    run_generate(JobConfig(), out=str(events), **SAMPLE)
    started = time.monotonic()
    summary = run_pipeline(load_config(None, small_job(events, base / "reference")))
    assert summary["status"] == "succeeded"
    return {"base": base, "events": events, "summary": summary, "seconds": time.monotonic() - started,
            "contents": run_contents(base / "reference", "r")}


@pytest.fixture()
def cli_env():
    """Environment for `segments run` subprocesses: their own local Ray, never the test session's nor a
    `ray start` cluster (RAY_TMPDIR, short because Ray's sockets live under it)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "SEGMENTS_PROGRESS": "0"}
    env.pop("RAY_ADDRESS", None)
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rp-", dir="/tmp")
    yield env
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def _kill_tree(pids: set[int]) -> None:
    import psutil

    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


def test_run_killed_with_sigkill_resumes_to_the_same_outputs(reference, cli_env):
    import psutil
    import yaml

    base = reference["base"]
    config_file = base / "resume.yaml"
    config_file.write_text(yaml.safe_dump(small_job(reference["events"], base / "resumed")))
    run = base / "resumed" / "runs" / "r"
    command = [sys.executable, "-m", "jobs", "run", "--config", str(config_file)]
    log = open(base / "killed.log", "w")
    proc = subprocess.Popen(command, cwd=REPO, env=cli_env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not (run / "_stages" / "resolve.json").exists():
        assert proc.poll() is None, (base / "killed.log").read_text()[-3000:]
        assert time.time() < deadline, "the first stage did not finish in time"
        time.sleep(0.2)
    time.sleep(1.0)  # into the second stage
    assert proc.poll() is None, "the run ended before it could be killed"
    family = {proc.pid} | {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _kill_tree(family - {proc.pid})  # its local Ray, had it outlived the driver
    log.close()
    assert not (run / "_stages" / f"{STAGE_NAMES[-1]}.json").exists()

    done = subprocess.run(command, cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout)
    assert summary["stages"]["resolve"]["status"] == "skipped"
    assert summary["stages"][STAGE_NAMES[-1]]["status"] == "ran"
    resumed = run_contents(base / "resumed", "r")
    assert resumed.keys() == reference["contents"].keys()
    for key, rows in reference["contents"].items():
        assert resumed[key] == rows, f"{key} differs from the uninterrupted run"


def test_stage_survives_a_killed_ray_worker(reference, ray_cluster):
    import psutil

    raylets = [p for p in psutil.Process().children(recursive=True) if p.name() == "raylet"]
    assert raylets, "the test session's Ray has no raylet under this process"
    def busy_workers() -> dict[int, str]:
        busy = {}
        for worker in raylets[0].children():
            try:
                title = (worker.cmdline() or [""])[0]
            except psutil.Error:
                continue
            if title.startswith("ray::") and not title.startswith("ray::IDLE"):
                busy[worker.pid] = title
        return busy

    # actors alive before the stage (Ray Data's stats actor, an earlier stage's leftovers) are not its work
    before = busy_workers()
    internal = ("Actor", "Coordinator", "Requester", "Agent", "Manager", "Controller")
    killed: list[str] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set() and not killed:
            for pid, title in busy_workers().items():
                if pid not in before and not any(w in title for w in internal):
                    try:
                        psutil.Process(pid).kill()
                    except psutil.Error:
                        continue
                    killed.append(title)
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    root = reference["base"] / "worker-killed"
    try:
        summary = run_pipeline(load_config(None, small_job(reference["events"], root, stages=["resolve"])))
    finally:
        stop.set()
        thread.join(5)
    assert killed, "no busy Ray worker was seen to kill"
    print(f"killed Ray worker running {killed[0]!r} mid-stage")
    assert summary["stages"]["resolve"]["status"] == "ran"
    contents = run_contents(root, "r")
    for table in ("events_resolved", "personas", "identity_map", "quarantine"):
        assert contents[table] == reference["contents"][table], f"{table} differs after a worker was killed ({killed[0]})"


def test_cli_run_date_flag_names_a_backfill_run(reference, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from jobs.cli import app

    config_file = tmp_path / "job.yaml"
    job = small_job(reference["events"], tmp_path / "backfill")
    job.pop("run_id")
    config_file.write_text(yaml.safe_dump({**job, "stages": ["resolve"]}))
    result = CliRunner().invoke(app, ["run", "--config", str(config_file), "--run-date", "2026-03-18"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["run_id"] == "2026-03-18" and summary["run_date"] == "2026-03-18"
    assert (tmp_path / "backfill" / "runs" / "2026-03-18" / "_stages" / "resolve.json").exists()

    bad = CliRunner().invoke(app, ["run", "--config", str(config_file), "--run-date", "18/03/2026"])
    assert bad.exit_code == 2 and "--run-date" in bad.output


def test_a_live_lease_stops_a_second_run_and_a_dead_one_is_taken_over(toy, monkeypatch):
    import socket

    from jobs.run import lease

    monkeypatch.setattr(lease, "SETTLE_S", 0.0)
    config, calls, stages = toy
    stage_dir = Path(config.root) / "runs" / "r1" / "_stages"
    stage_dir.mkdir(parents=True)
    lease_file = stage_dir / "lease.json"
    holder = {"owner": "other", "run_id": "r1", "host": "worker-7", "pid": 4242, "started_at": "2026-03-01T03:00:00+00:00",
              "heartbeat": time.time()}
    lease_file.write_text(json.dumps(holder))
    with pytest.raises(UserError, match=r"run r1 is already running: host worker-7 pid 4242.*lease.json"):
        run_pipeline(config, stages)
    assert calls.counts == {}, "nothing ran under someone else's lease"

    # the same holder, silent for longer than the expiry: taken over
    lease_file.write_text(json.dumps({**holder, "heartbeat": time.time() - lease.EXPIRES_S - 1}))
    assert run_pipeline(config.model_copy(update={"stages": ["resolve"]}), stages)["status"] == "succeeded"
    assert not lease_file.exists(), "a finished run gives its lease back"

    # on this host, a holder whose process is gone (a SIGKILLed run) is taken over at once
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lease_file.write_text(json.dumps({**holder, "host": socket.gethostname(), "pid": dead.pid}))
    assert run_pipeline(config, stages)["status"] == "succeeded"
    assert not lease_file.exists()


def test_the_lease_is_given_back_when_a_stage_fails_and_beats_while_held(toy, monkeypatch):
    from jobs.run import lease

    monkeypatch.setattr(lease, "SETTLE_S", 0.0)
    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.05)
    config, calls, stages = toy
    lease_file = Path(config.root) / "runs" / "r1" / "_stages" / "lease.json"
    beats: list[float] = []

    def failing(config, run_dir):
        first = json.loads(lease_file.read_text())
        time.sleep(0.5)
        beats.extend([first["heartbeat"], json.loads(lease_file.read_text())["heartbeat"]])
        raise UserError("bad input")

    broken = tuple(dataclasses.replace(s, fn=failing) if s.name == "features" else s for s in stages)
    with pytest.raises(UserError, match="bad input"):
        run_pipeline(config, broken)
    assert beats[1] > beats[0], "the heartbeat moves while the run holds the lease"
    assert not lease_file.exists()


def test_demo_runs_every_stage_and_a_second_demo_only_looks(tmp_path, ray_cluster):
    """`segments demo` at its smallest sample: models, report and exports land; rerun regenerates nothing."""
    from typer.testing import CliRunner

    from jobs.cli import app

    out = tmp_path / "demo"
    first = CliRunner().invoke(app, ["demo", "--out", str(out), "--persons", "1000"])
    assert first.exit_code == 0, first.output
    assert "demo run succeeded" in first.stdout
    report = out / "runs" / "demo" / "models" / "report.html"
    assert f"report:   {report}" in first.stdout and report.exists()
    trained = [json.loads(c.read_text())["segment"] for c in out.glob("runs/demo/models/*/model_card.json")
               if json.loads(c.read_text())["status"] == "trained"]
    assert "ecommerce_buyers" in trained
    manifests = list((out / "exports").glob("*/ecommerce_buyers/*/manifest.json"))
    assert manifests and f"exports:  {out / 'exports'}  (" in first.stdout

    again = CliRunner().invoke(app, ["demo", "--out", str(out), "--persons", "1000"])
    assert again.exit_code == 0, again.output
    summary = json.loads((out / "runs" / "demo" / "summary.json").read_text())
    assert {s["status"] for s in summary["stages"].values()} == {"skipped"}

    too_small = CliRunner().invoke(app, ["demo", "--out", str(out), "--persons", "200"])
    assert too_small.exit_code == 2 and "--persons" in too_small.output
