"""The runner's mechanics with small stand-in stages: order and inputs derived from signatures, markers,
skip, rerun of what reads a changed input, resume after a failure, run ids, the lease, summary.json."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.config import ExportView, FeaturesView, JobConfig, PlanView, ResolveView, ScoreView, TrainView
from jobs.errors import UserError
from jobs.run.layout import RunLayout
from jobs.run.pipeline import run_pipeline
from jobs.run.plan import RunPlan, SegmentCutoffs
from jobs.run.stage import EVENTS, PLAN, InputEvents, RunIdentity, Stage, ordered
from jobs.run.summary import format_summary
from jobs.storage import TableIn, TableOut, list_files, read_json, read_marker

CALLS: dict[str, int] = {}
FAIL: set[str] = set()


def _count(name: str) -> None:
    CALLS[name] = CALLS.get(name, 0) + 1
    if name in FAIL:
        raise RuntimeError(f"{name} broke")


def toy_resolve(view: ResolveView, events: InputEvents, events_resolved: TableOut) -> dict:
    _count("toy_resolve")
    table = pq.read_table(list_files(events.path, events.storage)[0])
    table = table.append_column("gap", pa.array([view.identity.session_gap_minutes] * table.num_rows))
    events_resolved.write_arrow(table)
    return {"rows_in": table.num_rows, "rows_out": table.num_rows}


def toy_plan(view: PlanView, identity: RunIdentity, events_resolved: TableIn) -> RunPlan:
    _count("toy_plan")
    as_of = dt.date(2026, 3, 1)
    cutoffs = {s.name: SegmentCutoffs(s.horizon_days, as_of, as_of, as_of, True) for s in view.segments}
    return RunPlan(
        identity.run_id, identity.run_date, as_of, tuple(sorted({s.category or "-" for s in view.segments})), cutoffs
    )


def toy_features(view: FeaturesView, plan: RunPlan, events_resolved: TableIn, features: TableOut) -> dict:
    _count("toy_features")
    table = events_resolved.arrow()
    table = table.append_column("days", pa.array([view.features.comparison_days] * table.num_rows))
    table = table.append_column("categories", pa.array([len(plan.categories)] * table.num_rows))
    features.write_arrow(table)
    return {}


def toy_train(view: TrainView, features: TableIn, models: TableOut) -> dict:
    _count("toy_train")
    models.write_arrow(features.arrow())
    return {}


def toy_score(view: ScoreView, models: TableIn, scores: TableOut) -> dict:
    _count("toy_score")
    table = models.arrow()
    scores.write_arrow(table.append_column("top_percent", pa.array([view.scoring.top_percent] * table.num_rows)))
    return {}


def toy_export(view: ExportView, identity: RunIdentity, scores: TableIn, personas: TableOut) -> dict:
    _count("toy_export")
    personas.write_arrow(
        scores.arrow().append_column("run_date", pa.array([identity.run_date] * scores.marker["rows"]))
    )
    return {}


TOYS = [toy_export, toy_score, toy_train, toy_features, toy_plan, toy_resolve]  # any order: derived
STAGE_NAMES = ["toy_resolve", "toy_plan", "toy_features", "toy_train", "toy_score", "toy_export"]


@pytest.fixture()
def toy(tmp_path, ray_cluster):
    CALLS.clear()
    FAIL.clear()
    events = tmp_path / "events"
    events.mkdir()
    pq.write_table(pa.table({"x": [1, 2, 3]}), events / "events-p1-0000.parquet")
    config = JobConfig(events=str(events), root=str(tmp_path / "root"), run_id="r1", stages=["resolve"])
    stages = ordered([Stage.of(fn, name=fn.__name__) for fn in TOYS])
    return config, stages


def ran(summary: dict) -> list[str]:
    return [name for name, s in summary["stages"].items() if s["status"] == "ran"]


def test_stages_declare_reads_and_writes_in_their_signatures():
    stages = ordered([Stage.of(fn, name=fn.__name__) for fn in TOYS])
    assert [s.name for s in stages] == STAGE_NAMES
    by_name = {s.name: s for s in stages}
    assert by_name["toy_resolve"].reads == (EVENTS,) and by_name["toy_resolve"].writes == ("events_resolved",)
    assert by_name["toy_plan"].writes == (PLAN,) and by_name["toy_plan"].takes_identity
    assert by_name["toy_features"].reads == (PLAN, "events_resolved") and by_name["toy_features"].view is FeaturesView

    def untyped(view, events_resolved: TableIn) -> dict:
        return {}

    def foreign(view: FeaturesView, config: JobConfig) -> dict:
        return {}

    with pytest.raises(TypeError, match="no type"):
        Stage.of(untyped)
    with pytest.raises(TypeError, match="not a stage input or output"):
        Stage.of(foreign)

    def loop_a(view: FeaturesView, scores: TableIn, features: TableOut) -> dict:
        return {}

    def loop_b(view: ScoreView, features: TableIn, scores: TableOut) -> dict:
        return {}

    with pytest.raises(ValueError, match="cycle"):
        ordered([Stage.of(loop_a), Stage.of(loop_b)])
    with pytest.raises(ValueError, match="written by two stages"):
        ordered([Stage.of(loop_a), Stage.of(toy_features)])


def test_rerun_skips_finished_stages_and_a_changed_view_reruns_what_reads_it(toy):
    config, stages = toy
    first = run_pipeline(config, stages, names=STAGE_NAMES)
    assert ran(first) == STAGE_NAMES
    run = Path(first["run_dir"])
    marker = json.loads((run / "_stages" / "toy_features.json").read_text())
    assert marker["view"] == FeaturesView.from_config(config).fingerprint()
    assert marker["inputs"]["events_resolved"] == read_marker(str(run / "events_resolved"), config.storage)["write_id"]
    assert marker["outputs"]["features"] == read_marker(str(run / "features"), config.storage)["write_id"]
    assert json.loads((run / "plan.json").read_text())["as_of"] == "2026-03-01"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert summary["stages"]["toy_resolve"]["rows_in"] == 3 and summary["stages"]["toy_resolve"]["rows_out"] == 3
    assert summary["stages"]["toy_resolve"]["peak_driver_rss_mb"] > 10
    assert summary["stages"]["toy_resolve"]["tables"] == {"events_resolved": 3}
    assert "result" not in first["stages"]["toy_resolve"], "the printed summary stays brief; details in summary.json"

    second = run_pipeline(config, stages, names=STAGE_NAMES)
    assert ran(second) == [] and all(s["status"] == "skipped" for s in second["stages"].values())
    assert CALLS == dict.fromkeys(STAGE_NAMES, 1)
    assert "skipped" in format_summary(second)

    # a setting only the features stage reads: features and what reads its output rerun, nothing else
    changed = config.model_copy(update={"features": config.features.model_copy(update={"comparison_days": 3})})
    assert ran(run_pipeline(changed, stages, names=STAGE_NAMES)) == [
        "toy_features",
        "toy_train",
        "toy_score",
        "toy_export",
    ]
    assert read_json(str(run / "summary.json"), config.storage)["stages"]["toy_resolve"]["status"] == "skipped"

    # a tuning field (partitions) decides nothing: nothing reruns
    tuned = changed.model_copy(update={"ray": changed.ray.model_copy(update={"num_partitions": 3})})
    assert ran(run_pipeline(tuned, stages, names=STAGE_NAMES)) == []

    # the run date: the plan stage reruns (it takes the identity), its decisions do not change, so only the
    # stage that takes the run identity itself (export) runs again
    dated = tuned.model_copy(update={"run_date": dt.date(2026, 5, 1)})
    assert ran(run_pipeline(dated, stages, names=STAGE_NAMES)) == ["toy_plan", "toy_export"]


def test_a_changed_segment_list_changes_the_plan_and_reruns_what_reads_it(toy):
    config, stages = toy
    run_pipeline(config, stages, names=STAGE_NAMES)
    segments = [*config.segments, config.segments[0].model_copy(update={"name": "toys", "category": "toys"})]
    changed = config.model_copy(update={"segments": segments})
    assert ran(run_pipeline(changed, stages, names=STAGE_NAMES)) == [
        "toy_plan",
        "toy_features",
        "toy_train",
        "toy_score",
        "toy_export",
    ]


def test_changed_events_or_a_republished_table_rerun_from_there(toy, tmp_path):
    config, stages = toy
    run_pipeline(config, stages, names=STAGE_NAMES)
    time.sleep(0.01)
    pq.write_table(pa.table({"x": [1, 2, 3, 4]}), tmp_path / "events" / "events-p1-0000.parquet")
    assert ran(run_pipeline(config, stages, names=STAGE_NAMES)) == [
        "toy_resolve",
        "toy_plan",
        "toy_features",
        "toy_train",
        "toy_score",
        "toy_export",
    ]
    # someone republished an output by hand: that stage's marker no longer matches its output
    layout = RunLayout.for_run(config.root, "r1")
    TableOut("models", layout.table("models"), config.storage).write_arrow(pa.table({"x": [9]}))
    assert ran(run_pipeline(config, stages, names=STAGE_NAMES)) == ["toy_train", "toy_score", "toy_export"]


def test_markers_and_summary_on_s3(toy, s3_bucket, storage):
    config, stages = toy
    config = config.model_copy(update={"root": s3_bucket + "/segments", "storage": storage})
    assert ran(run_pipeline(config, stages, names=STAGE_NAMES)) == STAGE_NAMES
    changed = config.model_copy(update={"scoring": config.scoring.model_copy(update={"top_percent": 5.0})})
    assert ran(run_pipeline(changed, stages, names=STAGE_NAMES)) == ["toy_score", "toy_export"]
    layout = RunLayout.for_run(config.root, "r1")
    assert read_json(layout.summary, storage)["stages"]["toy_resolve"]["status"] == "skipped"
    assert (
        read_json(layout.stage_marker("toy_export"), storage)["inputs"]["scores"]
        == read_marker(layout.table("scores"), storage)["write_id"]
    )


def test_a_failed_stage_resumes_where_it_stopped(toy):
    config, stages = toy
    FAIL.add("toy_train")
    with pytest.raises(RuntimeError, match="toy_train broke"):
        run_pipeline(config, stages, names=STAGE_NAMES)
    run = Path(RunLayout.for_run(config.root, "r1").run_dir)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["stages"]["toy_train"]["status"] == "failed"
    assert "toy_train broke" in summary["stages"]["toy_train"]["error"]
    assert sorted(p.stem for p in (run / "_stages").glob("*.json")) == [
        "run",
        "toy_features",
        "toy_plan",
        "toy_resolve",
    ]
    FAIL.clear()
    assert ran(run_pipeline(config, stages, names=STAGE_NAMES)) == ["toy_train", "toy_score", "toy_export"]
    assert CALLS == {**dict.fromkeys(STAGE_NAMES, 1), "toy_train": 2}


def test_a_stage_alone_runs_the_plan_it_needs_and_refuses_missing_inputs(toy):
    config, stages = toy
    with pytest.raises(
        UserError, match="reads events_resolved of run r1, which the toy_resolve stage has not produced"
    ):
        run_pipeline(config, stages, names=["toy_features"])
    run_pipeline(config, stages, names=["toy_resolve"])
    summary = run_pipeline(config, stages, names=["toy_features"])
    assert ran(summary) == ["toy_plan", "toy_features"], "the plan is derived: it runs when a stage needs it"
    with pytest.raises(UserError, match="unknown stage"):
        run_pipeline(config, stages, names=["deploy"])


def test_run_ids_come_from_the_run_date_and_a_run_keeps_its_first_date(toy):
    config, stages = toy
    scheduled = config.model_copy(update={"run_id": None, "run_date": dt.date(2026, 3, 1)})
    summary = run_pipeline(scheduled, stages, names=["toy_resolve"])
    assert summary["run_id"] == "2026-03-01" and summary["run_dir"].endswith("/runs/2026-03-01")
    assert list(summary["stages"]) == ["toy_resolve"]

    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    assert run_pipeline(config.model_copy(update={"run_id": None}), stages, names=["toy_resolve"])["run_id"] == today

    named = config.model_copy(update={"run_id": "named"})
    first = run_pipeline(named, stages, names=["toy_resolve"])
    assert first["run_date"] == today
    (Path(first["run_dir"]) / "_stages" / "run.json").write_text(
        json.dumps({"run_id": "named", "run_date": "2026-01-31"})
    )
    assert run_pipeline(named, stages, names=["toy_resolve"])["run_date"] == "2026-01-31"

    # a run folder given by hand (not ROOT/runs/ID) is named after its folder
    by_hand = run_pipeline(
        config.model_copy(update={"run_id": None}),
        stages,
        names=["toy_resolve"],
        layout=RunLayout(str(Path(config.root) / "elsewhere" / "x7")),
    )
    assert by_hand["run_id"] == "x7"


def test_a_live_lease_stops_a_second_run_and_a_dead_one_is_taken_over(toy, monkeypatch):
    import socket

    from jobs.run import lease

    monkeypatch.setattr(lease, "SETTLE_S", 0.0)
    config, stages = toy
    lease_file = Path(RunLayout.for_run(config.root, "r1").lease)
    lease_file.parent.mkdir(parents=True)
    holder = {
        "owner": "other",
        "run_id": "r1",
        "host": "worker-7",
        "pid": 4242,
        "started_at": "2026-03-01T03:00:00+00:00",
        "heartbeat": time.time(),
    }
    lease_file.write_text(json.dumps(holder))
    with pytest.raises(UserError, match=r"run r1 is already running: host worker-7 pid 4242.*lease.json"):
        run_pipeline(config, stages, names=STAGE_NAMES)
    assert CALLS == {}, "nothing ran under someone else's lease"

    lease_file.write_text(json.dumps({**holder, "heartbeat": time.time() - lease.EXPIRES_S - 1}))
    assert run_pipeline(config, stages, names=["toy_resolve"])["status"] == "succeeded"
    assert not lease_file.exists(), "a finished run gives its lease back"

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lease_file.write_text(json.dumps({**holder, "host": socket.gethostname(), "pid": dead.pid}))
    assert run_pipeline(config, stages, names=STAGE_NAMES)["status"] == "succeeded"
    assert not lease_file.exists()

    lease_file.write_text('{"owner": "torn')  # what a crashed non-atomic writer could leave: no lease
    assert run_pipeline(config, stages, names=["toy_resolve"])["status"] == "succeeded"


def test_runners_starting_at_the_same_moment_one_holds_the_lease(tmp_path):
    import threading

    from jobs.config import StorageConfig
    from jobs.run.lease import run_lease

    path = str(tmp_path / "_stages" / "lease.json")
    start = threading.Barrier(4)
    outcomes: list[str] = []

    def runner() -> None:
        start.wait()
        try:
            with run_lease(path, "r1", StorageConfig()):
                outcomes.append("held")
                time.sleep(0.5)  # longer than the others take to try
        except UserError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=runner) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("held") == 1, outcomes
    assert all("run r1 " in o for o in outcomes if o != "held")
    assert not Path(path).exists(), "the holder gives the lease back"


def test_a_store_without_conditional_writes_still_gets_a_lease(tmp_path, monkeypatch):
    from jobs.config import StorageConfig
    from jobs.run import lease

    def refuse(*args, **kwargs):
        raise NotImplementedError("the store does not take conditional writes")

    monkeypatch.setattr(lease, "create_json", refuse)
    monkeypatch.setattr(lease, "SETTLE_S", 0.0)
    path = tmp_path / "_stages" / "lease.json"
    with lease.run_lease(str(path), "r1", StorageConfig()) as held:
        assert json.loads(path.read_text())["owner"] == held["owner"], "written and read back instead"
    assert not path.exists()


def test_the_lease_is_given_back_when_a_stage_fails_and_beats_while_held(toy, monkeypatch):
    from jobs.run import lease

    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.05)
    config, _ = toy
    lease_file = Path(RunLayout.for_run(config.root, "r1").lease)
    beats: list[float] = []

    def failing(view: FeaturesView, events_resolved: TableIn, features: TableOut) -> dict:
        first = json.loads(lease_file.read_text())
        deadline = time.time() + 10
        while json.loads(lease_file.read_text())["heartbeat"] == first["heartbeat"] and time.time() < deadline:
            time.sleep(0.05)
        beats.extend([first["heartbeat"], json.loads(lease_file.read_text())["heartbeat"]])
        raise UserError("bad input")

    stages = ordered([Stage.of(toy_resolve, name="toy_resolve"), Stage.of(failing, name="toy_features")])
    with pytest.raises(UserError, match="bad input"):
        run_pipeline(config, stages, names=["toy_resolve", "toy_features"])
    assert beats[1] > beats[0], "the heartbeat moves while the run holds the lease"
    assert not lease_file.exists()
