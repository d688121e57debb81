"""Scoring on Ray: every eligible persona gets a score, a percentile and a membership flag per trained model.

    features (one as_of partition) ──ReadParquet->MapBatches(score_block), fused into tasks──▶
        (persona, segment, score, model_version)
    ──per-block score histograms──▶ tree of Ray tasks merging them (`jobs.segments.membership`)
    ──driver: cumulative counts per segment (bins, not scores)──▶ percentile + member per row

Scoring runs as Ray tasks, at most `scoring.tasks` at once (fractional CPUs: a one-thread prediction leaves
most of a core to the Parquet read beside it). Each task reads its feature file itself (`scoring_map`: Ray
Data fuses the Parquet read into the scoring task, so the wide feature blocks never cross the object store;
at 110+ float columns that copy, not XGBoost, was the cost) and predicts `batch_size` rows at a time with
`Booster.inplace_predict` on one float32 matrix built straight from the Arrow batch. The models load once
per worker process, as in an actor (`jobs.model.booster`): the stage puts the `Scorer`'s arguments in the
object store once, and a worker keeps the `Scorer` built from them for the tasks after its first. Tasks run
in the workers earlier stages left warm; an actor pool started new processes, which import xgboost and our
modules again (3.5-4.0 s against 1.8 s to score the 1M-event run's 19k personas).

Reasons (`jobs.model.reasons`, `ScoringConfig.reasons`): the same tasks turn XGBoost contributions into the
top three partner-safe labels while the matrix is in memory (a second read of the wide features would cost
more than the contributions: the read is the expensive part), for the rows that **may be members** only
(`may_be_members`): with `membership: threshold` exactly the members (score >= threshold); with
`top_percent` (members known only after the histogram merge) the rows at or above the block's k-th largest
score, k = the block's expected members plus MEMBER_BOUND_Z binomial standard deviations (ties included):
blocks are hash partitions of personas, so a member outside that bound is a ~1e-9 event per block. `assign`
keeps reasons for members only (non-members: null; a member with no positive reason: an empty list); the
score stage counts members left without computed reasons (`members_without_reasons`, expected 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data

from features.matrix import feature_matrix
from jobs.config import ScoringConfig
from jobs.model.booster import load_booster, openmp_threads
from jobs.model.bundle import ModelSpec
from jobs.model.reasons import ReasonNames, contributions
from jobs.raykit.reduce import tree_reduce
from jobs.segments.definitions import eligible_mask
from jobs.segments.membership import (
    REASONS_TYPE,
    SCORED_SCHEMA,
    Lookup,
    assign,
    bin_counts,
    merge_histograms,
    percentile_lookup,
)
from jobs.storage import TableIn

HISTOGRAM_FAN_IN = 8
MEMBER_BOUND_Z = 6.0


def may_be_members(scores: np.ndarray, scoring: ScoringConfig) -> np.ndarray:
    """The rows of one block that may be members (see the module): a superset of its members."""
    if scoring.membership == "threshold":
        return scores >= scoring.threshold
    n, share = len(scores), scoring.top_percent / 100.0
    if n == 0:
        return np.zeros(0, dtype=bool)
    k = min(n, math.ceil(n * share + MEMBER_BOUND_Z * math.sqrt(n * share * (1.0 - share))) + 1)
    return scores >= np.partition(scores, n - k)[n - k]


class Scorer:
    """Loads every model once, then scores Arrow batches (`score_block` keeps one per worker process)."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        nthread: int = 1,
        batch_size: int | None = None,
        reason_labels: Mapping[str, Mapping[str, str]] | None = None,
        reasons: str = "off",
        scoring: ScoringConfig | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.scoring = scoring or ScoringConfig()
        self.nthread = nthread
        self.models = [(spec, load_booster(spec.raw, nthread)) for spec in specs]
        self.reasons = reasons
        labels = reason_labels or {}
        self.names = {
            spec.segment.name: ReasonNames(spec.feature_names, labels.get(spec.segment.name, {})) for spec in specs
        }

    def __call__(self, block: pa.Table) -> pa.Table:
        if block.num_rows == 0 or not self.models:
            return SCORED_SCHEMA.empty_table()
        step = self.batch_size or block.num_rows
        with openmp_threads(self.nthread):  # for this call only: the worker runs other stages' tasks too
            return pa.concat_tables(
                [self.score_batch(block.slice(start, step)) for start in range(0, block.num_rows, step)]
            )

    def score_batch(self, batch: pa.Table) -> pa.Table:
        persona = batch.column("persona_id")
        matrices: dict[tuple[str, ...], np.ndarray] = {}
        out = []
        for spec, booster in self.models:
            mask = eligible_mask(spec.segment, batch, spec.categories)
            eligible = int(mask.sum())
            if eligible == 0:
                continue
            if eligible * 2 < batch.num_rows:  # few eligible: build the matrix of those rows only
                rows = batch.filter(pa.array(mask))
                matrix = feature_matrix(rows, spec.feature_names, order="F")
                scores = booster.inplace_predict(matrix)
                ids = rows.column("persona_id")
            else:
                matrix = matrices.get(spec.feature_names)
                if matrix is None:
                    matrix = matrices[spec.feature_names] = feature_matrix(batch, spec.feature_names, order="F")
                scores = booster.inplace_predict(matrix)
                ids = persona
                if eligible < batch.num_rows:
                    scores = scores[mask]
                    ids = persona.filter(pa.array(mask))
                    matrix = matrix[mask]
            out.append(
                pa.table(
                    {
                        "persona_id": ids,
                        "segment": pa.repeat(spec.segment.name, eligible),
                        "score": pa.array(np.asarray(scores, dtype=np.float64)),
                        "model_version": pa.repeat(spec.model_version, eligible),
                        "reasons": self.row_reasons(spec, booster, matrix, scores),
                    },
                    schema=SCORED_SCHEMA,
                )
            )
        return pa.concat_tables(out) if out else SCORED_SCHEMA.empty_table()

    def row_reasons(self, spec: ModelSpec, booster, matrix: np.ndarray, scores: np.ndarray) -> pa.Array:
        """Reasons of the rows that may be members (null for the others: they are never members)."""
        if self.reasons == "off":
            return pa.nulls(len(matrix), REASONS_TYPE)
        candidates = np.flatnonzero(may_be_members(np.asarray(scores, dtype=np.float64), self.scoring))
        if not len(candidates):
            return pa.nulls(len(matrix), REASONS_TYPE)
        contribs = contributions(
            booster, matrix[candidates], spec.feature_names, spec.feature_types, self.reasons, self.nthread
        )
        found = self.names[spec.segment.name].top(contribs)
        if len(candidates) == len(matrix):
            return found
        at = np.full(len(matrix), -1, dtype=np.int64)
        at[candidates] = np.arange(len(candidates))
        return found.take(pa.array(at, mask=at < 0))


