"""The generated log as event files: `OUT/events-<partner_id>-<chunk:04d>.parquet`, local or s3://."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from jobs.config import StorageConfig
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

    The same arguments give byte-identical files.
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
    return {
        "rows": table.num_rows,
        "files": len(files),
        "persons": persons,
        "partners": partners,
        "days": days,
        "seed": seed,
        "profile": profile,
        "path": out,
        "seconds": round(seconds, 2),
    }
