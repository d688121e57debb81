"""The run's log file: `RUN/logs/<timestamp>.log` (`RunLayout.log_file`), the full detail of one run.

The console shows progress, the warnings a user must act on and the summary (`jobs.cli`); this file keeps
everything the run logs, tracebacks included. A run folder on S3 gets its log when the run ends (an object
is written whole): until then it is written to a local temporary file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator

from jobs.config import StorageConfig
from jobs.run.layout import RunLayout
from jobs.storage import fs_path, is_s3, write_bytes

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger(__name__)


def name_log(exc: BaseException, path: str) -> None:
    """Tell whoever reports `exc` (the CLI's one paragraph) which log file holds its traceback."""
    if getattr(exc, "log_file", None) is None:
        with contextlib.suppress(AttributeError):  # an exception type that takes no attributes
            exc.log_file = path  # type: ignore[attr-defined]


def _not_ray_debug(record: logging.LogRecord) -> bool:
    """Ray's DEBUG records stay in Ray's own session logs (ray-data.log): Ray Data logs its whole context and
    every operator's metrics at DEBUG, ~6 KB a record, 0.7 MB of a demo run's log of 1.2k lines."""
    return record.levelno > logging.DEBUG or not (record.name == "ray" or record.name.startswith("ray."))


@contextlib.contextmanager
def run_log(layout: RunLayout, storage: StorageConfig) -> Iterator[str]:
    """Every record logged while the run runs also goes to the run's log file; yields its path."""
    target = layout.log_file(time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    if is_s3(target):
        handle, local = tempfile.mkstemp(prefix="segments-run-", suffix=".log")
        os.close(handle)
    else:
        local = fs_path(target)
        os.makedirs(os.path.dirname(local), exist_ok=True)
    handler = logging.FileHandler(local, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_not_ray_debug)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield target
    except BaseException as exc:
        log.error("run failed: %s", type(exc).__name__, exc_info=True, extra={"console": False})
        name_log(exc, target)
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
        if is_s3(target):
            try:
                with open(local, "rb") as saved:
                    write_bytes(target, saved.read(), storage)
                os.unlink(local)
            except Exception:  # noqa: BLE001 - the run's outcome stands; the local copy is kept
                log.warning("the run's log could not be copied to %s; it is kept at %s", target, local)
