"""One run folder, one runner: a lease file that a second `segments run` of the same run id respects.

Two runs of one run folder would overwrite each other's tables and stage markers (a cron retry that fires
while the first attempt still runs, two people starting the same backfill). The runner holds
`RUN/_stages/lease.json` (owner id, host, pid, start, heartbeat) and refreshes its heartbeat from a
background thread every HEARTBEAT_S; it removes the lease when the run ends, failed or not.

A lease is honoured while its heartbeat is younger than EXPIRES_S, unless it was taken on this host by a
process that no longer exists (a run killed with SIGKILL is taken over at once by the next run here).
Where there is no lease, a runner creates it only if it is still absent (`create_json`: a hard link locally,
a conditional PUT on S3), so of two runners starting at the same moment one gets it and the other stops.
A stale lease is replaced instead (and on a store that refuses conditional writes every lease is written):
runners that write it together each read it back SETTLE_S after writing, and the one that lost the last
write stops.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from jobs.config import StorageConfig
from jobs.errors import UserError
from jobs.storage import create_json, delete, exists, read_json_or_none, write_json

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
EXPIRES_S = 600.0
# how long a runner that replaced a stale lease waits before reading it back, so that a racing writer's lease
# has landed
SETTLE_S = 0.5


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, alive
        return True
    return True


def holder_is_alive(lease: dict[str, Any]) -> bool:
    """Whether `lease` still holds its run: a fresh heartbeat from a process that may still exist."""
    if time.time() - float(lease.get("heartbeat", 0)) >= EXPIRES_S:
        return False
    if lease.get("host") == socket.gethostname() and not _process_exists(int(lease.get("pid", 0))):
        return False
    return True


def _describe(lease: dict[str, Any]) -> str:
    age = time.time() - float(lease.get("heartbeat", 0))
    return (
        f"host {lease.get('host')} pid {lease.get('pid')} (started {lease.get('started_at')}, "
        f"last heartbeat {age:.0f}s ago)"
    )


@contextlib.contextmanager
def run_lease(path: str, run_id: str, storage: StorageConfig) -> Iterator[dict[str, Any]]:
    """Hold the run's lease file `path` (`RunLayout.lease`) for the duration of the block."""
    # whether a file is there is looked at first: a lease created after that look makes `create_json` fail
    present = exists(path, storage)
    current = read_json_or_none(path, storage) if present else None  # a torn lease is no lease
    if current is not None:
        if holder_is_alive(current):
            raise UserError(
                f"run {run_id} is already running: {_describe(current)} holds {path}. Two runs of one run folder "
                "would overwrite each other's tables; wait for it to finish (`segments status` for a submitted "
                f"job). If that process is gone, its lease expires {EXPIRES_S / 60:.0f} minutes after its last "
                "heartbeat, or delete the file."
            )
        log.warning("run %s: taking over a stale lease of %s", run_id, _describe(current))
    lease = {
        "owner": uuid.uuid4().hex,
        "run_id": run_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "heartbeat": time.time(),
    }
    won = None
    if not present:
        try:
            won = create_json(path, lease, storage)
        except NotImplementedError:
            log.info("run %s: the store takes no conditional writes; the lease is written and read back", run_id)
    if won is None:  # a stale or torn lease, or such a store: written, then read back once racing writes landed
        write_json(path, lease, storage)
        time.sleep(SETTLE_S)
        won = (read_json_or_none(path, storage) or {}).get("owner") == lease["owner"]
    if not won:
        holder = read_json_or_none(path, storage) or {}
        raise UserError(
            f"run {run_id} was started twice at the same moment; the other runner ({_describe(holder)}) keeps it."
        )

    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                write_json(path, {**lease, "heartbeat": time.time()}, storage)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the run itself must not fail for it
                log.warning("run %s: could not refresh the lease heartbeat", run_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"lease-{run_id}", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join()
        try:
            if (read_json_or_none(path, storage) or {}).get("owner") == lease["owner"]:
                delete(path, storage)
        except Exception:  # noqa: BLE001 - the lease expires by itself; the run's own outcome matters more
            log.warning("run %s: could not remove the lease %s", run_id, path, exc_info=True)
