"""The pipeline's mechanics (markers, skip, rerun, invalidation, run ids, summary) and, with the real
stages, resume after SIGKILL and a Ray worker killed mid-stage."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
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
    assert "seconds" in summary["stages"]["export"]

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
