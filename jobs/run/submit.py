"""The pipeline as a Ray Job on a cluster: submit, status, logs (Ray's `JobSubmissionClient`).

`submit_job` validates the config here, fixes its run id and run date (the schedule date, so a retried
submission lands in the same run folder and resumes it), and ships this checkout's `jobs/` and
`features/` packages plus the config as the job's `working_dir`. On the cluster the entrypoint is
`PYTHON -m jobs run --config job.yaml`, PYTHON being the interpreter that runs Ray's workers on the head (the
dashboard reports the head raylet's worker command): Ray Jobs run the entrypoint through the head's shell,
whose PATH is whatever the shell that started Ray had, so a bare `python` may be another interpreter (a
head started as `.venv/bin/ray start --head` without the venv activated). That interpreter needs the
project's dependencies (cluster.yaml and the KubeRay manifests install them). Credentials are never
shipped: the cluster reads S3 through its own instance role / service account.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml
from ray.job_submission import JobSubmissionClient

from jobs.config import StorageConfig, load_config
from jobs.errors import UserError
from jobs.storage import is_s3, write_bytes

log = logging.getLogger(__name__)

JOB_CONFIG_NAME = "job.yaml"
PACKAGES = ("jobs", "features")
# Non-secret settings for the job's driver and workers.
JOB_ENV = {"PYTHONUNBUFFERED": "1", "SEGMENTS_PROGRESS": "0"}
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _dashboard_url(address: str) -> str:
    return address if "://" in address else f"http://{address}"


def _client(address: str):
    url = _dashboard_url(address)
    try:
        return JobSubmissionClient(url)
    except (ConnectionError, OSError, RuntimeError, ValueError) as exc:
        raise UserError(
            f"cannot reach the Ray dashboard at {url} ({type(exc).__name__}): is the cluster up, and is this "
            f"its dashboard address (port 8265 by default; `ray dashboard cluster.yaml` forwards it)?"
        ) from None


WORKER_COMMAND = "--python_worker_command="


def head_python(address: str, wait_s: float = 15.0) -> str | None:
    """The interpreter that runs Ray's Python workers on the head node, from the dashboard's node summary (the
    head raylet's command line names it); None when the dashboard does not say (older Ray, not reported yet)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(f"{_dashboard_url(address)}/nodes?view=summary", timeout=10) as response:
                nodes = json.loads(response.read()).get("data", {}).get("summary", [])
        except (OSError, ValueError) as exc:
            log.warning("the dashboard's node summary is unreadable (%s); the job uses `python`", type(exc).__name__)
            return None
        heads = [n for n in nodes if (n.get("raylet") or {}).get("isHeadNode")] or nodes
        for node in heads:
            for argument in node.get("cmdline") or []:
                if argument.startswith(WORKER_COMMAND):
                    command = shlex.split(argument[len(WORKER_COMMAND) :])
                    if command:
                        return command[0]
        if time.monotonic() > deadline:  # the reporter agent publishes node stats a few seconds after start
            log.warning("the dashboard does not report the head's Python interpreter; the job uses `python`")
            return None
        time.sleep(1)


def entrypoint(python: str | None) -> str:
    """The job's command: the head's own interpreter (see the module docstring), else `python` on its PATH."""
    return f"{shlex.quote(python) if python else 'python'} -m jobs run --config {JOB_CONFIG_NAME}"


def _absolute_local(path: str | None) -> str | None:
    """Local paths are made absolute here: the job runs in another working directory."""
    if path is None or is_s3(path) or "://" in path:
        return path
    return os.path.abspath(path)


def job_config_for_submission(config_file: Path, run_date: dt.date | None = None) -> tuple[dict[str, Any], str]:
    """The YAML the job runs with: the user's file (and `run_date`, a backfill), validated, with run id and
    run date fixed now."""
    config = load_config(config_file, {"run_date": run_date})
    raw = yaml.safe_load(Path(config_file).read_text()) or {}
    if run_date is not None:
        raw["run_date"] = run_date.isoformat()
    run_id = config.run_id
    if run_id is None:  # a scheduled run: its id is its date, fixed at submission so a retry resumes it
        run_date = config.run_date or dt.datetime.now(dt.timezone.utc).date()
        run_id = raw["run_id"] = run_date.isoformat()
        raw["run_date"] = run_date.isoformat()
    for key in ("events", "root"):
        if raw.get(key) is not None:
            raw[key] = _absolute_local(raw[key])
    if isinstance(raw.get("export"), dict) and raw["export"].get("root") is not None:
        raw["export"]["root"] = _absolute_local(raw["export"]["root"])
    return raw, run_id


def _stage_working_dir(job_config: dict[str, Any]) -> str:
    """A small folder with this checkout's packages and the job config: the job's working_dir."""
    staging = tempfile.mkdtemp(prefix="segments-job-")
    for package in PACKAGES:
        source = Path(importlib.import_module(package).__file__).resolve().parent
        shutil.copytree(source, Path(staging) / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    config_yaml = yaml.safe_dump(job_config, sort_keys=False).encode()
    write_bytes(str(Path(staging) / JOB_CONFIG_NAME), config_yaml, StorageConfig())
    return staging


def submit_job(
    address: str, config_file: Path, run_date: dt.date | None = None, wait: bool = False
) -> str | dict[str, Any]:
    """Submit `segments run` as a Ray Job; returns its id. With `wait`, follows the logs to the end and returns
    the job's final status (exit code 1 when it did not succeed)."""
    job_config, run_id = job_config_for_submission(config_file, run_date)
    client = _client(address)
    command = entrypoint(head_python(address))
    staging = _stage_working_dir(job_config)
    try:
        job_id = client.submit_job(
            entrypoint=command,
            submission_id=f"segments-{run_id}-{uuid.uuid4().hex[:8]}",
            runtime_env={"working_dir": staging, "env_vars": dict(JOB_ENV)},
            metadata={"run_id": run_id, "config": Path(config_file).name, "submitted_by": "segments submit"},
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not wait:
        return job_id
    log.info("submitted job %s (run %s); following its logs", job_id, run_id)
    status = follow_job(client, job_id)
    info = client.get_job_info(job_id)
    result = {"job_id": job_id, "run_id": run_id, "status": status, "message": info.message}
    if status != "SUCCEEDED":
        log.error("job %s ended %s: %s", job_id, status, info.message)
        raise SystemExit(1)  # the job's own error is in its logs above; not a user or infrastructure error here
    return result


def follow_job(client, job_id: str, poll_s: float = 1.0) -> str:
    """Stream the job's logs to stdout until it ends; returns its final status."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        log.warning("stopped following; job %s keeps running (`segments status %s`)", job_id, job_id)
        raise SystemExit(130) from None
    except Exception as exc:  # noqa: BLE001 - the log stream dropped; the status below still tells
        log.warning("the log stream ended early (%s: %s); waiting for the job's status", type(exc).__name__, exc)
    while (status := str(client.get_job_status(job_id).value)) not in TERMINAL:
        time.sleep(poll_s)
    return status


def _job_info(client, job_id: str):
    try:
        return client.get_job_info(job_id)
    except RuntimeError as exc:
        if "does not exist" in str(exc) or "404" in str(exc):
            raise UserError(f"the cluster knows no job {job_id!r} (see `ray job list`).") from None
        raise


def job_status(address: str, job_id: str) -> dict[str, Any]:
    """Status, message, times and run id of a submitted job."""
    info = _job_info(_client(address), job_id)

    def when(ms: int | None) -> str | None:
        return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="seconds") if ms else None

    return {
        "job_id": job_id,
        "status": str(info.status.value),
        "message": info.message,
        "run_id": (info.metadata or {}).get("run_id"),
        "entrypoint": info.entrypoint,
        "start_time": when(info.start_time),
        "end_time": when(info.end_time),
    }


def job_logs(address: str, job_id: str) -> str:
    """Everything the job has printed so far."""
    client = _client(address)
    _job_info(client, job_id)
    return client.get_job_logs(job_id)
