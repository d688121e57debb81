"""Every segment's model, driven from the driver over Ray tasks and Ray Train: gates, fit, calibration, the
honest out-of-time evaluation, the champion selection and the production refit (`train_segments`).

For a segment with cut-offs train_as_of < eval_as_of (the run plan's):

1. **Data** (Ray tasks, nothing collected but samples): the labelled snapshot at each cut-off (features
   left-joined with labels, `LabelledSnapshots`, prepared once for every segment), restricted to the segment's
   eligible population and split into train / validation by a seeded hash of persona_id
   (`jobs.model.examples`).
2. **Gates**: fewer than `training.min_positives` positives or `min_negatives` negatives in the training
   snapshot, or a category segment whose category has no feature slot: the segment is `skipped`, with the
   reason; the run goes on.
3. **Fit** at train_as_of: the look-alikes of ALL segments in one Ray Train run (`jobs.model.fit`: a run's
   fixed cost is paid once, not per segment; a round too small to earn it back runs in one Ray task), each
   calibrated on its validation split (`jobs.model.calibration`) so it predicts probabilities; the RFM booster
   (`jobs.model.baselines`) on a hash sample of the same rows.
4. **Evaluation** out of time (`jobs.model.quality`): the snapshot at eval_as_of, labels after it, scored by
   every candidate (also the previous run's champion when comparable); per candidate the metrics, the
   permutation null on the evaluation labels and the alarms; the single-feature leakage check. Metric rows
   are a hash sample of at most `training.max_metric_rows` evaluation rows.
5. **Champion** (`jobs.model.champion`): the candidate exported, or none (`rejected`).
6. **Refit for production**: the winning procedure is fitted again at refit_as_of (= as_of - horizon, the
   latest cut-off whose labels are complete) and that refit is exported; the card records both fits. The
   XGBoost refits run in the first Ray Train run when they are small (speculatively, `_speculative`), else
   in a second run for the XGBoost champions only. The previous champion, when it wins, is kept as it is.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import ray

from jobs.config import FeaturesConfig, SegmentConfig, TrainingConfig
from jobs.model import champion, quality
from jobs.model.baselines import METHOD as RFM_METHOD
from jobs.model.baselines import default_rfm_features, fit_rfm
from jobs.model.booster import load_booster, model_version
from jobs.model.bundle import REJECTED, SKIPPED, TRAINED
from jobs.model.calibration import calibrated
from jobs.model.examples import (
    LABEL,
    PERSONA,
    SAMPLE,
    SEGMENT,
    VALID,
    per_segment,
    predict_batch,
    prepare_segments_batch,
    sample_rows,
    segment_stats,
    tag_fits,
)
from jobs.model.fit import fit_boosters
from jobs.run.plan import SegmentCutoffs
from jobs.segments.definitions import category_slot, label_column

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSet:
    """The columns a model is trained on: the catalogue's names and XGBoost types for the run's categories."""

    names: tuple[str, ...]
    types: tuple[str, ...]
    categories: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.types):
            raise ValueError("feature types must give one type per feature name")


@dataclass(frozen=True)
class TrainScratch:
    """Where Ray Train keeps the checkpoints of fits in progress (as `filesystem` names it; None = local)."""

    path: str
    filesystem: pafs.FileSystem | None


@dataclass(frozen=True)
class PreviousModel:
    """The previous bundle's exported model of a segment: its bytes and its card."""

    raw: bytes
    card: dict[str, Any]


@dataclass
class SegmentModel:
    """What training one segment produced: the files of its part of the models bundle."""

    metrics: dict[str, Any]
    card: dict[str, Any]
    model: bytes | None = None
    importance: list[dict[str, Any]] | None = None

    @property
    def status(self) -> str:
        return self.metrics["status"]


class LabelledSnapshots:
    """Labelled snapshots by cut-off (one join each), never materialized: `prepared` reads one, joins it and
    prepares every segment's rows at that cut-off in one pass (`_Prepared`); only the prepared rows are kept.

    `build(as_of, then, then_kwargs)`: the blocks of `then(rows, **then_kwargs)` on the labelled snapshot at a
    cut-off, in the object store (`jobs.raykit.join.join_labels`).

    `labels(as_of)`: the blocks of the labels table's partition at a cut-off (persona_id and the `label__SEGMENT`
    columns of its positives) in the object store, none when nobody is positive there, for the leakage check's
    past labels (`label_refs`)."""

    def __init__(
        self,
        build: Callable[[dt.date, Callable[..., pa.Table], dict[str, Any]], list[ray.ObjectRef]],
        labels: Callable[[dt.date], list[ray.ObjectRef] | None] | None = None,
    ) -> None:
        self._build = build
        self._labels = labels

    def label_refs(self, as_of: dt.date) -> list[ray.ObjectRef]:
        """The blocks of the labels' partition at `as_of` (persona_id and the `label__SEGMENT` columns of its
        positives) in the object store, for the tasks that look people up in them; none when nobody is positive
        there."""
        return (self._labels(as_of) if self._labels is not None else None) or []

    def prepared(
        self, as_of: dt.date, then: Callable[..., pa.Table], then_kwargs: dict[str, Any]
    ) -> list[ray.ObjectRef]:
        log.debug("train: labelled snapshot as of %s", as_of)
        return self._build(as_of, then, then_kwargs)


