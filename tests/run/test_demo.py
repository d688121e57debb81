"""The demo at its smallest sample: every stage runs, a report and exports land; a second demo only looks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.config import StorageConfig
from jobs.errors import UserError
from jobs.run.demo import MIN_PERSONS, run_demo
from jobs.run.layout import SCORES, RunLayout
from jobs.storage import TableIn


@pytest.mark.slow
def test_demo_runs_every_stage_and_a_second_demo_only_looks(tmp_path, ray_cluster):
    """The first demo is the real command (joining the tests' Ray): its console stays quiet, its detail
    goes to the run's log."""
    out = tmp_path / "demo"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address, "SEGMENTS_PROGRESS": "0"}
    segments = Path(sys.executable).with_name("segments")
    command = [str(segments), "demo", "--persons", str(MIN_PERSONS), "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stderr[-3000:]
    first = done.stdout
    assert "demo run succeeded" in first
    console = done.stderr.splitlines()
    assert len(console) <= 60, f"{len(console)} stderr lines:\n" + done.stderr
    for noise in ("Traceback", "Total Progress", "tqdm", "Dataset job will hang", "Warning:", "worker.py"):
        assert noise not in done.stderr, noise
    assert sum("started" in line for line in console) == 8 and sum(": done in" in line for line in console) == 8
    (run_log,) = (out / "runs" / "demo" / "logs").glob("*.log")
    assert run_log.name in done.stderr, "the console names the run's log"
    kept = run_log.read_text()
    assert "[8/8] export: done in" in kept and "INFO ray" in kept, "the run's log keeps Ray's own lines too"
    assert " DEBUG ray" not in kept, "but not Ray's DEBUG records (Ray Data's context and metrics dumps)"
    layout = RunLayout(str(out / "runs" / "demo"))
    assert f"report:   {layout.report}" in first and (out / "runs" / "demo" / "report.html").is_file()
    scored = TableIn(SCORES, layout.table(SCORES), StorageConfig()).marker["segments"]
    assert "ecommerce_buyers" in scored, "a model was trained and scored for the plainest segment"
    manifests = [json.loads(m.read_text()) for m in (out / "exports").glob("*/ecommerce_buyers/*/manifest.json")]
    assert manifests and f"exports:  {out / 'exports'}  (" in first
    assert {m["model_version"] for m in manifests} == {scored["ecommerce_buyers"]}
    assert sum(m["rows"] for m in manifests) > 0
    events = sorted((out / "events").iterdir())
    written = {p.name: p.stat().st_mtime_ns for p in events}

    again = run_demo(out=str(out), persons=MIN_PERSONS)
    assert "demo run succeeded" in again
    summary = json.loads((out / "runs" / "demo" / "summary.json").read_text())
    assert {s["status"] for s in summary["stages"].values()} == {"skipped"}
    assert {p.name: p.stat().st_mtime_ns for p in sorted((out / "events").iterdir())} == written, "not regenerated"


def test_too_small_a_demo_is_refused_before_any_work(tmp_path):
    with pytest.raises(UserError, match="--persons of at least 1000"):
        run_demo(out=str(tmp_path / "demo"), persons=200)
    with pytest.raises(UserError, match="local folder"):
        run_demo(out="s3://bucket/demo", persons=MIN_PERSONS)
    assert not (tmp_path / "demo").exists()
