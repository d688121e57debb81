"""Vectorised sampling helpers of the generator: weighted picks, child rows, hex ids, times of day."""

from __future__ import annotations

import numpy as np

from jobs.synthetic.reference import DAY


def pick(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One index per row of a (n, k) non-negative weight matrix (rows with no weight give k-1)."""
    c = np.cumsum(weights, axis=1)
    u = (1.0 - rng.random(len(weights))) * c[:, -1]
    return np.minimum((c < u[:, None]).sum(axis=1), weights.shape[1] - 1)


def explode(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(parent index, position within parent) for `counts[i]` children of every parent i."""
    counts = counts.astype(np.int64)
    parent = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return parent, np.arange(parent.size) - starts[parent]


def hex_ids(rng: np.random.Generator, n: int, nbytes: int, dashes: bool = False) -> np.ndarray:
    """`n` random lowercase hex strings (UUID-shaped with dashes when nbytes == 16) as a numpy str array."""
    b = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    lut = np.frombuffer(b"0123456789abcdef", dtype="S1")
    chars = np.empty((n, nbytes * 2), dtype="S1")
    chars[:, 0::2] = lut[b >> 4]
    chars[:, 1::2] = lut[b & 15]
    if dashes:
        cuts = [0, 8, 12, 16, 20, 32]
        parts = [chars[:, a:z] for a, z in zip(cuts, cuts[1:])]
        dash = np.full((n, 1), b"-", dtype="S1")
        chars = np.concatenate([parts[0], dash, parts[1], dash, parts[2], dash, parts[3], dash, parts[4]], axis=1)
    return chars.view(f"S{chars.shape[1]}").ravel().astype(str)


def time_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds into the day, by an e-commerce hour-of-day profile (quiet nights, evening peak)."""
    w = np.array(
        [1, 0.5, 0.3, 0.2, 0.2, 0.3, 0.8, 1.5, 2.5, 3, 3.2, 3.3, 3.5, 3.3, 3.2, 3.2, 3.4, 3.8, 4.3, 5, 5.4, 5, 3.8, 2.2]
    )
    hours = rng.choice(24, size=n, p=w / w.sum())
    return hours * 3600.0 + rng.random(n) * 3600.0


def times(rng: np.random.Generator, n: int, lo_day: np.ndarray | float, hi_day: np.ndarray | float) -> np.ndarray:
    """Session start times (seconds from START) on random days in [lo, hi), at realistic hours."""
    lo = np.broadcast_to(np.asarray(lo_day, dtype=float), (n,))
    hi = np.broadcast_to(np.asarray(hi_day, dtype=float), (n,))
    day = np.floor(lo + rng.random(n) * np.maximum(hi - lo, 0))
    return day * DAY + time_of_day(rng, n)
