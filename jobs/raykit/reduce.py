"""Merging many small partial results (one per block or partition) with a tree of Ray tasks.

A stage that needs one small answer from event-sized data (a count per day, a histogram) computes a partial
per block where the block lives, then merges `fan_in` partials at a time until one is left: the driver holds
only references until it fetches the final result, and no task ever holds more than `fan_in` partials.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ray

FAN_IN = 16


def tree_reduce(partials: Sequence[ray.ObjectRef], merge: Callable[..., Any], fan_in: int = FAN_IN) -> Any:
    """`merge(*partials)` computed as a tree of Ray tasks, each merging at most `fan_in` results; `merge()`
    (no argument) for no partial. `merge` must be associative: merge(merge(a, b), c) == merge(a, b, c)."""
    if fan_in < 2:
        raise ValueError("fan_in must be at least 2")
    if not partials:
        return merge()
    remote = ray.remote(merge)
    level = list(partials)
    while len(level) > 1:
        level = [remote.remote(*level[i : i + fan_in]) for i in range(0, len(level), fan_in)]
    return ray.get(level[0])
