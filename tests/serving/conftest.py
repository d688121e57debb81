"""One published fixture run per store, each served by its own Serve application (2 replicas) over HTTP.

`deployed[store]` gives the application's URL, ROOT, config and one API key per partner. Both
applications live for the module that uses them (test_app.py) and stop with Serve after it, so their replicas
do not hold CPUs while the rest of the suite runs.
"""

from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path

import pytest
from online_app import Deployed, call

from jobs.config import ServingConfig, StorageConfig
from jobs.serving.app import serve_environment
from jobs.serving.synthetic import PARTNERS, build_run, job_config

STORES = ("embedded", "redis")

# Serve's request path is read by its processes when they start, so it must be in place before the session's
# shared Ray starts (tests/conftest.py's ray_cluster; conftest modules load at collection, before any fixture):
# the tests serve on the path the default config serves on, as `segments serve` sets it for the Ray it starts.
for _name, _value in serve_environment(ServingConfig()).items():
    os.environ.setdefault(_name, _value)
# A replica behind HAProxy holds on for 30 s when stopped so load balancers can deregister it; on loopback with
# one HAProxy that only makes each application's teardown 30 s longer.
os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2")


def _listener_ports(count: int) -> list[int]:
    """Free ports below the kernel's ephemeral range and above Ray's worker ports (10002-19999). A port the
    kernel hands out (bind to 0) is in the ephemeral range, and before HAProxy binds it minutes later any
    loopback connection of the session may take it as its source port: it happened once in CI ("cannot bind
    socket (Address already in use)" for the metrics listener). Ports below that range are never given out."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    ports: list[int] = []
    for port in random.Random().sample(range(20000, ephemeral_low), 500):  # sessions side by side differ
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))  # HAProxy listens on every interface
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError("no free port for HAProxy's listeners between 20000 and the ephemeral range")


# HAProxy's stats and metrics listeners default to fixed ports (8404, 9101): free ones, so a busy port on the
# machine running the tests cannot stop it
_NAMES = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")
for _name, _port in zip(_NAMES, _listener_ports(len(_NAMES))):
    os.environ.setdefault(_name, str(_port))


def _published(store: str, root: str, serve_url: str, redis_url: str) -> Deployed:
    """A fixture run under ROOT, published to `store`, with one API key per partner."""
    from jobs.serving.partner_keys import create_key
    from jobs.serving.publish import run_publish

    run_dir = build_run(root, StorageConfig())
    config = job_config(
        root,
        store=store,
        redis_url=redis_url,
        replicas=2,
        cpus_per_replica=0.25,
        poll_events_seconds=0.1,
        poll_release_seconds=0.3,
        max_events_per_request=50,
        max_body_bytes=64 * 1024,
        app_name=f"segments-{store}",
        route_prefix=f"/{store}",
    )
    run_publish(config, run_dir)
    keys = {partner: create_key(config, partner, root) for partner in PARTNERS}
    return Deployed(store, f"{serve_url}/{store}", root, run_dir, config, keys)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, serve_url, redis_url):
    from ray import serve

    from jobs.serving.app import build_app

    apps = {
        store: _published(store, str(tmp_path_factory.mktemp(f"online-{store}")), serve_url, redis_url)
        for store in STORES
    }
    # both applications start together: their replicas load in parallel
    serve.run_many(
        [
            serve.RunTarget(
                build_app(a.config, a.root), name=a.config.serving.app_name, route_prefix=a.config.serving.route_prefix
            )
            for a in apps.values()
        ]
    )
    # ready = both replicas answer: HAProxy adds a replica once its health checks pass, a little after Serve
    # reports the application running
    deadline = time.monotonic() + 60
    for app in apps.values():
        answered: set[str] = set()
        while len(answered) < 2:
            assert time.monotonic() < deadline, f"the {app.store} application's replicas never both answered"
            answer = call(f"{app.url}/v1/health", app.keys["p1"])
            if answer.status == 200:
                answered.add(answer.replica)
            else:
                time.sleep(0.2)
    yield apps
    # no serve.delete per application: serve_url's serve.shutdown() after this module stops both at once, where
    # each delete waited ~3 s for its replicas to drain, one after the other


@pytest.fixture(params=STORES)
def app(request, deployed) -> Deployed:
    return deployed[request.param]
