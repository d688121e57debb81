"""One segment's model, driven from the driver over Ray Data and Ray Train: gates, fit, calibration and the
honest out-of-time evaluation.

For a segment with cut-offs train_as_of < eval_as_of (the run plan's):

1. **Data** (Ray Data, nothing collected but samples): the labelled snapshot at each cut-off (features
   left-joined with labels, `LabelledSnapshots`, shared by every segment), restricted to the segment's
   eligible population and split into train / validation by a seeded hash of persona_id
   (`jobs.model.examples`).
2. **Gates**: fewer than `training.min_positives` positives or `min_negatives` negatives in the training
   snapshot, or a category segment whose category has no feature slot: the segment is `skipped`, with the
   reason; the run goes on.
3. **Fit** on Ray Train (`jobs.model.fit`): the model and its shuffled-label twins.
4. **Calibration** on the validation split (`jobs.model.calibration`), so the saved model predicts
   probabilities.
5. **Evaluation** out of time (`jobs.model.quality`): the snapshot at eval_as_of, labels after it, scored by
   the model, its shuffled twins and the RFM baseline (`jobs.model.baselines`) fitted on (a sample of) the
   training snapshot; the single-feature leakage check; gain importance. Metric rows are a hash sample of at
   most `training.max_metric_rows` evaluation rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import ray
import ray.data

from jobs.config import FeaturesConfig, SegmentConfig, TrainingConfig
from jobs.model import quality
from jobs.model.baselines import METHOD as RFM_METHOD
from jobs.model.baselines import default_rfm_features, fit_rfm, rfm_matrix
from jobs.model.booster import load_booster, model_version
from jobs.model.bundle import MODEL, SKIPPED, TRAINED
from jobs.model.calibration import calibrated
from jobs.model.examples import LABEL, SAMPLE, VALID, block_stats, predict_batch, prepare_batch, sample_rows
from jobs.model.fit import SHUFFLED_PREFIX, fit_booster
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


def join_labels(features_ds: ray.data.Dataset, labels_ds: ray.data.Dataset | None, num_partitions: int):
    """The feature snapshot left-joined with the labels at the same cut-off (no labels: everyone is 0)."""
    if labels_ds is None:
        return features_ds
    return features_ds.join(labels_ds, join_type="left_outer", num_partitions=num_partitions, on=("persona_id",))


class LabelledSnapshots:
    """Labelled snapshots by cut-off, each built (one join) and materialized once, shared by every segment."""

    def __init__(self, build_snapshot: Callable[[dt.date], ray.data.Dataset]) -> None:
        self._build = build_snapshot
        self._done: dict[dt.date, ray.data.Dataset] = {}

    def at(self, as_of: dt.date) -> ray.data.Dataset:
        if as_of not in self._done:
            log.info("train: labelled snapshot as of %s", as_of)
            self._done[as_of] = self._build(as_of).materialize()
        return self._done[as_of]


def config_hash(features: FeaturesConfig, training: TrainingConfig, segment: SegmentConfig, categories) -> str:
    """What a model's card records of the settings it was trained with."""
    payload = {
        "features": features.model_dump(mode="json"),
        "training": training.model_dump(mode="json"),
        "segment": segment.model_dump(mode="json"),
        "categories": list(categories or []),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _prepared(
    snapshots: LabelledSnapshots, segment: SegmentConfig, as_of: dt.date, features: FeatureSet, training: TrainingConfig
) -> tuple[ray.data.Dataset, dict[str, int]]:
    """Eligible rows of the snapshot at `as_of` with labels, validation flag and sample key (materialized)."""
    prepared = (
        snapshots.at(as_of)
        .map_batches(
            prepare_batch,
            batch_format="pyarrow",
            zero_copy_batch=True,
            fn_kwargs={
                "segment": segment,
                "feature_names": list(features.names),
                "categories": list(features.categories),
                "validation_share": training.validation_share,
                "seed": training.seed,
                "label": label_column(segment.name),
            },
        )
        .materialize()
    )
    stats = prepared.map_batches(block_stats, batch_format="pyarrow", batch_size=None).to_pandas()
    keys = ("rows", "positives", "valid_rows", "valid_positives")
    return prepared, {k: int(stats[k].sum()) if len(stats) else 0 for k in keys}


def _collect(ds: ray.data.Dataset, fn: Callable, **kwargs) -> dict[str, np.ndarray]:
    """Small per-row results (predictions, samples) on the driver, as numpy columns."""
    refs = ds.map_batches(fn, batch_format="pyarrow", fn_kwargs=kwargs).to_arrow_refs()
    tables = [t for t in ray.get(refs) if t.num_rows] or ray.get(refs[:1])
    table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


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


def train_segment(
    segment: SegmentConfig,
    cut: SegmentCutoffs,
    snapshots: LabelledSnapshots,
    features: FeatureSet,
    features_config: FeaturesConfig,
    training: TrainingConfig,
    scratch: TrainScratch,
    inputs: dict[str, str | None],
) -> SegmentModel:
    """Train, calibrate and evaluate one segment (also a skipped one: its reason is its result).

    `inputs`: the versions of the tables trained on (features, labels), recorded in the card.
    """
    t = training
    started = time.perf_counter()
    base = {
        "segment": segment.name,
        "kind": segment.kind,
        "train_as_of": cut.train_as_of.isoformat(),
        "eval_as_of": cut.eval_as_of.isoformat(),
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

    if segment.kind in ("category_virgins", "category_lovers") and category_slot(segment, features.categories) is None:
        reason = (
            f"category {segment.category!r} has no feature slot in this run's feature categories "
            f"{list(features.categories)}: pin it in features.categories"
        )
        return _skipped(base, card, reason, started)

    train_prepared, train_sizes = _prepared(snapshots, segment, cut.train_as_of, features, t)
    negatives = train_sizes["rows"] - train_sizes["positives"]
    sizes = {
        "train_rows": train_sizes["rows"] - train_sizes["valid_rows"],
        "train_positives": train_sizes["positives"] - train_sizes["valid_positives"],
        "valid_rows": train_sizes["valid_rows"],
        "valid_positives": train_sizes["valid_positives"],
    }
    reasons = []
    if train_sizes["positives"] < t.min_positives:
        reasons.append(
            f"{train_sizes['positives']} positives at the training cut-off {cut.train_as_of} "
            f"(training.min_positives = {t.min_positives})"
        )
    if negatives < t.min_negatives:
        reasons.append(
            f"{negatives} negatives at the training cut-off {cut.train_as_of} "
            f"(training.min_negatives = {t.min_negatives})"
        )
    if reasons:
        return _skipped(base, card, "; ".join(reasons), started, sizes)

    names = list(features.names)
    fit_data = train_prepared.select_columns(names + [LABEL, SAMPLE, VALID])
    spw = (sizes["train_rows"] - sizes["train_positives"]) / max(1, sizes["train_positives"])
    fit_started = time.perf_counter()
    models, final = fit_booster(
        fit_data,
        training=t,
        feature_names=names,
        feature_types=list(features.types),
        scale_pos_weight=spw,
        storage_path=scratch.path,
        storage_filesystem=scratch.filesystem,
        name=f"{segment.name}-{uuid.uuid4().hex[:8]}",
    )
    fit_seconds = time.perf_counter() - fit_started
    valid_share = min(1.0, t.max_metric_rows / max(1, sizes["valid_rows"]))
    valid = _collect(
        train_prepared,
        predict_batch,
        models={"margin": models[MODEL]},
        feature_names=names,
        keep=[],
        share=valid_share,
        margin=True,
        valid_only=True,
    )
    model, calibration = calibrated(models[MODEL], valid["margin"], valid[LABEL], spw)

    # Out of time: the snapshot at eval_as_of, labels after it, scored by the model, its shuffled twins
    # and the RFM baseline fitted on (a sample of) the training snapshot.
    rfm_columns = list(t.rfm_features or default_rfm_features(names))
    eval_prepared, eval_sizes = _prepared(snapshots, segment, cut.eval_as_of, features, t)
    sizes.update({"eval_rows": eval_sizes["rows"], "eval_positives": eval_sizes["positives"]})
    metric_share = min(1.0, t.max_metric_rows / max(1, eval_sizes["rows"]))
    shuffled_names = sorted(n for n in models if n.startswith(SHUFFLED_PREFIX))
    scored = _collect(
        eval_prepared,
        predict_batch,
        models={"score": model, **{n: models[n] for n in shuffled_names}},
        feature_names=names,
        keep=rfm_columns,
        share=metric_share,
    )
    rfm_share = min(1.0, t.max_metric_rows / max(1, train_sizes["rows"]))
    rfm_train = _collect(train_prepared, sample_rows, share=rfm_share, columns=rfm_columns + [LABEL])
    y_eval = scored[LABEL].astype(np.int64)
    sizes["eval_metric_rows"] = int(len(y_eval))

    model_metrics = quality.binary_metrics(y_eval, scored["score"])
    rfm_metrics: dict[str, Any] = {"features": rfm_columns, "method": RFM_METHOD}
    y_rfm = rfm_train[LABEL].astype(np.int64)
    if 0 < y_rfm.sum() < len(y_rfm) and len(y_eval):
        rfm = fit_rfm({c: rfm_train[c] for c in rfm_columns}, y_rfm)
        rfm_scores = rfm.predict_proba(rfm_matrix({c: scored[c] for c in rfm_columns}))[:, 1]
        rfm_metrics.update(quality.binary_metrics(y_eval, rfm_scores))
    n_pos = int(y_eval.sum())
    shuffled_aucs = []
    if 0 < n_pos < len(y_eval):
        shuffled_aucs = [quality.binary_metrics(y_eval, scored[n], calibrated=False)["roc_auc"] for n in shuffled_names]
    shuffled = quality.shuffled_label_alarm(shuffled_aucs, n_pos, len(y_eval) - n_pos)
    leak_share = min(1.0, t.leakage_sample_rows / max(1, eval_sizes["rows"]))
    leak_rows = _collect(eval_prepared, sample_rows, share=leak_share, columns=names + [LABEL])
    leakage = quality.leakage_check({n: leak_rows[n] for n in names}, leak_rows[LABEL])
    importance = quality.gain_importance(load_booster(model).get_score(importance_type="gain"), top=len(names))

    beats = quality.beats_baseline(model_metrics, rfm_metrics)
    alarms = quality.model_alarms(model_metrics, beats, shuffled, leakage, cut.eval_window_complete)
    metrics = {
        **base,
        "status": TRAINED,
        "reason": None,
        "sizes": sizes,
        "model": model_metrics,
        "rfm_baseline": rfm_metrics,
        "model_beats_rfm": beats,
        "shuffled_label": shuffled,
        "leakage": leakage,
        "importance": importance[:30],
        "alarms": alarms,
        "training": {
            **final,
            "scale_pos_weight": spw,
            "calibration": calibration,
            "params": dict(t.params),
            "num_boost_round": t.num_boost_round,
            "early_stopping_rounds": t.early_stopping_rounds,
            "num_workers": t.num_workers,
            "cpus_per_worker": t.cpus_per_worker,
            "fit_seconds": round(fit_seconds, 3),
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
    card |= {
        "status": TRAINED,
        "reason": None,
        "model_version": model_version(model),
        "scale_pos_weight": spw,
        "calibration": calibration,
        "roc_auc": model_metrics.get("roc_auc"),
        "rfm_roc_auc": rfm_metrics.get("roc_auc"),
        "alarms": alarms,
        "created_at": _now(),
    }
    log.info(
        "train: %s AUC %.3f (RFM %s) in %.1fs",
        segment.name,
        model_metrics.get("roc_auc") or float("nan"),
        rfm_metrics.get("roc_auc"),
        metrics["seconds"],
    )
    return SegmentModel(metrics, card, model, importance)
