"""The driver's per-stage peak RSS: the kernel's high-water mark restarted at each stage, a burst too short
for the sampler still counted, and the sampled figure where the system has no such counter."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

from jobs.config import PlanView
from jobs.run import resources
from jobs.run.resources import PeakSampler, release_unused_memory
from jobs.run.stage import Stage
from jobs.run.summary import format_summary, stage_summary

MB = 2**20
BURST = 300 * MB

needs_proc = pytest.mark.skipif(
    not os.access(resources.CLEAR_REFS, os.W_OK), reason="no resettable peak RSS (Linux /proc/self/clear_refs)"
)


def burst() -> None:
    """Touch BURST bytes and free them at once: over well before the sampler's next tick."""
    block = np.ones(BURST // 8)
    assert block.sum() == BURST // 8


def slow_sampler() -> PeakSampler:
    # only the samples at the start and the end; no Ray asked: no object-store figure
    return PeakSampler(interval_s=60, object_store=False)


@needs_proc
def test_a_short_burst_counts_and_each_stage_starts_afresh():
    with slow_sampler() as loud:
        burst()
    with slow_sampler() as quiet:
        pass
    assert loud.high_water_rss is not None and quiet.high_water_rss is not None
    # the sampler saw only the start and the end, the kernel saw the burst
    assert loud.driver_peak_rss - loud.peak_rss > 0.8 * BURST
    assert loud.driver_peak_rss == loud.high_water_rss
    # the quiet stage does not inherit the burst of the one before it
    assert loud.driver_peak_rss - quiet.driver_peak_rss > 0.8 * BURST
    assert quiet.driver_peak_rss < quiet.peak_rss + 50 * MB


@needs_proc
def test_the_high_water_mark_agrees_with_what_the_process_resident_set_is():
    with slow_sampler() as sampler:
        block = np.ones(BURST // 8)
        block.sum()
        resident = sampler._process.memory_info().rss
        del block
    # the kernel folds its per-thread RSS counters into the mark every few dozen page faults: a little slack
    assert resident - 4 * MB <= sampler.high_water_rss < resident + 50 * MB


def test_without_a_resettable_counter_the_sampled_peak_stands(monkeypatch, tmp_path):
    monkeypatch.setattr(resources, "CLEAR_REFS", str(tmp_path / "absent" / "clear_refs"))
    sampler = slow_sampler()
    with sampler:
        block = np.ones(BURST // 8)
        block.sum()
        resident = sampler._process.memory_info().rss
        sampler._sample(store=False)
        del block
    assert sampler.high_water_rss is None
    assert sampler.driver_peak_rss == sampler.peak_rss >= resident


def test_the_stage_summary_reports_both_driver_figures_and_the_table_shows_the_kernels():
    def noop(view: PlanView) -> dict:
        return {"rows_in": 5, "rows_out": 5}

    with slow_sampler() as sampler:
        burst()
    figures = stage_summary(Stage.of(noop), None, {"rows_in": 5, "rows_out": 5}, 1.5, sampler)
    assert figures["driver_peak_rss_mb"] == round(sampler.driver_peak_rss / MB, 1)
    assert figures["peak_driver_rss_mb"] == round(sampler.peak_rss / MB, 1)
    assert figures["driver_peak_rss_mb"] >= figures["peak_driver_rss_mb"]
    assert figures["object_store_spilled_mb"] is None  # no Ray: no store figures
    assert 0 < figures["driver_rss_start_mb"] < figures["driver_peak_rss_mb"] - 0.8 * BURST / MB
    table = format_summary({"stages": {"noop": figures}})
    assert str(figures["driver_peak_rss_mb"]) in table.splitlines()[-1]
    # a summary written before the kernel's figure existed (a skipped stage's marker) still shows a figure
    old = {k: v for k, v in figures.items() if k != "driver_peak_rss_mb"}
    assert str(old["peak_driver_rss_mb"]) in format_summary({"stages": {"noop": old}}).splitlines()[-1]


def test_objects_beyond_the_store_are_spilled_and_the_stage_counts_them(ray_cluster):
    # the bound is the store's capacity: what is free now is less by what earlier tests left in it
    store = int(ray_cluster.cluster_resources()["object_store_memory"])
    block = np.ones(int(ray_cluster.available_resources()["object_store_memory"]) // 3 // 8, dtype=np.float64)
    with PeakSampler(interval_s=60) as sampler:
        refs = [ray_cluster.put(block) for _ in range(5)]  # ~1.7x the store, all held: some must go to disk
        assert all(ray_cluster.get(ref, timeout=60).size == block.size for ref in refs)
        del refs
    assert sampler.spilled is not None and sampler.spilled >= block.nbytes
    assert 0 < sampler.peak_store <= store
    with PeakSampler(interval_s=60) as quiet:  # the next stage counts only its own spilling
        pass
    assert quiet.spilled == 0


def test_a_sample_the_raylet_does_not_answer_in_time_leaves_the_next_ones_to_count(ray_cluster, monkeypatch):
    from ray._private import internal_api

    answer = internal_api.get_memory_info_reply
    calls = []

    def busy_once(state, timeout_seconds):  # a raylet busy spilling: the first question times out
        calls.append(timeout_seconds)
        if len(calls) == 1:
            raise TimeoutError("no answer in time")
        return answer(state, timeout_seconds=timeout_seconds)

    monkeypatch.setattr(internal_api, "get_memory_info_reply", busy_once)
    with PeakSampler(interval_s=60) as sampler:  # the first question is the stage's baseline: unanswered
        block = np.ones(int(ray_cluster.available_resources()["object_store_memory"]) // 4 // 8)
        ref = ray_cluster.put(block)
        sampler._sample(store=True)
        assert ray_cluster.get(ref, timeout=60).size == block.size
        del ref
    assert sampler.store_samples_missed == 1 and len(calls) == 3
    assert calls[0] == calls[-1] == 30.0  # the stage's first and last questions wait longer
    assert sampler.peak_store is not None and sampler.peak_store >= block.nbytes
    assert sampler.spilled is not None


def test_memory_arrow_kept_after_a_stage_goes_back_to_the_system():
    process = slow_sampler()._process
    before = process.memory_info().rss
    # what a driver-side collect does: blocks concatenated, then columns to numpy (both through Arrow's pool)
    parts = [pa.table({f"c{i}": np.random.default_rng(i).random(100_000) for i in range(50)}) for _ in range(3)]
    table = pa.concat_tables(parts)
    del parts
    columns = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    del table, columns
    kept = process.memory_info().rss - before  # freed, but Arrow's allocator keeps the pages
    assert kept > 50 * MB
    release_unused_memory()
    assert process.memory_info().rss - before < 0.5 * kept
