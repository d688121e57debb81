"""Shared test fixtures: one real local Ray for the whole session and a moto S3 server on 127.0.0.1.

Nothing here mocks Ray or S3: stages run as they do in production, over real Parquet files, and S3
traffic goes over HTTP to a moto server on loopback.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

# Before Ray starts, so its workers inherit them: no auth on the local test cluster, quick Train
# reports, no progress bars in test logs, and dummy AWS credentials that only moto accepts.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ["SEGMENTS_PROGRESS"] = "0"
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray (2 CPUs, small object store) shared by every test that needs it."""
    import ray

    from jobs.raykit.session import LOCAL_SYSTEM_CONFIG, configure_data_context

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            object_store_memory=600 * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
            _system_config=LOCAL_SYSTEM_CONFIG,  # as a command's local Ray
        )
    configure_data_context()
    yield ray
    ray.shutdown()


_GIVEN_PORTS: set[int] = set()


def _free_port() -> int:
    """A port free now and not handed out before in this session: the kernel may give a just-closed port
    again, and a server started with two equal ports fails (`ray start` refused one for its dashboard and its
    runtime-env agent in CI)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


@pytest.fixture(scope="session")
def free_port():
    """Returns a function that finds a free TCP port on 127.0.0.1 (for servers the tests start)."""
    return _free_port


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1, reached over real HTTP."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture()
def storage(s3_endpoint):
    from jobs.config import StorageConfig

    return StorageConfig(endpoint_url=s3_endpoint, region="us-east-1", retries=2)


@pytest.fixture()
def s3_bucket(storage):
    """A fresh, empty bucket per test; yields its s3:// URL."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=storage.endpoint_url, region_name="us-east-1").create_bucket(Bucket=name)
    yield f"s3://{name}"


@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server on 127.0.0.1 (Debian's package; scripts/test.sh installs it), no persistence."""
    import shutil
    import subprocess
    import time

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run scripts/setup_env.sh (it installs Debian's package)")
    port = _free_port()
    server = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"redis-server did not start on port {port}") from None
            time.sleep(0.05)
    yield url
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="module")
def serve_url(ray_cluster):
    """Ray Serve on the session's Ray, its HTTP proxy on a free port of 127.0.0.1; yields the base URL.

    For the module that serves (its controller, proxy and HAProxy poll while idle: they stop with it rather
    than share the two cores with the rest of the suite)."""
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


SMALL_SAMPLE = dict(persons=300, partners=3, days=75, seed=11)


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory):
    """One small generated sample, and the job of every test that runs stages on it.

    Returns {"events", "job"}: `job(root, **extra)` is the job mapping (events, run id/date, segments, quick
    training) for a root. Tests that need the events or the job only take this, not `small_run`, so they do
    not pay for a whole pipeline when run alone or under `-m "not slow"`."""
    from stages.segment_tables import QUICK_TRAINING  # tests/ is on sys.path: this conftest's folder

    from jobs.config import JobConfig, StorageConfig
    from jobs.synthetic import write_events

    base = tmp_path_factory.mktemp("small-sample")
    events = base / "events"
    write_events(str(events), StorageConfig(), **SMALL_SAMPLE)

    def job(root, **extra) -> dict:
        return {
            "events": str(events),
            "root": str(root),
            "run_id": "r",
            "run_date": "2026-03-20",
            "stages": list(JobConfig().stages),
            "ray": {"num_partitions": 2},
            # one model that trains keeps it quick; a brand nobody buys is a segment the train stage skips
            "segments": [
                {"name": "ecommerce_buyers", "kind": "ecommerce_buyers"},
                {"name": "ghost_brand", "kind": "high_interest", "brand": "NoSuchBrand"},
            ],
            "training": dict(QUICK_TRAINING),
            **extra,
        }

    return {"events": events, "job": job}


@pytest.fixture(scope="session")
def small_run(small_sample, tmp_path_factory, ray_cluster):
    """ONE uninterrupted run of every stage on the small sample, on the session's Ray, shared by the tests
    that read a real run (resume, the real-upstream stage checks, export keys). Read it, never write into
    it: a test that runs stages itself gets `job(its_own_root, ...)`, the same settings pointed elsewhere.

    Returns {"events", "root", "run_id", "config", "summary", "job"} (`events` and `job`: small_sample's)."""
    from jobs.config import load_config
    from jobs.run.pipeline import run_pipeline
    from jobs.stages import pipeline

    root = tmp_path_factory.mktemp("small-run") / "reference"
    config = load_config(None, small_sample["job"](root))
    summary = run_pipeline(config, pipeline())
    assert summary["status"] == "succeeded", summary
    return {**small_sample, "root": root, "run_id": "r", "config": config, "summary": summary}
