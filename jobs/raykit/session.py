"""Starting or joining Ray for a command, with Ray Data sized for small machines."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from jobs.config import RayConfig

log = logging.getLogger(__name__)


def configure_data_context() -> None:
    """Explicit limits so Ray Data never starves Ray Train workers or floods a 2-core machine."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = os.environ.get("SEGMENTS_PROGRESS", "1") == "1"
    ctx.verbose_progress = False
    ctx.print_on_execution_start = False
    ctx.enable_operator_progress_bars = False
    # Ray 2.60's DataSource V2 readers list files in a separate task (tens of seconds on a busy 2-core
    # machine, one block per file); the V1 readers plan on the driver from our explicit file lists.
    ctx.use_datasource_v2 = False


@contextlib.contextmanager
def ray_session(config: RayConfig) -> Iterator[None]:
    """Join the cluster at `config.address` / RAY_ADDRESS, or start a local Ray for the command.

    A Ray already initialised in this process (tests, a job on a cluster) is reused and left running.
    """
    import ray

    started_here = False
    if not ray.is_initialized():
        address = config.address or os.environ.get("RAY_ADDRESS")
        kwargs = dict(include_dashboard=False, log_to_driver=True, logging_level=logging.WARNING)
        if address:  # a cluster's own auth settings stand: joining it changes none of them
            ray.init(address=address, **kwargs)
        else:
            # a Ray private to this command, on this machine: token auth would only get in the way
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            object_store = config.object_store_memory_mb * 1024 * 1024 if config.object_store_memory_mb else None
            ray.init(num_cpus=config.num_cpus, object_store_memory=object_store, **kwargs)
        started_here = True
    configure_data_context()
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()
