"""Peak driver memory and object-store use while a stage runs (summary.json's resource figures)."""

from __future__ import annotations

import threading
from typing import Any

import psutil


class PeakSampler:
    """Peak driver RSS (psutil) and peak cluster object-store use (one raylet RPC) while a stage runs."""

    def __init__(self, interval_s: float = 0.5, store_every: int = 4):
        self._process = psutil.Process()
        self._interval = interval_s
        self._store_every = store_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)
        self._state = None
        self.peak_rss = 0
        self.peak_store: int | None = None

    def __enter__(self) -> PeakSampler:
        self._sample(store=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample(store=False)

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(self._interval):
            tick += 1
            self._sample(store=tick % self._store_every == 0)

    def _sample(self, store: bool) -> None:
        try:
            self.peak_rss = max(self.peak_rss, self._process.memory_info().rss)
        except Exception:  # noqa: BLE001 - sampling must never fail a stage
            pass
        if store:
            used = self._object_store_used()
            if used is not None:
                self.peak_store = max(self.peak_store or 0, used)

    def _object_store_used(self) -> int | None:
        if self._state is False:
            return None
        try:
            import ray  # the stage's own Ray session is up by now
            from ray._private.internal_api import get_memory_info_reply, get_state_from_address

            if self._state is None:
                self._state = get_state_from_address(ray.get_runtime_context().gcs_address)
            reply = get_memory_info_reply(self._state, timeout_seconds=5.0)
            return int(reply.store_stats.object_store_bytes_used)
        except Exception:  # noqa: BLE001 - an internal API; without it the figure is just left out
            self._state = False
            return None
