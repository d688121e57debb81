"""Bad input through the real command (`segments resolve` in a subprocess: its own console), joining the test
session's Ray through RAY_ADDRESS as a user's command joins a running cluster (a Ray of its own would cost
each test a start-up and a shutdown; the start-up path is the demo's and the resume test's).

A few lines broken among good ones: the run succeeds and accounts for every line. Past the quarantine
limit: exit 2, one paragraph naming the file, the line and the field, no traceback, and the quarantine is
published anyway. An empty file among good ones: a warning and the `empty_files` figure, not a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

SEGMENTS = str(Path(sys.executable).parent / "segments")


def good(i: int, **changes) -> dict:
    row = {
        "event_id": f"e{i}",
        "ts": "2026-03-01T10:00:00Z",
        "partner_id": "p1",
        "event_type": "page_view",
        "device_id": f"d{i % 40}",
        "price": 9.5,
        "quantity": 1,
    }
    return {**row, **changes}


def write(folder: Path, bad: list[bytes], good_rows: int = 400) -> Path:
    folder.mkdir()
    lines = [json.dumps(good(i)).encode() for i in range(good_rows)]
    (folder / "events.jsonl").write_bytes(b"\n".join(lines[:100] + bad + lines[100:]) + b"\n")
    (folder / "empty.jsonl").write_bytes(b"")
    return folder


# the broken lines of each case, among 400 good ones
CASES = {
    "below_the_limit": [b'{"event_id": "x1", "ts": "2026', json.dumps(good(900, price="12.50")).encode()],
    "past_the_limit": [json.dumps(good(900 + i, price="abc")).encode() for i in range(10)] + [b"\xff{"] * 3,
}


@pytest.fixture(scope="module")
def commands(tmp_path_factory, ray_cluster):
    """Every case's command, started together: each is mostly a new process's start-up and its workers'
    imports, which overlap with the other's work. {case: (events folder, run folder, the running command)}."""
    address = ray_cluster.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_ADDRESS": address, "RAY_AUTH_MODE": "disabled", "SEGMENTS_PROGRESS": "0"}
    started = {}
    for case, bad in CASES.items():
        base = tmp_path_factory.mktemp(case)
        events, out = write(base / "events", bad), base / "run"
        config = base / "run.yaml"
        config.write_text(json.dumps({"run_date": "2026-11-30", "ray": {"num_partitions": 2}}))
        command = [SEGMENTS, "resolve", "--events", str(events), "--out", str(out), "--config", str(config)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        started[case] = (events, out, process)
    yield started
    for _, _, process in started.values():
        process.kill()  # a test that failed before waiting for its command
        process.communicate()


def finished(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_bad_lines_below_the_limit_cost_their_rows_only(commands):
    events, out, process = commands["below_the_limit"]
    done = finished(process)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr + done.stdout
    assert "empty" in done.stderr  # the empty file is a warning on the console
    result = json.loads((out / "summary.json").read_text())["stages"]["resolve"]["result"]
    assert result["rows_in"] == 402 == result["rows_out"] + result["quarantined"]
    assert result["reasons"] == {"unparseable_json": 1} and result["empty_files"] == [str(events / "empty.jsonl")]


@pytest.mark.slow
def test_past_the_limit_one_paragraph_names_file_line_and_field(commands):
    events, out, process = commands["past_the_limit"]
    done = finished(process)
    assert done.returncode == 2, done.stderr[-2000:]
    console = done.stderr + done.stdout
    assert "Traceback" not in console
    message = [line for line in done.stderr.splitlines() if "input.max_quarantine_share" in line]
    assert len(message) == 1, done.stderr[-2000:]
    assert f"{events / 'events.jsonl'} line 101" in message[0] and "bad_type:price: 10" in message[0]
    assert "invalid_utf8: 3" in message[0]
    quarantine = pq.read_table(out / "quarantine")
    assert quarantine.num_rows == 13 and sorted(set(quarantine.column("line").to_pylist()))[0] == 101
