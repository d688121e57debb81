"""The generated log as event files: `OUT/events-<partner_id>-<chunk:04d>.parquet`, local or s3://."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import numpy as np
import pyarrow.compute as pc

from jobs.config import StorageConfig
from jobs.contract.reading import earliest_run_date
from jobs.storage import check_bucket, join, write_parquet
from jobs.synthetic.profiles import Profile, generate_profile

log = logging.getLogger(__name__)

ROWS_PER_FILE = 50_000


def write_events(
    out: str,
    storage: StorageConfig,
    persons: int = 2000,
    partners: int = 8,
    days: int = 180,
    seed: int = 7,
    rows_per_file: int = ROWS_PER_FILE,
    profile: Profile = "cross-partner",
) -> dict[str, Any]:
    """Generate the log of `profile` (`jobs.synthetic.profiles`) and write it as files of one partner each (at
    most `rows_per_file` rows a file).

    The same arguments give byte-identical files. The result names the days the events span and the
    earliest run date that keeps every row (the resolve stage quarantines a row after the run date + 1 day as
    `implausible_ts`); a log that runs past today says so, with that run date.
    """
    check_bucket(out, storage)  # a missing bucket is a one-line user error, before the work
    started = time.perf_counter()
    table = generate_profile(profile, persons, partners, days, seed)
    generated = time.perf_counter() - started
    partner = table.column("partner_id").to_numpy(zero_copy_only=False)
    bounds = np.flatnonzero(np.r_[True, partner[1:] != partner[:-1], True])
    files = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        pid = str(partner[lo])
        n_chunks = max(1, int(np.ceil((hi - lo) / rows_per_file)))
        edges = np.linspace(lo, hi, n_chunks + 1).astype(np.int64)
        for c, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            path = join(out, f"events-{pid}-{c:04d}.parquet")
            write_parquet(path, table.slice(a, b - a), storage)
            files.append(path)
    seconds = time.perf_counter() - started
    partners = len(bounds) - 1
    first, last = (value.as_py().date() for value in pc.min_max(table.column("ts")).values())
    run_date_from = earliest_run_date(last)
    log.info(
        "generated %d events (%s) of %d people at %d partners over %d days in %.1fs (%.1fs generating), %d files",
        table.num_rows,
        profile,
        persons,
        partners,
        days,
        seconds,
        generated,
        len(files),
    )
    if run_date_from > dt.datetime.now(dt.timezone.utc).date():
        log.warning(
            "the events run from %s to %s, past today: run them with --run-date %s or later, or the rows after "
            "the run date + 1 day are quarantined as implausible_ts",
            first,
            last,
            run_date_from,
        )
    return {
        "rows": table.num_rows,
        "files": len(files),
        "persons": persons,
        "partners": partners,
        "days": days,
        "seed": seed,
        "profile": profile,
        "first_event_date": first.isoformat(),
        "last_event_date": last.isoformat(),
        "run_date_from": run_date_from.isoformat(),
        "path": out,
        "seconds": round(seconds, 2),
    }