_worker_scorer: dict[str, Scorer] = {}  # this worker process's Scorer, by the object id of its arguments


def score_block(block: pa.Table, scorer_args: ray.ObjectRef) -> pa.Table:
    """Scores one block with this worker's `Scorer` for `scorer_args`, built at the worker's first such block."""
    key = scorer_args.hex()
    scorer = _worker_scorer.get(key)
    if scorer is None:
        _worker_scorer.clear()  # one stage's models at a time: a long-lived worker does not collect runs' models
        scorer = _worker_scorer[key] = Scorer(**ray.get(scorer_args))
    return scorer(block)


def scoring_map(
    features: TableIn,
    partition: Mapping[str, Any],
    specs: Sequence[ModelSpec],
    scoring: ScoringConfig,
    reason_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> ray.data.Dataset:
    """The scoring map over one partition of the features table: (persona_id, segment, score, model_version,
    reasons) rows.

    One read task per file, fused into the scoring task that follows it (Ray Data fuses two task maps only
    when both have the same CPUs and concurrency): at most `scoring.tasks` at once, and no more than there are
    files, so every one gets a file. `reason_labels`: per segment, feature name -> partner-safe label
    (`features.catalog.reason_labels`); reasons are computed when `scoring.reasons` is not "off"."""
    files = features.files(partition)
    tasks = max(1, min(scoring.tasks, len(files)))
    features_ds = features.dataset(
        partition=partition, override_num_blocks=len(files), num_cpus=scoring.cpus_per_task, concurrency=tasks
    )
    scorer_args = ray.put(
        {
            "specs": list(specs),
            "nthread": scoring.threads_per_task,
            "batch_size": scoring.batch_size,
            "reason_labels": dict(reason_labels or {}),
            "reasons": scoring.reasons,
            "scoring": scoring,
        }
    )
    return features_ds.map_batches(
        score_block,
        fn_kwargs={"scorer_args": scorer_args},
        batch_format="pyarrow",
        batch_size=None,
        compute=ray.data.TaskPoolStrategy(size=tasks),
        num_cpus=scoring.cpus_per_task,
    )


def score_histogram(scored_ds: ray.data.Dataset) -> pa.Table:
    """The merged (segment, bin) histogram of every score: each block's partial histogram, merged by a tree
    of Ray tasks HISTOGRAM_FAN_IN at a time (`jobs.raykit.reduce`).

    A merged histogram has at most one row per occupied bin (2^26 per segment at the very most, ~1e5 in
    practice), whatever the persona count, so every merge and the result stay small; the driver holds
    only references until the last one. (A Ray Data groupby does the same with aggregator actors, whose
    start-up cost more than the whole merge.)
    """
    partials = scored_ds.map_batches(bin_counts, batch_format="pyarrow", batch_size=None).to_arrow_refs()
    return tree_reduce(partials, merge_histograms, fan_in=HISTOGRAM_FAN_IN)


def _assign(batch: pa.Table, lookup_ref: ray.ObjectRef, scoring: ScoringConfig) -> pa.Table:
    lookup: Lookup = ray.get(lookup_ref)  # one copy of the lookup in the object store, read by every task
    return assign(batch, lookup, scoring)


def score_dataset(
    features: TableIn,
    partition: Mapping[str, Any],
    specs: Sequence[ModelSpec],
    scoring: ScoringConfig,
    reason_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[ray.data.Dataset, pa.Table]:
    """Scores of one features partition with percentiles, membership and members' reasons (`SCORES_SCHEMA`),
    as a Ray Dataset, and the merged score histogram (`jobs.segments.membership`: a row per occupied bin,
    small)."""
    scored = scoring_map(features, partition, specs, scoring, reason_labels).materialize()
    histogram = score_histogram(scored)
    lookup_ref = ray.put(percentile_lookup(histogram))
    assigned = scored.map_batches(
        _assign, fn_kwargs={"lookup_ref": lookup_ref, "scoring": scoring}, batch_format="pyarrow", batch_size=None
    )
    return assigned, histogram


def _block_counts(batch: pa.Table) -> pa.Table:
    """Scored rows and members per segment of one block; with a `reasons` column also the members whose
    reasons were not computed (null: `may_be_members` missed them)."""
    if batch.num_rows == 0:
        return pa.table(
            {
                "segment": pa.array([], pa.string()),
                "scored": pa.array([], pa.int64()),
                "members": pa.array([], pa.int64()),
                "members_without_reasons": pa.array([], pa.int64()),
            }
        )
    if "reasons" in batch.column_names:
        missing = pc.and_(batch.column("member"), pc.is_null(batch.column("reasons")))
    else:
        missing = pa.array(np.zeros(batch.num_rows, dtype=bool))
    batch = pa.table({"segment": batch.column("segment"), "member": batch.column("member"), "missing": missing})
    grouped = batch.group_by("segment").aggregate([("member", "count"), ("member", "sum"), ("missing", "sum")])
    return pa.table(
        {
            "segment": grouped.column("segment"),
            "scored": grouped.column("member_count").cast(pa.int64()),
            "members": grouped.column("member_sum").cast(pa.int64()),
            "members_without_reasons": grouped.column("missing_sum").cast(pa.int64()),
        }
    )


def segment_counts(scores_ds: ray.data.Dataset) -> dict[str, dict[str, int]]:
    """Scored rows and members per segment (and, when the dataset has `reasons`, members without computed
    reasons): per-block partial counts, summed on the driver (a few rows)."""
    refs = scores_ds.map_batches(_block_counts, batch_format="pyarrow", batch_size=None).to_arrow_refs()
    parts = [t for t in ray.get(refs) if t.num_rows]
    if not parts:
        return {}
    keys = ("scored", "members", "members_without_reasons")
    total = pa.concat_tables(parts).group_by("segment").aggregate([(k, "sum") for k in keys])
    with_reasons = "reasons" in scores_ds.columns()
    return {
        row["segment"]: {k: int(row[f"{k}_sum"]) for k in keys if with_reasons or k != "members_without_reasons"}
        for row in total.to_pylist()
    }