def config_hash(features: FeaturesConfig, training: TrainingConfig, segment: SegmentConfig, categories) -> str:
    """What a model's card records of the settings it was trained with."""
    payload = {
        "features": features.model_dump(mode="json"),
        "training": training.model_dump(mode="json"),
        "segment": segment.model_dump(mode="json"),
        "categories": list(categories or []),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Prepared:
    """Prepared rows (`prepare_segments_batch`: eligible rows, label, validation flag, sample key, `_segment`)
    by cut-off: ONE pass over a labelled snapshot prepares every segment that needs it (blocks in the object
    store, with per-segment counts from a task per block), and later passes serve every segment of a cut-off
    at once."""

    def __init__(self, snapshots: LabelledSnapshots, features: FeatureSet, t: TrainingConfig) -> None:
        self._snapshots, self._features, self._t = snapshots, features, t
        self._cuts: list[list[ray.ObjectRef]] = []
        self._where: dict[tuple[dt.date, str], int] = {}
        self._stats: dict[tuple[dt.date, str], dict[str, int]] = {}

    def prepare(self, wanted: list[tuple[dt.date, SegmentConfig]]) -> None:
        """Prepares the rows of `wanted` (cut-off, segment) not prepared yet: every cut-off's pass is started
        before the driver waits for the first one's counts."""
        pending: dict[dt.date, dict[str, SegmentConfig]] = {}
        for as_of, segment in wanted:
            if (as_of, segment.name) not in self._where:
                pending.setdefault(as_of, {})[segment.name] = segment
        started = []
        for as_of, segments in pending.items():
            prepared = self._snapshots.prepared(
                as_of,
                prepare_segments_batch,
                {
                    "segments": [(segment, label_column(name)) for name, segment in segments.items()],
                    "feature_names": list(self._features.names),
                    "categories": list(self._features.categories),
                    "validation_share": self._t.validation_share,
                    "seed": self._t.seed,
                },
            )
            started.append((as_of, segments, prepared, _launch(prepared, segment_stats)))
        for as_of, segments, prepared, counted in started:
            counts = _gather(counted)  # one row per (block, segment)
            for name in segments:
                self._where[(as_of, name)] = len(self._cuts)
                own = counts.get(SEGMENT, np.empty(0, object)) == name
                self._stats[(as_of, name)] = {k: int(counts[k][own].sum()) if k in counts else 0 for k in _STAT_KEYS}
            self._cuts.append(prepared)

    def stats(self, as_of: dt.date, name: str) -> dict[str, int]:
        return self._stats[(as_of, name)]

    def blocks(self, wanted: dict[tuple[dt.date, str], Any], fn: Callable, columns: list[str]) -> list[ray.ObjectRef]:
        """The rows of `wanted` ({(cut-off, segment): what `fn` takes}) through `fn`, a task per prepared block
        (`_launch`), started."""
        return [
            block
            for cut, own in self._groups(wanted).items()
            for block in _launch(self._cuts[cut], fn, fits=own, columns=columns)
        ]

    def launch(self, wanted: dict[tuple[dt.date, str], dict], fn: Callable, **kwargs) -> list:
        """The tasks of `fn(rows, **kwargs, **wanted[(cut-off, segment)])` on each wanted segment's rows at its
        cut-off, one pass per prepared cut-off whatever the number of segments, started and not waited for
        (`gather` waits): they run while the driver does something else, e.g. waits for a Ray Train run."""
        return [
            (list(own), _launch(self._cuts[cut], per_segment, each=fn, by_segment=own, **kwargs))
            for cut, own in self._groups(wanted).items()
        ]

    def gather(self, launched: list) -> dict[str, dict]:
        """{segment: numpy columns} of `launch`'s tasks."""
        out = {}
        for own, refs in launched:
            out.update(_by_segment(own, _gather(refs)))
        return out

    def _groups(self, wanted: dict[tuple[dt.date, str], Any]) -> dict[int, dict[str, Any]]:
        groups: dict[int, dict[str, Any]] = {}
        for (as_of, name), own in wanted.items():
            groups.setdefault(self._where[(as_of, name)], {})[name] = own
        return groups


def _by_segment(own: list[str], columns: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """{segment: its rows' numpy columns} of a `per_segment` output (its `_segment` column says whose)."""
    names = columns.pop(SEGMENT, np.empty(0, object))
    out = {}
    for name in own:
        rows = names == name
        out[name] = {column: values[rows] for column, values in columns.items()}
    return out


_STAT_KEYS = ("rows", "positives", "valid_rows", "valid_positives")


@ray.remote
def _per_block(block: pa.Table, fn: Callable, kwargs: dict) -> pa.Table:
    return fn(block, **kwargs)


def _launch(blocks: list[ray.ObjectRef], fn: Callable, **kwargs) -> list[ray.ObjectRef]:
    """`fn(block, **kwargs)` on every one of `blocks`, one Ray task per block (arguments put once): a Ray Data
    pass over them would pay a streaming executor's start-up (~0.2-1 s on 2 cores) for each of a run's ~10 small
    collections, and could not run while the driver waits for Ray Train."""
    arguments = ray.put(kwargs)
    return [_per_block.remote(block, fn, arguments) for block in blocks]


def _gather(refs: list[ray.ObjectRef]) -> dict[str, np.ndarray]:
    tables = [t for t in ray.get(refs) if t.num_rows] or ray.get(refs[:1])
    table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def _refs_by_segment(launched: list) -> dict[str, list[ray.ObjectRef]]:
    """{segment: the output blocks of `_Prepared.launch`'s tasks that hold its rows (its cut-off's)}."""
    return {name: refs for own, refs in launched for name in own}


def _segment_rows(blocks: Sequence[pa.Table], name: str) -> pa.Table:
    """Segment `name`'s rows of the `per_segment` output `blocks` (their `_segment` column says whose), in
    block order."""
    tables = [t.filter(pc.equal(t.column(SEGMENT), name)) for t in blocks]
    tables = [t for t in tables if t.num_rows] or tables[:1]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def _numpy(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False)


def _positives(labels: list[pa.Table], name: str, persons: pa.ChunkedArray) -> np.ndarray:
    """1/0 per person of `persons`: whether they are a positive of segment `name` in the label blocks."""
    column = label_column(name)
    found = [t.filter(pc.equal(t.column(column), 1)).column(PERSONA) for t in labels if column in t.column_names]
    if not found:
        return np.zeros(len(persons), np.int64)
    positive = pa.chunked_array([c for f in found for c in f.chunks], pa.string())
    return pc.is_in(persons, value_set=positive).to_numpy(zero_copy_only=False).astype(np.int64)


@ray.remote
def _leakage_check(
    name: str, group: list[str], feature_names: list[str], counts: tuple[int, int], *blocks: pa.Table
) -> dict[str, Any]:
    """Segment `name`'s `quality.leakage_check` on its leak sample, in a worker: the driver never holds it.

    `blocks`: the sample's blocks (every feature of up to `training.leakage_sample_rows` evaluation rows, ~165 MB
    at the cap), then the label blocks at eval_as_of, then those at train_as_of, `counts` giving how many of the
    first two kinds. They are arguments, not a list of references, so Ray starts the task once they exist: a
    task blocked in `ray.get` gives its CPU back, and Ray starts new worker processes (each importing xgboost
    and this module) for the tasks that fill them.

    Each sampled person's label one horizon earlier gives the past label; the reference pair is "positive in
    any segment of `group`" (the segments with the same cut-offs) after vs before the cut-off: a feature that
    peeks after its cut-off predicts the future better than the past, and the reference also judges segments
    whose past labels are all 0 (category virgins)."""
    sampled, labels_after, labels_before = blocks[: counts[0]], blocks[counts[0] : sum(counts)], blocks[sum(counts) :]
    sample = _segment_rows(sampled, name)
    persons = sample.column(PERSONA)
    after, before = (
        {other: _positives(tables, other, persons) for other in group} for tables in (labels_after, labels_before)
    )
    return quality.leakage_check(
        {column: _numpy(sample, column) for column in feature_names},
        _numpy(sample, LABEL),
        past_y=before[name],
        reference=tuple(np.bitwise_or.reduce([w[other] for other in group]) for w in (after, before)),
    )


@ray.remote
def _judge_segment(
    leakage: dict[str, Any], name: str, candidate_features: dict, seed: int, *scored: pa.Table
) -> dict[str, Any]:
    """Segment `name`'s out-of-time figures, in a worker: the metrics, permutation null and alarms (with its
    `leakage` check) of every candidate on its scored evaluation blocks (`scored`: arguments, so the task
    starts once they exist, see `_leakage_check`)."""
    scores = _segment_rows(scored, name)
    y_eval = _numpy(scores, LABEL).astype(np.int64)
    figures, entries = {}, {}
    for candidate, own_features in candidate_features.items():
        score = _numpy(scores, candidate).astype(np.float64)
        figures[candidate] = quality.binary_metrics(y_eval, score)
        chance = quality.chance_test(y_eval, score, seed=seed)
        alarms = champion.candidate_alarms(figures[candidate], leakage, own_features)
        entries[candidate] = champion.candidate_entry(figures[candidate], chance, alarms, own_features)
    return {"leakage": leakage, "figures": figures, "entries": entries, "eval_metric_rows": int(len(y_eval))}


def _leakage_checks(
    active: list[_Segment], snapshots: LabelledSnapshots, prepared: _Prepared, names: list[str], t: TrainingConfig
) -> dict[str, ray.ObjectRef]:
    """{segment: its leakage check's task}, started: the checks need no model, so they run while the Ray Train
    run starts up and fits. One pass per eval cut-off samples every segment's rows there; a task per segment
    checks its sample (`_leakage_check`)."""
    sampled = _refs_by_segment(
        prepared.launch(
            {
                (job.cut.eval_as_of, job.name): {
                    "share": min(
                        1.0, t.leakage_sample_rows / max(1, prepared.stats(job.cut.eval_as_of, job.name)["rows"])
                    )
                }
                for job in active
            },
            sample_rows,
            columns=names + [LABEL, PERSONA],
        )
    )
    cut_offs = sorted({as_of for job in active for as_of in (job.cut.train_as_of, job.cut.eval_as_of)})
    labels = {as_of: snapshots.label_refs(as_of) for as_of in cut_offs}
    groups: dict[tuple[dt.date, dt.date], list[str]] = {}
    for job in active:
        groups.setdefault((job.cut.train_as_of, job.cut.eval_as_of), []).append(job.name)
    return {
        job.name: _leakage_check.remote(
            job.name,
            groups[(job.cut.train_as_of, job.cut.eval_as_of)],
            names,
            (len(sampled[job.name]), len(labels[job.cut.eval_as_of])),
            *sampled[job.name],
            *labels[job.cut.eval_as_of],
            *labels[job.cut.train_as_of],
        )
        for job in active
    }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _skipped(base: dict, card: dict, reason: str, started: float, sizes: dict | None = None) -> SegmentModel:
    metrics = {
        **base,
        "status": SKIPPED,
        "reason": reason,
        "sizes": sizes or {},
        "alarms": [],
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.warning("train: %s skipped: %s", base["segment"], reason)
    return SegmentModel(
        metrics, {**card, "status": SKIPPED, "reason": reason, "model_version": None, "created_at": _now()}
    )


def _split_sizes(stats: dict[str, int]) -> dict[str, int]:
    return {
        "train_rows": stats["rows"] - stats["valid_rows"],
        "train_positives": stats["positives"] - stats["valid_positives"],
        "valid_rows": stats["valid_rows"],
        "valid_positives": stats["valid_positives"],
    }


def _spw(stats: dict[str, int]) -> float:
    """XGBoost's scale_pos_weight for a prepared snapshot: negatives / positives of its training split."""
    sizes = _split_sizes(stats)
    return (sizes["train_rows"] - sizes["train_positives"]) / max(1, sizes["train_positives"])


def _launch_calibration(
    prepared: _Prepared,
    fitted: dict[tuple[dt.date, str], tuple[bytes, dict[str, Any]]],
    features: FeatureSet,
    t: TrainingConfig,
) -> list:
    """The tasks scoring the validation rows of the boosters `fitted` ({(cut-off, segment): (model bytes, the
    fit's figures)}) for `_calibrate_all`, one pass per cut-off, started."""
    return prepared.launch(
        {
            key: {
                "models": {"margin": raw},
                "share": min(1.0, t.max_metric_rows / max(1, prepared.stats(*key)["valid_rows"])),
            }
            for key, (raw, _) in fitted.items()
        },
        predict_batch,
        feature_names=list(features.names),
        keep=[],
        margin=True,
        valid_only=True,
    )


def _calibrate_all(
    prepared: _Prepared,
    fitted: dict[tuple[dt.date, str], tuple[bytes, dict[str, Any]]],
    run: dict[str, Any],
    t: TrainingConfig,
    launched: list,
) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """{segment: (its look-alike calibrated on its validation split, how it was fitted)} for the boosters
    `fitted` ({(cut-off, segment): (model bytes, the fit's figures)}), from the validation scores of
    `launched` (`_launch_calibration`'s tasks; they may score more boosters than `fitted`).

    `run`: the figures of the run the fits shared (Ray Train or one task, `fit.fit_boosters`)."""
    valid = prepared.gather(launched)
    out = {}
    for (as_of, name), (raw, figures) in fitted.items():
        spw = _spw(prepared.stats(as_of, name))
        model, calibration = calibrated(raw, valid[name]["margin"], valid[name][LABEL], spw)
        out[name] = (
            model,
            {
                **figures,
                "scale_pos_weight": spw,
                "calibration": calibration,
                "params": dict(t.params),
                "num_boost_round": t.num_boost_round,
                "early_stopping_rounds": t.early_stopping_rounds,
                "num_workers": t.num_workers,
                "cpus_per_worker": t.cpus_per_worker,
                "fit_seconds": round(figures.get("load_seconds", 0.0) + figures.get("train_seconds", 0.0), 3),
                "fit_run": run,
            },
        )
    return out


def _fit_blocks(prepared: _Prepared, fits: dict[tuple[dt.date, str], str], features: FeatureSet) -> list[ray.ObjectRef]:
    """The tasks making the blocks of a round's rows (`_fit_round`), started: queued before the tasks that need
    no model (the RFM boosters, the leakage checks), so the round waits for its rows, not for those."""
    return prepared.blocks(fits, tag_fits, list(features.names) + [LABEL, SAMPLE, VALID]) if fits else []


def _fit_round(
    prepared: _Prepared,
    fits: dict[tuple[dt.date, str], str],
    blocks: list[ray.ObjectRef],
    features: FeatureSet,
    t: TrainingConfig,
    scratch: TrainScratch,
    name: str,
) -> tuple[dict[str, tuple[bytes, dict[str, Any]]], dict[str, Any]]:
    """Every fit of `fits` ({(cut-off, segment): fit id}) in ONE Ray Train run (or one Ray task, when small:
    `fit.fit_boosters`) over `blocks`, their rows (`_fit_blocks`); ({fit id: (model bytes, figures)}, the
    run's figures)."""
    if not fits:
        return {}, {}
    fitted, run = fit_boosters(
        blocks,
        sum(prepared.stats(*key)["rows"] for key in fits),
        {fit: _spw(prepared.stats(*key)) for key, fit in fits.items()},
        training=t,
        feature_names=list(features.names),
        feature_types=list(features.types),
        storage_path=scratch.path,
        storage_filesystem=scratch.filesystem,
        name=f"{name}-{uuid.uuid4().hex[:8]}",
    )
    runner = "Ray task" if run["runner"] == "ray_task" else "Ray Train run"
    log.info(
        "train: %d fit(s) of %s rows in one %s (%s): %.1fs to start, %.1fs reading and fitting",
        len(fits),
        f"{run['rows']:,}",
        runner,
        name,
        run["startup_seconds"],
        run["seconds"] - run["startup_seconds"],
    )
    return fitted, {"name": name, "fits": len(fits), **run}


@ray.remote
def _fit_baseline(name: str, columns: list[str], seed: int, nthread: int, *blocks: pa.Table) -> tuple[bytes, dict]:
    """Segment `name`'s RFM booster on its sample (`blocks`: `_fit_baselines`' sample blocks of its cut-off,
    arguments so the task starts once they exist, see `_leakage_check`), in a worker: the driver never holds
    the rows (up to `training.max_metric_rows` per segment); (model bytes, its figures)."""
    started = time.perf_counter()
    rows = _segment_rows(blocks, name)
    raw = baseline_booster(rows, columns, seed, nthread)
    figures = {"method": RFM_METHOD, "rows": rows.num_rows, "fit_seconds": round(time.perf_counter() - started, 3)}
    return raw, figures


def baseline_booster(rows: pa.Table, columns: list[str], seed: int, nthread: int) -> bytes:
    """The RFM booster of `rows` (`columns`, the label, the validation flag, the sample key), fitted in the
    order of the sample key (the persona hash), as the look-alikes (`fit._shard_batches`): the blocks of a pass
    come in any order, and XGBoost's sketch and splits depend on the rows' order."""
    order = np.argsort(_numpy(rows, SAMPLE), kind="stable")
    values = {column: _numpy(rows, column)[order] for column in [*columns, LABEL, VALID]}
    return fit_rfm({c: values[c] for c in columns}, values[LABEL], values[VALID], seed=seed, nthread=nthread)


def _fit_baselines(
    prepared: _Prepared, wanted: list[tuple[dt.date, str]], columns: list[str], t: TrainingConfig
) -> dict[str, ray.ObjectRef]:
    """{segment: its RFM booster's task (`_fit_baseline`)} for the (cut-off, segment)s of `wanted`, started with
    the tasks sampling their rows (a hash sample of at most `training.max_metric_rows` prepared rows each): they
    need no look-alike, so they run while the Ray Train run does."""
    samples = prepared.launch(
        {key: {"share": min(1.0, t.max_metric_rows / max(1, prepared.stats(*key)["rows"]))} for key in wanted},
        sample_rows,
        columns=columns + [LABEL, VALID, SAMPLE],
    )
    blocks = _refs_by_segment(samples)
    return {name: _fit_baseline.remote(name, columns, t.seed, t.nthread or 1, *blocks[name]) for _, name in wanted}


def _fitted(tasks: dict[str, ray.ObjectRef]) -> dict[str, tuple[bytes, dict]]:
    return dict(zip(tasks, ray.get(list(tasks.values()))))


def _previous_candidate(
    previous: PreviousModel | None, segment: SegmentConfig, cut: SegmentCutoffs, features: FeatureSet
) -> tuple[list[str] | None, str | None]:
    """(the previous champion's feature names when it can be judged on this evaluation, else None; the
    candidate procedure the incumbent came from)."""
    if previous is None:
        return None, None
    card = previous.card
    production = ((card.get("champion") or {}).get("fits") or {}).get("production") or {}
    procedure = production.get("procedure") or champion.XGBOOST
    names = list(card.get("feature_names") or [])
    fitted_as_of = production.get("as_of") or card.get("train_as_of")
    comparable = (
        names
        and set(names) <= set(features.names)
        and list(card.get("feature_categories") or []) == list(features.categories)
        and card.get("definition") == segment.model_dump(mode="json")
        and fitted_as_of is not None
        and dt.date.fromisoformat(fitted_as_of) + dt.timedelta(days=cut.horizon_days) <= cut.eval_as_of
    )
    return (names if comparable else None), procedure


@dataclass
class _Segment:
    """One segment's way through `train_segments`: its settings, its data, and what is decided so far."""

    segment: SegmentConfig
    cut: SegmentCutoffs
    previous: PreviousModel | None
    base: dict[str, Any]
    card: dict[str, Any]
    started: float
    result: SegmentModel | None = None
    no_refit: str | None = None  # why the production fit keeps the evaluation fit

    @property
    def name(self) -> str:
        return self.segment.name


def train_segments(
    segments: list[tuple[SegmentConfig, SegmentCutoffs, PreviousModel | None]],
    snapshots: LabelledSnapshots,
    features: FeatureSet,
    features_config: FeaturesConfig,
    training: TrainingConfig,
    scratch: TrainScratch,
    inputs: dict[str, str | None],
) -> dict[str, SegmentModel]:
    """Train, evaluate and choose every segment's champion (also a skipped or rejected one: its reason is its
    result), with all the segments' look-alike fits in as few Ray Train runs, and all their data in as few
    Ray Data passes, as possible.

    `segments`: (segment, its cut-offs, the previous bundle's exported model of it if any: the incumbent).
    `inputs`: the versions of the tables trained on (features, labels), recorded in the cards.

    1. Data: every segment's rows at its train_as_of, eval_as_of and refit_as_of prepared in one pass per
       cut-off, the passes side by side; then the gates at train_as_of.
    2. ONE Ray Train run (one Ray task when the round is small, `fit.fit_boosters`) fits every segment's
       evaluation look-alike, and speculatively its production refit when the refits are small
       (`training.speculative_refit_rows`, see `_speculative`).
    3. Calibration, the RFM boosters, the out-of-time scores and leak samples: one pass per cut-off each;
       then per segment the evaluation (a Ray task each, `_judge_segment`) and the champion. The leakage
       checks and the RFM boosters need no look-alike: their tasks start before the Ray Train run. The
       speculative refits are calibrated in the evaluation fits' calibration passes.
    4. One more Ray Train run for the production refits of the XGBoost champions not fitted yet.
    """
    t = training
    lap = _Laps()
    todo = [_start(segment, cut, previous, features, features_config, t, inputs) for segment, cut, previous in segments]
    prepared = _Prepared(snapshots, features, t)
    # every cut-off at once, also for a segment that the gates at train_as_of then skip: its rows are a filter
    # in passes that run anyway, and the passes run side by side instead of one after the other
    prepared.prepare(
        [
            (as_of, job.segment)
            for job in todo
            if job.result is None
            for as_of in (job.cut.train_as_of, job.cut.eval_as_of, job.cut.refit_as_of)
        ]
    )
    lap("prepare cut-offs")
    active = []
    for job in todo:
        if job.result is not None:
            continue
        stats = prepared.stats(job.cut.train_as_of, job.name)
        reasons = _gate_reasons(stats, job.cut.train_as_of, t)
        if reasons:
            job.result = _skipped(job.base, job.card, "; ".join(reasons), job.started, _split_sizes(stats))
        else:
            active.append(job)
    for job in active:
        job.no_refit = _no_refit(prepared.stats(job.cut.refit_as_of, job.name), job.cut.refit_as_of, t)

    first = {(job.cut.train_as_of, job.name): f"{job.name}/evaluation" for job in active}
    first |= {(job.cut.refit_as_of, job.name): f"{job.name}/production" for job in _speculative(active, prepared, t)}
    names = list(features.names)
    rfm_columns = list(t.rfm_features or default_rfm_features(names))
    evaluated = [(job.cut.train_as_of, job.name) for job in active]
    first_blocks = _fit_blocks(prepared, first, features)
    baseline_fits = _fit_baselines(prepared, evaluated, rfm_columns, t)
    leakages = _leakage_checks(active, snapshots, prepared, names, t)
    fitted, first_run = _fit_round(prepared, first, first_blocks, features, t, scratch, "evaluation")
    lap("first fit run")
    evaluation_fits = {(job.cut.train_as_of, job.name): fitted[f"{job.name}/evaluation"] for job in active}
    calibrating = _launch_calibration(prepared, evaluation_fits, features, t)
    # the refits fitted speculatively are calibrated in the same passes, before the champions are known
    speculative = {
        (job.cut.refit_as_of, job.name): fitted[f"{job.name}/production"]
        for job in active
        if f"{job.name}/production" in fitted
    }
    calibrating_refits = _launch_calibration(prepared, speculative, features, t)
    lookalikes = _calibrate_all(prepared, evaluation_fits, first_run, t, calibrating)
    lap("calibration")
    baselines = _fitted(baseline_fits)
    lap("rfm baselines")
    decided = _evaluate_all(active, prepared, lookalikes, baselines, rfm_columns, leakages, features, t)
    lap("evaluation")

    chosen = {job.name: decided[job.name]["chosen"] for job in active}
    refits = [job for job in active if job.no_refit is None and chosen[job.name] in (champion.XGBOOST, champion.RFM)]
    second = {
        (job.cut.refit_as_of, job.name): f"{job.name}/production"
        for job in refits
        if chosen[job.name] == champion.XGBOOST and f"{job.name}/production" not in fitted
    }
    refitted, second_run = _fit_round(
        prepared, second, _fit_blocks(prepared, second, features), features, t, scratch, "production"
    )
    fitted |= refitted
    lap("second fit run")
    production_fits = {
        (job.cut.refit_as_of, job.name): fitted[f"{job.name}/production"]
        for job in refits
        if chosen[job.name] == champion.XGBOOST
    }
    late = {key: fit for key, fit in production_fits.items() if key not in speculative}
    calibrating_refits += _launch_calibration(prepared, late, features, t)
    production = _calibrate_all(prepared, production_fits, second_run or first_run, t, calibrating_refits)
    rfm_refits = [(job.cut.refit_as_of, job.name) for job in refits if chosen[job.name] == champion.RFM]
    production |= _fitted(_fit_baselines(prepared, rfm_refits, rfm_columns, t))
    lap("production calibration")
    for job in active:
        job.result = _finish(job, decided[job.name], production.get(job.name), prepared, features, t)
    lap("cards")
    return {job.name: job.result for job in todo}


class _Laps:
    """The seconds of each step of `train_segments`, in the run log (not on the console)."""

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        log.info("train: %s took %.2fs", step, now - self._last, extra={"console": False})
        self._last = now


def _speculative(active: list[_Segment], prepared: _Prepared, t: TrainingConfig) -> list[_Segment]:
    """The segments whose production refit is fitted in the first Ray Train run, before their champion is known.

    A Ray Train run costs ~10-14 s whatever it fits; a refit wasted on a segment whose champion turns out not
    to be XGBoost costs its boosting time. While every refit together is small (at most
    `training.speculative_refit_rows` rows, seconds of boosting), fitting them all in the first run is cheaper
    than a second run; at 100x the data a refit costs minutes, so only the XGBoost champions are refitted, in a
    second run."""
    refittable = [job for job in active if job.no_refit is None]
    rows = sum(prepared.stats(job.cut.refit_as_of, job.name)["rows"] for job in refittable)
    return refittable if rows <= t.speculative_refit_rows else []


def _start(
    segment: SegmentConfig,
    cut: SegmentCutoffs,
    previous: PreviousModel | None,
    features: FeatureSet,
    features_config: FeaturesConfig,
    training: TrainingConfig,
    inputs: dict[str, str | None],
) -> _Segment:
    base = {
        "segment": segment.name,
        "kind": segment.kind,
        "train_as_of": cut.train_as_of.isoformat(),
        "eval_as_of": cut.eval_as_of.isoformat(),
        "refit_as_of": cut.refit_as_of.isoformat(),
        "horizon_days": cut.horizon_days,
        "eval_window_complete": cut.eval_window_complete,
        "config_hash": config_hash(features_config, training, segment, features.categories),
        "definition": segment.model_dump(mode="json"),
    }
    card = {
        **base,
        "feature_names": list(features.names),
        "feature_types": list(features.types),
        "feature_categories": list(features.categories),
        "inputs": dict(inputs),
    }
    job = _Segment(segment, cut, previous, base, card, time.perf_counter())
    if segment.kind in ("category_virgins", "category_lovers") and category_slot(segment, features.categories) is None:
        reason = (
            f"category {segment.category!r} has no feature slot in this run's feature categories "
            f"{list(features.categories)}: pin it in features.categories"
        )
        job.result = _skipped(base, card, reason, job.started)
    return job


def _evaluate_all(
    active: list[_Segment],
    prepared: _Prepared,
    lookalikes: dict[str, tuple[bytes, dict]],
    baselines: dict[str, tuple[bytes, dict]],
    rfm_columns: list[str],
    leakages: dict[str, ray.ObjectRef],
    features: FeatureSet,
    t: TrainingConfig,
) -> dict[str, dict[str, Any]]:
    """Per segment: the out-of-time evaluation of every candidate and the champion. The evaluation rows'
    scores of every segment come from one pass per cut-off and stay in the object store; a task per segment
    judges them with its leakage check (`leakages`: their tasks, from `_leakage_checks`), and the driver
    receives only the figures."""
    names = list(features.names)
    candidates, candidate_features, incumbents = {}, {}, {}
    for job in active:
        previous_names, incumbents[job.name] = _previous_candidate(job.previous, job.segment, job.cut, features)
        candidates[job.name] = {champion.XGBOOST: lookalikes[job.name][0], champion.RFM: baselines[job.name][0]}
        candidate_features[job.name] = {champion.XGBOOST: names, champion.RFM: rfm_columns}
        if previous_names is not None:
            candidates[job.name][champion.PREVIOUS] = job.previous.raw
            candidate_features[job.name][champion.PREVIOUS] = previous_names
    # Out of time: every candidate scores the snapshot at eval_as_of (labels after it).
    eval_rows = {job.name: prepared.stats(job.cut.eval_as_of, job.name)["rows"] for job in active}
    scored = _refs_by_segment(
        prepared.launch(
            {
                (job.cut.eval_as_of, job.name): {
                    "models": candidates[job.name],
                    "share": min(1.0, t.max_metric_rows / max(1, eval_rows[job.name])),
                    "model_features": candidate_features[job.name],
                }
                for job in active
            },
            predict_batch,
            feature_names=names,
            keep=[],
        )
    )
    judged = ray.get(
        [
            _judge_segment.remote(leakages[job.name], job.name, candidate_features[job.name], t.seed, *scored[job.name])
            for job in active
        ]
    )
    decided = {}
    for job, judgement in zip(active, judged):
        train_stats, eval_stats = (
            prepared.stats(as_of, job.name) for as_of in (job.cut.train_as_of, job.cut.eval_as_of)
        )
        sizes = _split_sizes(train_stats)
        sizes.update({"eval_rows": eval_stats["rows"], "eval_positives": eval_stats["positives"]})
        sizes["eval_metric_rows"] = judgement["eval_metric_rows"]
        leakage, figures, entries = judgement["leakage"], judgement["figures"], judgement["entries"]
        own_features = candidate_features[job.name]
        procedure = incumbents[job.name]
        incumbent = champion.PREVIOUS if champion.PREVIOUS in candidates[job.name] else (procedure or champion.RFM)
        chosen, why = champion.choose(entries, incumbent, t.champion_margin)
        decided[job.name] = {
            "chosen": chosen,
            "why": why,
            "incumbent": incumbent,
            "incumbent_procedure": procedure,
            "candidates": candidates[job.name],
            "candidate_features": own_features,
            "entries": entries,
            "figures": figures,
            "leakage": leakage,
            "sizes": sizes,
            "rfm_columns": rfm_columns,
            "lookalike_info": lookalikes[job.name][1],
            "baseline_info": baselines[job.name][1],
        }
    return decided


def _finish(
    job: _Segment,
    d: dict[str, Any],
    refitted: tuple[bytes, dict] | None,
    prepared: _Prepared,
    features: FeatureSet,
    t: TrainingConfig,
) -> SegmentModel:
    """The production model (the winning procedure refitted at refit_as_of, or the previous model), the
    segment's metrics and card."""
    cut, previous, base, card = job.cut, job.previous, job.base, job.card
    chosen, why, candidates, entries = d["chosen"], d["why"], d["candidates"], d["entries"]
    names = list(features.names)
    types = dict(zip(features.names, features.types))
    fits = {
        "evaluation": {
            "as_of": cut.train_as_of.isoformat(),
            "evaluated_as_of": cut.eval_as_of.isoformat(),
            "model_versions": {name: model_version(raw) for name, raw in candidates.items()},
        }
    }
    exported, production_info = None, {}
    if chosen == champion.PREVIOUS:
        exported = previous.raw
        fits["production"] = {**(previous.card.get("champion") or {}).get("fits", {}).get("production", {})}
        fits["production"].update(
            {"procedure": d["incumbent_procedure"], "kept_from": previous.card.get("model_version")}
        )
    elif chosen is not None:
        stats = prepared.stats(cut.refit_as_of, job.name)
        production = {"procedure": chosen, "rows": stats["rows"], "positives": stats["positives"]}
        if job.no_refit is not None:
            log.warning("train: %s keeps its evaluation fit: %s", job.name, job.no_refit)
            exported = candidates[chosen]
            production |= {"as_of": cut.train_as_of.isoformat(), "refit": False, "note": job.no_refit}
        else:
            exported, production_info = refitted
            production |= {"as_of": cut.refit_as_of.isoformat(), "refit": True}
        fits["production"] = production | {"model_version": model_version(exported)}
    exported_features = d["candidate_features"].get(chosen, names)
    status = TRAINED if chosen is not None else REJECTED
    block = {
        "primary_metric": champion.PRIMARY_METRIC,
        "margin": t.champion_margin,
        "incumbent": d["incumbent"],
        "chosen": chosen,
        "reason": why,
        "candidates": entries,
        "fits": fits,
    }
    alarms = [f"{name}: {alarm}" for name, entry in entries.items() for alarm in entry["alarms"]]
    if not cut.eval_window_complete:
        alarms.append("evaluation label window not fully observed")
    importance = (
        quality.gain_importance(load_booster(exported).get_score(importance_type="gain"), top=len(exported_features))
        if exported is not None
        else None
    )
    figures = d["figures"]
    rfm_figures = figures[champion.RFM]
    metrics = {
        **base,
        "status": status,
        "reason": None if chosen else why,
        "sizes": d["sizes"],
        "model": figures[champion.XGBOOST],
        "rfm_baseline": {**rfm_figures, "features": d["rfm_columns"], "method": RFM_METHOD},
        "model_beats_rfm": bool((figures[champion.XGBOOST].get("pr_auc") or 0) > (rfm_figures.get("pr_auc") or 0)),
        "champion": block,
        "leakage": d["leakage"],
        "importance": (importance or [])[:30],
        "alarms": alarms,
        "training": d["lookalike_info"],
        "baseline_training": d["baseline_info"],
        "production_training": production_info,
        "seconds": round(time.perf_counter() - job.started, 3),
    }
    card |= {
        "status": status,
        "reason": None if chosen else why,
        "model_version": model_version(exported) if exported is not None else None,
        "champion": block,
        "alarms": alarms,
        "created_at": _now(),
    }
    if chosen is not None:
        card |= {
            "feature_names": list(exported_features),
            "feature_types": [types[n] for n in exported_features],
            "roc_auc": entries[chosen]["roc_auc"],
            "pr_auc": entries[chosen]["pr_auc"],
        }
    if chosen == champion.XGBOOST:
        card |= {
            "scale_pos_weight": production_info.get("scale_pos_weight"),
            "calibration": production_info.get("calibration"),
        }
    level = logging.INFO if chosen is not None else logging.WARNING
    log.log(level, "train: %s %s (%.1fs)", job.name, decision_line(block, status), metrics["seconds"])
    return SegmentModel(metrics, card, exported, importance)


def decision_line(block: dict[str, Any], status: str) -> str:
    """One line for the console: chosen or rejected, and why."""
    if block["chosen"] is None:
        return f"{status}: {block['reason']}"
    return f"champion {block['chosen']}: {block['reason']}"


def _gate_reasons(stats: dict[str, int], as_of: dt.date, t: TrainingConfig) -> list[str]:
    reasons = []
    negatives = stats["rows"] - stats["positives"]
    if stats["positives"] < t.min_positives:
        reasons.append(
            f"{stats['positives']} positives at the training cut-off {as_of} "
            f"(training.min_positives = {t.min_positives})"
        )
    if negatives < t.min_negatives:
        reasons.append(
            f"{negatives} negatives at the training cut-off {as_of} (training.min_negatives = {t.min_negatives})"
        )
    return reasons


def _no_refit(stats: dict[str, int], as_of: dt.date, t: TrainingConfig) -> str | None:
    """Why the snapshot at refit_as_of is too thin to refit honestly, or None (a validation split with one
    class cannot calibrate or stop early)."""
    reasons = _gate_reasons(stats, as_of, t)
    if reasons or not 0 < stats["valid_positives"] < stats["valid_rows"]:
        return "; ".join(reasons) or f"the validation split at {as_of} has one class only"
    return None
