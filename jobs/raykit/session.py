"""Starting or joining Ray for a command, with Ray Data sized for small machines and Ray's logs routed.

Ray, Ray Data, Train and Serve put their own console handlers on their loggers. `route_ray_logs` takes them
off and lets the records reach the root logger: the command's handlers decide (the run's log file keeps
them all, the console shows them only with `--verbose`). Ray Data draws its progress bars with tqdm on a
terminal (one bar per dataset execution: rows and ETA), and so do our own long waves of tasks
(`task_progress`: the input read); when stderr is not a terminal (cron, a pipe) there are no bars, so a
scheduler's log stays a page. `SEGMENTS_PROGRESS=0` / `=1` turns them off / on anyway.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from jobs.config import RayConfig

log = logging.getLogger(__name__)


def progress_enabled() -> bool:
    """Progress bars on the console: on a terminal, unless SEGMENTS_PROGRESS says otherwise."""
    return os.environ.get("SEGMENTS_PROGRESS", "1" if sys.stderr.isatty() else "0") == "1"


def task_progress(desc: str, total: int):
    """A bar for a wave of our own Ray tasks, `total` of them (Ray Data draws its own): tasks done, and the
    ETA. Update it once per task done."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="task", disable=not progress_enabled(), leave=False)


def configure_data_context() -> None:
    """Explicit limits so Ray Data never starves Ray Train workers or floods a 2-core machine. Called where a
    Dataset is made, not when Ray starts: importing Ray Data takes ~1 s on 2 cores, which a command that
    makes none (resolve) does not pay; the import puts Ray Data's console handler back, so its logs are
    routed again."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress_enabled()
    ctx.verbose_progress = False
    ctx.print_on_execution_start = False
    ctx.enable_operator_progress_bars = False  # one bar per dataset execution, not one per operator
    # Ray 2.60's DataSource V2 readers list files in a separate task (tens of seconds on a busy 2-core
    # machine, one block per file); the V1 readers plan on the driver from our explicit file lists.
    ctx.use_datasource_v2 = False
    # Reads of published tables (features reading events_resolved, labels, train, ...) get blocks sized by
    # bytes (at most target_max_block_size) and at least two per CPU; Ray Data's default floor of 200
    # blocks split 8 Parquet files of 1M events into 200 blocks of ~1 MiB, each a task in every later step.
    ctx.read_op_min_num_blocks = 1
    route_ray_logs()


RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.serve", "ray.tune")

# A local Ray kills a pool worker after 1 s idle while more workers than its CPUs are alive. A Ray Train run's
# controller, cleaner and worker actors are processes of their own, so the task workers that had imported
# xgboost and our modules died during the run, and the calibration tasks and scoring after it paid new
# processes and their imports: at the demo's size calibration took 1.4 s, 0.2-0.3 s with a minute's grace,
# and score 3.4 s against 2.5-2.8 s. An idle worker keeps its memory that long, no CPU.
LOCAL_SYSTEM_CONFIG = {"idle_worker_killing_time_threshold_ms": 60_000}


def route_ray_logs() -> None:
    """Ray's loggers without their own console handlers, propagating to the root logger (see above)."""
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
        logger.propagate = True


@contextlib.contextmanager
def ray_session(config: RayConfig, worker_output: bool = True) -> Iterator[None]:
    """Join the cluster at `config.address` / RAY_ADDRESS, or start a local Ray for the command.

    `worker_output`: Ray workers' stdout/stderr comes to this console (off for a quiet batch run: Ray keeps
    it in the session's log folder, which the run's log names). A Ray already initialised in this process
    (tests, a job on a cluster) is reused and left running.
    """
    import ray

    started_here = False
    route_ray_logs()  # before ray.init, which logs through them
    if not ray.is_initialized():
        address = config.address or os.environ.get("RAY_ADDRESS")
        kwargs = dict(include_dashboard=False, log_to_driver=worker_output, logging_level=logging.INFO)
        if address:  # a cluster's own auth settings stand: joining it changes none of them
            ray.init(address=address, **kwargs)
        else:
            # a Ray private to this command, on this machine: token auth would only get in the way
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            object_store = config.object_store_memory_mb * 1024 * 1024 if config.object_store_memory_mb else None
            ray.init(
                num_cpus=config.num_cpus,
                object_store_memory=object_store,
                _system_config=LOCAL_SYSTEM_CONFIG,
                **kwargs,
            )
        started_here = True
    route_ray_logs()
    log.info("Ray session logs (workers' output): %s", _session_logs(), extra={"console": False})
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()


def _session_logs() -> str:
    import ray

    try:
        return os.path.join(ray._private.worker._global_node.get_session_dir_path(), "logs")
    except AttributeError:  # joined a cluster through a client: its logs are on the head
        return "on the cluster's head node"
