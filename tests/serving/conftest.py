"""One published fixture run per store, each served by its own Serve application (2 replicas) over HTTP.

`deployed[store]` gives the application's URL, ROOT, config and one API key per partner. Both
applications live for the module that uses them (test_app.py) and are deleted after it, so their replicas
do not hold CPUs while the rest of the suite runs.
"""

from __future__ import annotations

import time

import pytest
from fixture_run import PARTNERS, build_run, job_config
from online_app import Deployed, call

from jobs.config import StorageConfig

STORES = ("embedded", "redis")


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
    deadline = time.monotonic() + 60
    for app in apps.values():
        while call(f"{app.url}/v1/health", app.keys["p1"]).status != 200:
            assert time.monotonic() < deadline, f"the {app.store} application never became healthy"
            time.sleep(0.2)
    yield apps
    for app in apps.values():
        serve.delete(app.config.serving.app_name)


@pytest.fixture(params=STORES)
def app(request, deployed) -> Deployed:
    return deployed[request.param]
