"""Ray Job submission (`jobs.run.submit`: submit, status, logs) against a real Ray head started here with
`ray start --head`.

That head is a cluster of its own (own ports, own temp dir), separate from the test session's Ray; it
is stopped by killing exactly the processes it started (never `ray stop`, which stops every Ray on the
machine).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from jobs.config import StorageConfig
from jobs.errors import UserError
from jobs.run.submit import job_config_for_submission, job_logs, job_status, submit_job
from jobs.synthetic import write_events

BIN = Path(sys.executable).parent


def _stop_tree(proc: subprocess.Popen, marker: str) -> None:
    """SIGTERM then SIGKILL `proc`, its descendants, and any process whose command line names `marker`.

    The grace is short: the head's daemons (the `ray start --block` loop, GCS, raylet, dashboard, log monitor)
    were all still alive 12 s after SIGTERM, while its workers and dashboard modules exit within 3 s; the
    temp dir goes afterwards, so nothing is lost by killing the rest."""
    victims: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(proc.pid)
        victims[root.pid] = root
        victims.update({p.pid: p for p in root.children(recursive=True)})
    except psutil.NoSuchProcess:
        pass
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in (p.info["cmdline"] or [])):
                victims[p.pid] = p
                victims.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.Error:
            pass
    for p in victims.values():
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(victims.values()), timeout=3)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


@pytest.fixture(scope="module")
def ray_head(free_port):
    """`ray start --head --block` on 127.0.0.1 with free ports; yields the dashboard URL.

    Started by absolute path with a PATH that lacks the venv, as a head started as `.venv/bin/ray start --head`
    without activating it: a bare `python` in the job's shell is not the interpreter that runs Ray there."""
    temp_dir = tempfile.mkdtemp(prefix="rsub-", dir="/tmp")  # short: Ray's socket paths have a length cap
    dashboard = free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "PATH": os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != BIN),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    log = tempfile.TemporaryFile(mode="w+")  # ray start's own output, shown if it does not come up
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={free_port()}",
            "--num-cpus=2",
            f"--temp-dir={temp_dir}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--object-store-memory=300000000",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=temp_dir,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                pytest.fail(f"ray start --head did not come up:\n{log.read()[-3000:]}")
            time.sleep(0.25)
        yield url
    finally:
        _stop_tree(proc, temp_dir)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_job_config_fixes_run_id_from_the_date_and_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "job.yaml"
    path.write_text("events: data/events\nroot: out\nrun_date: 2026-04-02\nexport:\n  root: s3://bucket/exports\n")
    raw, run_id = job_config_for_submission(path)
    assert run_id == "2026-04-02" and raw["run_id"] == "2026-04-02"
    assert raw["events"] == str(tmp_path / "data" / "events") and raw["root"] == str(tmp_path / "out")
    assert raw["export"]["root"] == "s3://bucket/exports"
    path.write_text("events: s3://in/events\nroot: s3://runs\nrun_id: manual-1\n")
    raw, run_id = job_config_for_submission(path)
    assert run_id == "manual-1" and "run_date" not in raw and raw["events"] == "s3://in/events"


def test_run_date_flag_backfills_an_earlier_date(tmp_path):
    """`submit --run-date`: the flag beats the file's run_date and names the run when no run_id is set."""
    path = tmp_path / "job.yaml"
    path.write_text("events: s3://in/events\nroot: s3://runs\nrun_date: 2026-04-02\n")
    raw, run_id = job_config_for_submission(path, dt.date(2026, 3, 28))
    assert run_id == "2026-03-28" and raw["run_id"] == "2026-03-28" and raw["run_date"] == "2026-03-28"
    path.write_text("events: s3://in/events\nroot: s3://runs\nrun_id: manual-1\n")
    raw, run_id = job_config_for_submission(path, dt.date(2026, 3, 28))
    assert run_id == "manual-1" and raw["run_date"] == "2026-03-28"


def test_an_invalid_config_is_refused_before_anything_is_submitted(tmp_path, free_port):
    path = tmp_path / "job.yaml"
    path.write_text("events: /x\nray:\n  num_partitions: 0\n")
    with pytest.raises(UserError, match="ray.num_partitions"):
        submit_job(f"http://127.0.0.1:{free_port()}", path)


def test_unreachable_cluster_is_a_user_error(tmp_path, free_port):
    path = tmp_path / "job.yaml"
    path.write_text("events: /nowhere\n")
    with pytest.raises(UserError, match="cannot reach the Ray dashboard"):
        submit_job(f"http://127.0.0.1:{free_port()}", path)


@pytest.mark.slow
def test_a_submitted_run_writes_its_outputs_and_a_failed_job_ends_a_waiting_submit_with_exit_1(
    ray_head, tmp_path, caplog, capsys
):
    """Two jobs on the head at once (each job's start-up is mostly waiting): a run that succeeds, submitted
    without waiting, and one whose input is missing, followed by a waiting submit to its end."""
    events = tmp_path / "events"
    write_events(str(events), StorageConfig(), persons=60, partners=3, days=20, seed=3)
    good = tmp_path / "job.yaml"
    good.write_text(
        yaml.safe_dump(
            {
                "events": str(events),
                "root": str(tmp_path / "root"),
                "run_date": "2026-02-01",
                "stages": ["resolve"],
                "ray": {"num_partitions": 2},
            }
        )
    )
    job_id = submit_job(ray_head, good, wait=False)
    assert job_id.startswith("segments-2026-02-01-")
    submitted = job_status(ray_head, job_id)
    assert submitted["run_id"] == "2026-02-01"
    assert submitted["entrypoint"].startswith(str(BIN / "python")), "the head's own interpreter, not PATH's python"

    bad = tmp_path / "failing.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "events": str(tmp_path / "no-such-events"),
                "root": str(tmp_path / "failing-root"),
                "run_id": "failing",
                "stages": ["resolve"],
            }
        )
    )
    with caplog.at_level(logging.INFO, logger="jobs.run.submit"), pytest.raises(SystemExit) as ended:
        submit_job(ray_head, bad, wait=True)
    assert ended.value.code == 1
    submitted = [r.getMessage() for r in caplog.records if r.getMessage().startswith("submitted job ")]
    failed_id = submitted[0].split()[2]
    assert any(r.levelno == logging.ERROR and f"job {failed_id} ended FAILED" in r.getMessage() for r in caplog.records)
    assert "error:" in capsys.readouterr().out, "the job's logs were followed: its own one-paragraph error"
    status = job_status(ray_head, failed_id)
    assert status["status"] == "FAILED" and status["run_id"] == "failing"
    assert "error:" in job_logs(ray_head, failed_id)
    with pytest.raises(UserError, match="knows no job"):
        job_status(ray_head, "raysubmit_doesnotexist")

    deadline = time.time() + 300
    while (status := job_status(ray_head, job_id)["status"]) not in {"SUCCEEDED", "FAILED", "STOPPED"}:
        assert time.time() < deadline, "job did not finish in time"
        time.sleep(0.5)
    logs = job_logs(ray_head, job_id)
    assert status == "SUCCEEDED", logs[-3000:]
    run = tmp_path / "root" / "runs" / "2026-02-01"
    assert (run / "events_resolved" / "_SUCCESS").is_file() and (run / "_stages" / "resolve.json").is_file()
    assert json.loads((run / "summary.json").read_text())["stages"]["resolve"]["status"] == "ran"
    assert "[1/1] resolve: done" in logs
