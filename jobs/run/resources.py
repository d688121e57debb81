"""Peak driver memory and object-store use while a stage runs (summary.json's resource figures).

Two figures of the driver's memory per stage:
  * `driver_peak_rss_mb`: the kernel's own high-water mark of the driver process's resident set (Linux's
    VmHWM, what GNU time and `os.wait4` report as the process's maximum RSS), restarted at the stage's start
    by writing 5 to /proc/self/clear_refs, read at its end. It sees every page the stage touched, however
    briefly; the largest stage's figure is what an outside tool reports for the whole command (unless a
    child process it waited for peaked higher). Where the system has no such counter (not Linux, or a kernel
    before 4.0) it is the sampled figure below. It includes what earlier stages left in the driver's heap:
    `driver_rss_start_mb` (the RSS at the stage's start) tells the stage's own growth apart.
  * `peak_driver_rss_mb`: RSS sampled every half second (psutil): a lower bound that can miss a short burst.
And of the cluster's object store: its peak use, and the bytes Ray spilled to disk during the stage (when
the store is full, Ray writes objects out and reads them back on use: what lets data larger than memory
through).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import psutil
import pyarrow as pa

log = logging.getLogger(__name__)

CLEAR_REFS = "/proc/self/clear_refs"
PROC_STATUS = "/proc/self/status"
_HWM = re.compile(r"^VmHWM:\s+(\d+)\s+kB", re.MULTILINE)


def reset_peak_rss() -> bool:
    """Restart this process's resident-set high-water mark at its current RSS; False where it cannot."""
    try:
        with open(CLEAR_REFS, "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def peak_rss() -> int | None:
    """This process's resident-set high-water mark in bytes (since the last reset), or None without /proc."""
    try:
        with open(PROC_STATUS) as status:
            found = _HWM.search(status.read())
    except OSError:
        return None
    return None if found is None else int(found.group(1)) * 1024


def release_unused_memory() -> None:
    """Hand back to the system the memory Arrow's allocator (mimalloc or jemalloc) keeps after the tables
    it held are freed. Without this, a stage that collected samples on the driver leaves its peak resident
    for every stage after it (the train stage's evaluation samples, ~0.8 GB at 5M events, stayed through
    score, report and export)."""
    pa.default_memory_pool().release_unused()


class PeakSampler:
    """Peak driver RSS (the kernel's high-water mark, and psutil samples) and peak cluster object-store use
    (one raylet RPC) while a stage runs."""

    def __init__(self, interval_s: float = 0.5, store_every: int = 4, object_store: bool = True):
        self._process = psutil.Process()
        self._interval = interval_s
        self._store_every = store_every
        self._object_store = object_store  # False: the driver's figures only (no Ray asked)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)
        self._state = None
        self._high_water_reset = False
        self.peak_rss = 0
        self.start_rss: int | None = None
        self.high_water_rss: int | None = None
        self.peak_store: int | None = None
        self._spilled_before: int | None = None
        self.spilled: int | None = None
        self.store_samples_missed = 0

    @property
    def driver_peak_rss(self) -> int:
        """The stage's driver peak as the kernel counts it; the sampled peak where it has no counter."""
        return max(self.high_water_rss or 0, self.peak_rss)

    def __enter__(self) -> PeakSampler:
        self._high_water_reset = reset_peak_rss()
        self._sample(store=True, store_timeout_s=30.0)  # the baseline of the stage's spilling: worth a wait
        self.start_rss = self.peak_rss or None
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample(store=True, store_timeout_s=30.0)  # the stage's last word on spilling: worth a wait
        if self.store_samples_missed:
            log.info("object store: %d samples got no answer in time", self.store_samples_missed)
        if self._high_water_reset:
            self.high_water_rss = peak_rss()

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(self._interval):
            tick += 1
            self._sample(store=tick % self._store_every == 0)

    def _sample(self, store: bool, store_timeout_s: float = 5.0) -> None:
        try:
            self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
        except Exception:  # noqa: BLE001 - sampling must never fail a stage
            pass
        if store and self._object_store:
            stats = self._object_store_stats(store_timeout_s)
            if stats is not None:
                used, spilled = stats
                self.peak_store = max(self.peak_store or 0, used)
                if self._spilled_before is None:
                    self._spilled_before = spilled
                self.spilled = spilled - self._spilled_before

    def _object_store_stats(self, timeout_s: float) -> tuple[int, int] | None:
        """(bytes in the object store now, bytes spilled since the cluster started); None where this sample got
        no answer. A raylet busy spilling may not answer in time: the next sample asks again. (One missed answer
        used to end the sampling: a 20M-event resolve spilled ~25 GB and reported 0 MB.)"""
        try:
            import ray  # the stage's own Ray session is up by now
            from ray._private.internal_api import get_memory_info_reply, get_state_from_address
        except ImportError:  # an internal API: where it moved, the figures are just left out
            return None
        if not ray.is_initialized():
            return None
        try:
            if self._state is None:
                self._state = get_state_from_address(ray.get_runtime_context().gcs_address)
            reply = get_memory_info_reply(self._state, timeout_seconds=timeout_s)
            return int(reply.store_stats.object_store_bytes_used), int(reply.store_stats.spilled_bytes_total)
        except Exception:  # noqa: BLE001 - a sample without an answer; sampling must never fail a stage
            self.store_samples_missed += 1
            return None
