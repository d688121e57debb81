"""One segment's model, driven from the driver over Ray Data and Ray Train: gates, fit, calibration, the
honest out-of-time evaluation, the champion selection and the production refit.

For a segment with cut-offs train_as_of < eval_as_of (the run plan's):

1. **Data** (Ray Data, nothing collected but samples): the labelled snapshot at each cut-off (features
   left-joined with labels, `LabelledSnapshots`, shared by every segment), restricted to the segment's
   eligible population and split into train / validation by a seeded hash of persona_id
   (`jobs.model.examples`).
2. **Gates**: fewer than `training.min_positives` positives or `min_negatives` negatives in the training
   snapshot, or a category segment whose category has no feature slot: the segment is `skipped`, with the
   reason; the run goes on.
3. **Fit** at train_as_of: the look-alike on Ray Train (`jobs.model.fit`), calibrated on the validation
   split (`jobs.model.calibration`) so it predicts probabilities; the RFM booster (`jobs.model.baselines`)
   on a hash sample of the same rows.
4. **Evaluation** out of time (`jobs.model.quality`): the snapshot at eval_as_of, labels after it, scored by
   every candidate (also the previous run's champion when comparable); per candidate the metrics, the
   permutation null on the evaluation labels and the alarms; the single-feature leakage check. Metric rows
   are a hash sample of at most `training.max_metric_rows` evaluation rows.
5. **Champion** (`jobs.model.champion`): the candidate exported, or none (`rejected`).
6. **Refit for production**: the winning procedure is fitted again at refit_as_of (= as_of - horizon, the
   latest cut-off whose labels are complete) and that refit is exported; the card records both fits. The
   previous champion, when it wins, is kept as it is.
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
from jobs.model import champion, quality
from jobs.model.baselines import METHOD as RFM_METHOD
from jobs.model.baselines import default_rfm_features, fit_rfm
from jobs.model.booster import load_booster, model_version
from jobs.model.bundle import MODEL, REJECTED, SKIPPED, TRAINED
from jobs.model.calibration import calibrated
from jobs.model.examples import LABEL, SAMPLE, VALID, block_stats, predict_batch, prepare_batch, sample_rows
from jobs.model.fit import fit_booster
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


def _split_sizes(stats: dict[str, int]) -> dict[str, int]:
    return {
        "train_rows": stats["rows"] - stats["valid_rows"],
        "train_positives": stats["positives"] - stats["valid_positives"],
        "valid_rows": stats["valid_rows"],
        "valid_positives": stats["valid_positives"],
    }


def _fit_lookalike(
    prepared: ray.data.Dataset, stats: dict[str, int], features: FeatureSet, t: TrainingConfig, scratch, name: str
) -> tuple[bytes, dict[str, Any]]:
    """The calibrated look-alike booster fitted on Ray Train over a prepared snapshot, and how it was fitted."""
    names = list(features.names)
    sizes = _split_sizes(stats)
    spw = (sizes["train_rows"] - sizes["train_positives"]) / max(1, sizes["train_positives"])
    started = time.perf_counter()
    models, final = fit_booster(
        prepared.select_columns(names + [LABEL, SAMPLE, VALID]),
        training=t,
        feature_names=names,
        feature_types=list(features.types),
        scale_pos_weight=spw,
        storage_path=scratch.path,
        storage_filesystem=scratch.filesystem,
        name=f"{name}-{uuid.uuid4().hex[:8]}",
    )
    fit_seconds = time.perf_counter() - started
    valid = _collect(
        prepared,
        predict_batch,
        models={"margin": models[MODEL]},
        feature_names=names,
        keep=[],
        share=min(1.0, t.max_metric_rows / max(1, sizes["valid_rows"])),
        margin=True,
        valid_only=True,
    )
    model, calibration = calibrated(models[MODEL], valid["margin"], valid[LABEL], spw)
    info = {
        **final,
        "scale_pos_weight": spw,
        "calibration": calibration,
        "params": dict(t.params),
        "num_boost_round": t.num_boost_round,
        "early_stopping_rounds": t.early_stopping_rounds,
        "num_workers": t.num_workers,
        "cpus_per_worker": t.cpus_per_worker,
        "fit_seconds": round(fit_seconds, 3),
    }
    return model, info


def _fit_baseline(
    prepared: ray.data.Dataset, stats: dict[str, int], columns: list[str], t: TrainingConfig
) -> tuple[bytes, dict[str, Any]]:
    """The RFM booster fitted in this process on a hash sample of the prepared snapshot."""
    started = time.perf_counter()
    share = min(1.0, t.max_metric_rows / max(1, stats["rows"]))
    rows = _collect(prepared, sample_rows, share=share, columns=columns + [LABEL, VALID])
    raw = fit_rfm({c: rows[c] for c in columns}, rows[LABEL], rows[VALID], seed=t.seed, nthread=t.nthread or 1)
    return raw, {
        "method": RFM_METHOD,
        "rows": int(len(rows[LABEL])),
        "fit_seconds": round(time.perf_counter() - started, 3),
    }


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


def train_segment(
    segment: SegmentConfig,
    cut: SegmentCutoffs,
    snapshots: LabelledSnapshots,
    features: FeatureSet,
    features_config: FeaturesConfig,
    training: TrainingConfig,
    scratch: TrainScratch,
    inputs: dict[str, str | None],
    previous: PreviousModel | None = None,
) -> SegmentModel:
    """Train, evaluate and choose one segment's champion (also a skipped or rejected one: its reason is its result).

    `inputs`: the versions of the tables trained on (features, labels), recorded in the card. `previous`:
    the previous bundle's exported model of this segment, if any (the incumbent).
    """
    t = training
    started = time.perf_counter()
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

    if segment.kind in ("category_virgins", "category_lovers") and category_slot(segment, features.categories) is None:
        reason = (
            f"category {segment.category!r} has no feature slot in this run's feature categories "
            f"{list(features.categories)}: pin it in features.categories"
        )
        return _skipped(base, card, reason, started)

    train_prepared, train_stats = _prepared(snapshots, segment, cut.train_as_of, features, t)
    sizes = _split_sizes(train_stats)
    reasons = _gate_reasons(train_stats, cut.train_as_of, t)
    if reasons:
        return _skipped(base, card, "; ".join(reasons), started, sizes)

    names = list(features.names)
    types = dict(zip(features.names, features.types))
    rfm_columns = list(t.rfm_features or default_rfm_features(names))
    lookalike, lookalike_info = _fit_lookalike(train_prepared, train_stats, features, t, scratch, segment.name)
    baseline, baseline_info = _fit_baseline(train_prepared, train_stats, rfm_columns, t)

    # Out of time: every candidate scores the snapshot at eval_as_of (labels after it).
    previous_names, incumbent_procedure = _previous_candidate(previous, segment, cut, features)
    candidates = {champion.XGBOOST: lookalike, champion.RFM: baseline}
    candidate_features = {champion.XGBOOST: names, champion.RFM: rfm_columns}
    if previous_names is not None:
        candidates[champion.PREVIOUS] = previous.raw
        candidate_features[champion.PREVIOUS] = previous_names
    eval_prepared, eval_stats = _prepared(snapshots, segment, cut.eval_as_of, features, t)
    sizes.update({"eval_rows": eval_stats["rows"], "eval_positives": eval_stats["positives"]})
    scored = _collect(
        eval_prepared,
        predict_batch,
        models=candidates,
        feature_names=names,
        keep=[],
        share=min(1.0, t.max_metric_rows / max(1, eval_stats["rows"])),
        model_features=candidate_features,
    )
    y_eval = scored[LABEL].astype(np.int64)
    sizes["eval_metric_rows"] = int(len(y_eval))
    leak_share = min(1.0, t.leakage_sample_rows / max(1, eval_stats["rows"]))
    leak_rows = _collect(eval_prepared, sample_rows, share=leak_share, columns=names + [LABEL])
    leakage = quality.leakage_check({n: leak_rows[n] for n in names}, leak_rows[LABEL])

    figures, entries = {}, {}
    for name in candidates:
        figures[name] = quality.binary_metrics(y_eval, scored[name])
        chance = quality.chance_test(y_eval, scored[name], seed=t.seed)
        alarms = champion.candidate_alarms(figures[name], leakage, candidate_features[name])
        entries[name] = champion.candidate_entry(figures[name], chance, alarms, candidate_features[name])
    incumbent = champion.PREVIOUS if champion.PREVIOUS in candidates else (incumbent_procedure or champion.RFM)
    chosen, why = champion.choose(entries, incumbent, t.champion_margin)

    # Production: the winning procedure refitted at refit_as_of (its labels are complete), or the previous model.
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
        fits["production"].update({"procedure": incumbent_procedure, "kept_from": previous.card.get("model_version")})
    elif chosen is not None:
        exported, fits["production"], production_info = _refit(
            chosen,
            cut,
            snapshots,
            segment,
            features,
            t,
            scratch,
            rfm_columns,
            eval_prepared,
            eval_stats,
            lookalike if chosen == champion.XGBOOST else baseline,
        )
    exported_features = candidate_features.get(chosen, names)
    status = TRAINED if chosen is not None else REJECTED
    block = {
        "primary_metric": champion.PRIMARY_METRIC,
        "margin": t.champion_margin,
        "incumbent": incumbent,
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
    rfm_figures = figures[champion.RFM]
    metrics = {
        **base,
        "status": status,
        "reason": None if chosen else why,
        "sizes": sizes,
        "model": figures[champion.XGBOOST],
        "rfm_baseline": {**rfm_figures, "features": rfm_columns, "method": RFM_METHOD},
        "model_beats_rfm": bool((figures[champion.XGBOOST].get("pr_auc") or 0) > (rfm_figures.get("pr_auc") or 0)),
        "champion": block,
        "leakage": leakage,
        "importance": (importance or [])[:30],
        "alarms": alarms,
        "training": lookalike_info,
        "baseline_training": baseline_info,
        "production_training": production_info,
        "seconds": round(time.perf_counter() - started, 3),
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
    log.log(level, "train: %s %s (%.1fs)", segment.name, decision_line(block, status), metrics["seconds"])
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


def _refit(
    chosen: str,
    cut: SegmentCutoffs,
    snapshots: LabelledSnapshots,
    segment: SegmentConfig,
    features: FeatureSet,
    t: TrainingConfig,
    scratch: TrainScratch,
    rfm_columns: list[str],
    eval_prepared: ray.data.Dataset,
    eval_stats: dict[str, int],
    evaluated: bytes,
) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """(the production model, the card's `fits.production`, the refit's training figures)."""
    if cut.refit_as_of == cut.eval_as_of:
        prepared, stats = eval_prepared, eval_stats
    else:
        prepared, stats = _prepared(snapshots, segment, cut.refit_as_of, features, t)
    production = {"procedure": chosen, "rows": stats["rows"], "positives": stats["positives"]}
    reasons = _gate_reasons(stats, cut.refit_as_of, t)
    if reasons or not 0 < stats["valid_positives"] < stats["valid_rows"]:
        # Too thin to refit honestly (a validation split with one class cannot calibrate or stop early).
        why = "; ".join(reasons) or f"the validation split at {cut.refit_as_of} has one class only"
        log.warning("train: %s keeps its evaluation fit: %s", segment.name, why)
        production |= {"as_of": cut.train_as_of.isoformat(), "refit": False, "note": why}
        return evaluated, production | {"model_version": model_version(evaluated)}, {}
    if chosen == champion.XGBOOST:
        model, info = _fit_lookalike(prepared, stats, features, t, scratch, f"{segment.name}-refit")
    else:
        model, info = _fit_baseline(prepared, stats, rfm_columns, t)
    production |= {"as_of": cut.refit_as_of.isoformat(), "refit": True, "model_version": model_version(model)}
    return model, production, info
