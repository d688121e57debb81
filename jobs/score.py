"""Score stage: every eligible persona gets a score, a percentile and a membership flag per trained segment.

    features/ ──ReadParquet->map_batches, fused (actor pool: every model loaded once per actor)──▶ (persona, segment, score)
              ──per-block score histograms──▶ tree of Ray tasks merging them: sum, min, max per (segment, bin)
              ──driver: cumulative counts per segment (small: bins, not scores)──▶ percentile + member
              ──▶ scores/

Scoring runs in a pool of `config.scoring.actors` actors (fractional CPUs, so the rest of the stage keeps a
core on a 2-core machine); each actor reads model.json once in `__init__`, checks its sha256 against the
card's model_version, then reads feature files itself (Ray Data fuses the Parquet read into the actors, see
`read_features`) and predicts `batch_size` rows at a time with `Booster.inplace_predict` on one float32
matrix built straight from the Arrow batch.

Percentiles are mid-ranks within a segment (0..100, higher = more likely), computed without collecting scores
on the driver: each block turns its scores into per-bin rows (count, lowest and highest score), where a bin is
the top 26 bits of the score's order-preserving bit pattern (sign, exponent and 14 mantissa bits: a relative
width of 2^-14, so bins follow the scores wherever they crowd, as log-scale bins would); a tree of Ray tasks
merges them per (segment, bin), summing the counts and keeping the min / max; the driver turns that (one row per occupied bin,
not per persona) into cumulative counts per segment; a last map places each score inside its bin by linear
interpolation between the bin's lowest and highest score. Ties (all scores of a bin equal, common with tree
models) get their exact mid-rank; otherwise the error is at most the share of one bin's rows.
Membership: percentile >= 100 - top_percent, or score >= threshold (config.scoring.membership).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.matrix import feature_matrix
from jobs import io
from jobs.config import JobConfig, ScoringConfig, SegmentConfig, StorageConfig
from jobs.errors import UserError
from jobs.run.naming import validate_segment_name
from jobs.raykit.session import openmp_threads, ray_session

log = logging.getLogger(__name__)

ID_COLUMNS = ("persona_id", "as_of")

SCORED_SCHEMA = pa.schema(
    [("persona_id", pa.string()), ("segment", pa.string()), ("score", pa.float64()), ("model_version", pa.string())]
)
SCORES_SCHEMA = pa.schema(
    [
        ("persona_id", pa.string()),
        ("segment", pa.string()),
        ("score", pa.float64()),
        ("percentile", pa.float64()),
        ("model_version", pa.string()),
        ("member", pa.bool_()),
    ]
)
_HIST_SCHEMA = pa.schema(
    [("segment", pa.string()), ("bin", pa.int64()), ("count", pa.int64()), ("lo", pa.float64()), ("hi", pa.float64())]
)

# Bins keep the top 26 bits of the 64-bit order key: sign + 11 exponent bits + 14 mantissa bits.
_BIN_SHIFT = np.uint64(64 - 26)
_SIGN = np.uint64(1 << 63)

# (segment, feature batch, feature categories in slot order or None) -> bool per row
EligibleFn = Callable[[SegmentConfig, pa.Table, Sequence[str] | None], np.ndarray]


@dataclass(frozen=True)
class ModelSpec:
    """One trained segment model as its card describes it."""

    segment: SegmentConfig
    model_path: str
    model_version: str
    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...] | None
    categories: tuple[str, ...] | None = None  # feature category slots the model was trained with


# --------------------------------------------------------------------------------------------- models


def model_version_of(raw: bytes) -> str:
    """The model version as the train stage writes it: sha256 of model.json, first 12 hex."""
    return hashlib.sha256(raw).hexdigest()[:12]


def load_booster(raw: bytes, nthread: int | None = None):
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    if nthread:
        booster.set_param({"nthread": int(nthread)})
    return booster


def feature_columns(schema: pa.Schema) -> list[str]:
    """The feature columns of a features/ table, in table order (everything but the id columns)."""
    return [name for name in schema.names if name not in ID_COLUMNS]


def check_feature_names(segment: str, model_features: Sequence[str], table_features: Sequence[str], source: str) -> list[str]:
    """Refuse a model that needs a feature the table lacks; returns the table's columns the model does not use.

    Scoring selects the model's columns by name, so extra table columns are harmless (they are reported);
    a missing or repeated one means the model was trained on another feature list: that is a UserError.
    """
    table_set = set(table_features)
    duplicated = sorted({f for f in model_features if list(model_features).count(f) > 1})
    missing = [f for f in model_features if f not in table_set]
    model_set = set(model_features)
    unused = [f for f in table_features if f not in model_set]
    if not (missing or duplicated):
        return unused

    def _few(names: list[str]) -> str:
        return ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")

    problems = []
    if missing:
        problems.append(f"{len(missing)} model feature(s) missing from the feature table: {_few(missing)}")
    if duplicated:
        problems.append(f"repeated feature names in the model: {_few(duplicated)}")
    raise UserError(
        f"the model for segment {segment!r} ({source}) does not match the feature table: {'; '.join(problems)}. "
        "Retrain the segment (`segments train`) on this feature table, or recompute the features the model expects."
    )


def load_model_specs(
    config: JobConfig, run_dir: str, table_features: Sequence[str], table_categories: Sequence[str] | None = None
) -> tuple[list[ModelSpec], list[dict[str, Any]]]:
    """The trained models of the configured segments, validated; and the segments skipped, with why.

    `table_categories`: the feature category slots of the features/ table (its marker's `categories`).
    """
    layout = io.RunLayout(run_dir)
    storage = config.storage
    specs: list[ModelSpec] = []
    skipped: list[dict[str, Any]] = []
    for segment in config.segments:
        name = validate_segment_name(segment.name)
        card_path = layout.path("models", name, "model_card.json")
        if not io.exists(card_path, storage):
            skipped.append({"segment": name, "reason": f"no trained model ({card_path} is missing): run `segments train`"})
            continue
        card = io.read_json(card_path, storage)
        if card.get("status") != "trained":
            skipped.append({"segment": name, "reason": card.get("reason") or f"model status {card.get('status')!r}"})
            continue
        if card.get("segment", name) != name:
            raise UserError(f"{card_path} describes segment {card.get('segment')!r}, not {name!r}.")
        definition = card.get("definition")
        if definition and SegmentConfig.model_validate(definition) != segment:
            raise UserError(
                f"segment {name!r} is configured differently from the model trained for it ({card_path}: "
                f"{json.dumps(definition, sort_keys=True)}); retrain the segment (`segments train`)."
            )
        card_categories = card.get("feature_categories")
        if card_categories is not None and table_categories is not None and list(card_categories) != list(table_categories):
            raise UserError(
                f"the model for segment {name!r} was trained with feature category slots {card_categories}, but "
                f"the feature table has {list(table_categories)}: the cat-slot columns mean other categories. "
                "Retrain the segment on this feature table, or pin features.categories."
            )
        model_path = layout.path("models", name, "model.json")
        if not io.exists(model_path, storage):
            raise UserError(f"{card_path} says segment {name!r} was trained, but {model_path} is missing.")
        raw = io.read_bytes(model_path, storage)
        version = model_version_of(raw)
        if card.get("model_version") and card["model_version"] != version:
            raise UserError(
                f"{model_path} has version {version} but its model card says {card['model_version']}: the model was "
                "replaced after training; retrain the segment."
            )
        card_features = list(card.get("feature_names") or [])
        booster = load_booster(raw)
        booster_features = list(booster.feature_names or [])
        if card_features and booster_features and card_features != booster_features:
            raise UserError(f"{model_path} and its model card list different feature names; retrain the segment.")
        model_features = booster_features or card_features
        if not model_features:
            raise UserError(f"{model_path} has no feature names: the model cannot be matched to the feature table.")
        unused = check_feature_names(name, model_features, table_features, model_path)
        if unused:
            log.warning("segment %s: the model does not use %d feature table column(s): %s", name, len(unused),
                        ", ".join(unused[:8]) + (" ..." if len(unused) > 8 else ""))
        types = card.get("feature_types") or booster.feature_types
        categories = card_categories if card_categories is not None else table_categories
        specs.append(
            ModelSpec(
                segment=segment,
                model_path=model_path,
                model_version=card.get("model_version") or version,
                feature_names=tuple(model_features),
                feature_types=tuple(types) if types else None,
                categories=tuple(categories) if categories is not None else None,
            )
        )
    return specs, skipped


# -------------------------------------------------------------------------------------------- scoring


def _default_eligible(segment: SegmentConfig, features: pa.Table, categories: Sequence[str] | None) -> np.ndarray:
    from jobs.segments import eligible_mask  # the segment definitions (train stage's module)

    return eligible_mask(segment, features, categories)


class Scorer:
    """Ray Data callable class: loads every model once per actor, then scores Arrow batches."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        storage: StorageConfig,
        nthread: int = 1,
        eligible_fn: EligibleFn | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.models = []
        for spec in specs:
            raw = io.read_bytes(spec.model_path, storage)
            if model_version_of(raw) != spec.model_version:
                raise RuntimeError(f"{spec.model_path} changed while scoring (version {model_version_of(raw)}, "
                                   f"expected {spec.model_version})")
            self.models.append((spec, load_booster(raw, nthread)))
        self.threads = openmp_threads(nthread)  # held for the actor's life (see jobs.raykit.session)
        self.eligible_fn = eligible_fn or _default_eligible

    def __call__(self, block: pa.Table) -> pa.Table:
        if block.num_rows == 0 or not self.models:
            return SCORED_SCHEMA.empty_table()
        step = self.batch_size or block.num_rows
        return pa.concat_tables([self.score_batch(block.slice(start, step)) for start in range(0, block.num_rows, step)])

    def score_batch(self, batch: pa.Table) -> pa.Table:
        persona = batch.column("persona_id")
        matrices: dict[tuple[str, ...], np.ndarray] = {}
        out = []
        for spec, booster in self.models:
            mask = np.asarray(self.eligible_fn(spec.segment, batch, spec.categories), dtype=bool)
            if mask.shape != (batch.num_rows,):
                raise ValueError(f"eligible_mask for {spec.segment.name} returned shape {mask.shape}, "
                                 f"expected ({batch.num_rows},)")
            eligible = int(mask.sum())
            if eligible == 0:
                continue
            if eligible * 2 < batch.num_rows:  # few eligible: build the matrix of those rows only
                rows = batch.filter(pa.array(mask))
                scores = booster.inplace_predict(feature_matrix(rows, spec.feature_names, order="F"))
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
            out.append(
                pa.table(
                    {
                        "persona_id": ids,
                        "segment": pa.repeat(spec.segment.name, eligible),
                        "score": pa.array(np.asarray(scores, dtype=np.float64)),
                        "model_version": pa.repeat(spec.model_version, eligible),
                    },
                    schema=SCORED_SCHEMA,
                )
            )
        return pa.concat_tables(out) if out else SCORED_SCHEMA.empty_table()


# ----------------------------------------------------------------------------------------- percentiles


def order_keys(scores: np.ndarray) -> np.ndarray:
    """uint64 keys that sort like the float64 scores (negative numbers flipped, positives sign-marked)."""
    bits = np.ascontiguousarray(scores, dtype=np.float64).view(np.uint64)
    return np.where(bits & _SIGN, ~bits, bits | _SIGN)


def score_bins(scores: np.ndarray) -> np.ndarray:
    """The histogram bin of each score (int64, increasing with the score)."""
    return (order_keys(scores) >> _BIN_SHIFT).astype(np.int64)


def _bin_counts(batch: pa.Table) -> pa.Table:
    """Map side of the histogram: (segment, bin, count, lowest and highest score in the bin) of one block."""
    if batch.num_rows == 0:
        return _HIST_SCHEMA.empty_table()
    segments = batch.column("segment").to_numpy(zero_copy_only=False).astype(object)
    scores = batch.column("score").to_numpy()
    out = []
    for segment in np.unique(segments):
        seg_scores = np.sort(scores[segments == segment])
        bins = score_bins(seg_scores)  # sorted too
        starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        ends = np.r_[starts[1:], len(bins)]
        out.append(pa.table({
            "segment": pa.repeat(str(segment), len(starts)),
            "bin": bins[starts],
            "count": (ends - starts).astype(np.int64),
            "lo": seg_scores[starts],
            "hi": seg_scores[ends - 1],
        }, schema=_HIST_SCHEMA))
    return pa.concat_tables(out)


def merge_histograms(partials: pa.Table) -> pa.Table:
    """Reduce side: sum counts, min lo, max hi per (segment, bin)."""
    merged = partials.group_by(["segment", "bin"]).aggregate([("count", "sum"), ("lo", "min"), ("hi", "max")])
    return merged.select(["segment", "bin", "count_sum", "lo_min", "hi_max"]).rename_columns(_HIST_SCHEMA.names)


def percentile_lookup(histogram: pa.Table) -> dict[str, dict[str, np.ndarray]]:
    """Per segment: occupied bins (sorted), their counts and score range, the count below each bin, the total."""
    lookup: dict[str, dict[str, np.ndarray]] = {}
    if histogram.num_rows == 0:
        return lookup
    segments = histogram.column("segment").to_numpy(zero_copy_only=False).astype(object)
    bins = histogram.column("bin").to_numpy()
    counts = histogram.column("count").to_numpy().astype(np.int64)
    lo, hi = histogram.column("lo").to_numpy(), histogram.column("hi").to_numpy()
    for segment in np.unique(segments):
        sel = np.flatnonzero(segments == segment)
        sel = sel[np.argsort(bins[sel], kind="stable")]
        seg_counts = counts[sel]
        below = np.concatenate([[0], np.cumsum(seg_counts)[:-1]]).astype(np.int64)
        lookup[str(segment)] = {"bins": bins[sel], "counts": seg_counts, "below": below, "lo": lo[sel],
                                "hi": hi[sel], "total": np.int64(seg_counts.sum())}
    return lookup


def percentiles(scores: np.ndarray, table: dict[str, np.ndarray]) -> np.ndarray:
    """Mid-rank of each score among the segment's scored personas, as a percent (0..100)."""
    scores = np.asarray(scores, dtype=np.float64)
    bins = score_bins(scores)
    idx = np.searchsorted(table["bins"], bins)
    idx = np.clip(idx, 0, len(table["bins"]) - 1)
    if not np.array_equal(table["bins"][idx], bins):
        raise RuntimeError("a score fell into a bin that the histogram does not have (scores changed between passes)")
    # mid-rank inside the bin: its k scores spread evenly over [lo, hi] at ranks 0.5 .. k-0.5; a bin whose
    # scores are all equal (ties, common with tree models) gets the exact mid-rank k/2
    low, high, count = table["lo"][idx], table["hi"][idx], table["counts"][idx]
    width = high - low
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip(np.nan_to_num((scores - low) / width, nan=0.0), 0.0, 1.0)
    within = np.where(width > 0, 0.5 + frac * (count - 1), count / 2.0)
    ranks = table["below"][idx] + within
    return np.clip(100.0 * ranks / float(table["total"]), 0.0, 100.0)


def membership(scores: np.ndarray, pct: np.ndarray, scoring: ScoringConfig) -> np.ndarray:
    if scoring.membership == "threshold":
        return scores >= scoring.threshold
    return pct >= 100.0 - scoring.top_percent


def _assign(batch: pa.Table, lookup_ref, scoring: dict[str, Any]) -> pa.Table:
    """Final map: percentile and membership of every scored row."""
    import ray

    if batch.num_rows == 0:
        return SCORES_SCHEMA.empty_table()
    lookup = ray.get(lookup_ref)
    cfg = ScoringConfig.model_validate(scoring)
    segments = batch.column("segment").to_numpy(zero_copy_only=False).astype(object)
    scores = batch.column("score").to_numpy()
    pct = np.empty(batch.num_rows, dtype=np.float64)
    for segment in np.unique(segments):
        sel = segments == segment
        pct[sel] = percentiles(scores[sel], lookup[str(segment)])
    return pa.table(
        {
            "persona_id": batch.column("persona_id"),
            "segment": batch.column("segment"),
            "score": batch.column("score"),
            "percentile": pct,
            "model_version": batch.column("model_version"),
            "member": membership(scores, pct, cfg),
        },
        schema=SCORES_SCHEMA,
    )


# ------------------------------------------------------------------------------------------- pipeline


def scoring_map(features_ds, specs: Sequence[ModelSpec], config: JobConfig, eligible_fn: EligibleFn | None = None):
    """The actor-pool map: features dataset -> (persona_id, segment, score, model_version) dataset."""
    from ray.data import ActorPoolStrategy

    scoring = config.scoring
    return features_ds.map_batches(
        Scorer,
        fn_constructor_kwargs={
            "specs": list(specs),
            "storage": config.storage,
            "nthread": scoring.threads_per_actor,
            "eligible_fn": eligible_fn,
            "batch_size": scoring.batch_size,
        },
        batch_format="pyarrow",
        batch_size=None,
        compute=ActorPoolStrategy(size=scoring.actors),
        num_cpus=scoring.cpus_per_actor,
    )


HISTOGRAM_FAN_IN = 8


def _merge_partials(*partials: pa.Table) -> pa.Table:
    rows = [p for p in partials if p.num_rows]  # an empty block may come back without columns
    return merge_histograms(pa.concat_tables(rows)) if rows else _HIST_SCHEMA.empty_table()


def score_histogram(scored_ds) -> pa.Table:
    """The merged (segment, bin) histogram of every score: each block's partial histogram, then a tree of
    Ray tasks merging HISTOGRAM_FAN_IN of them at a time.

    A merged histogram has at most one row per occupied bin (2^26 per segment at the very most, ~1e5 in
    practice), whatever the persona count, so every merge and the result stay small; the driver holds
    only references until the last one. (A Ray Data groupby does the same with aggregator actors, whose
    start-up cost more than the whole merge.)
    """
    import ray

    merge = ray.remote(_merge_partials).options(num_cpus=0.5)
    partials = scored_ds.map_batches(_bin_counts, batch_format="pyarrow", batch_size=None).to_arrow_refs()
    while len(partials) > 1:
        partials = [merge.remote(*partials[i:i + HISTOGRAM_FAN_IN]) for i in range(0, len(partials), HISTOGRAM_FAN_IN)]
    return _merge_partials(*ray.get(partials))


def score_dataset(features_ds, specs: Sequence[ModelSpec], config: JobConfig, eligible_fn: EligibleFn | None = None):
    """Scores with percentiles and membership, as a Ray Dataset (SCORES_SCHEMA); the pure core of the stage."""
    import ray

    scored = scoring_map(features_ds, specs, config, eligible_fn).materialize()
    lookup = percentile_lookup(score_histogram(scored))
    lookup_ref = ray.put(lookup)
    return scored.map_batches(
        _assign,
        fn_kwargs={"lookup_ref": lookup_ref, "scoring": config.scoring.model_dump(mode="json")},
        batch_format="pyarrow",
        batch_size=None,
    )


def read_features(features_path: str, storage: StorageConfig, scoring: ScoringConfig):
    """features/ as a Ray Dataset whose read Ray Data fuses into the scoring actors.

    One read task per file, at the actors' CPUs: Ray Data then runs ReadParquet->MapBatches(Scorer) inside
    the actors, so the wide feature blocks never cross the object store (at 110+ float columns that copy,
    not XGBoost, was the cost of scoring). A table with fewer files than twice the actors is split so that
    every actor gets work; its read then runs as separate tasks.
    """
    files = io.table_files(features_path, storage)
    blocks = max(len(files), 2 * scoring.actors)
    return io.read_dataset(features_path, storage, override_num_blocks=blocks, num_cpus=scoring.cpus_per_actor)


def features_as_of(run_dir: str, storage: StorageConfig) -> str:
    """The as_of date (YYYY-MM-DD) of the run's features/ table: its marker, else Parquet statistics."""
    table_path = io.RunLayout(run_dir).table("features")
    marker = io.read_marker(table_path, storage)
    if marker.get("as_of"):
        return str(marker["as_of"])[:10]
    fs, _ = io.filesystem_for(table_path, storage)
    lows, highs = set(), set()
    for path in io.table_files(table_path, storage):
        with fs.open_input_file(path[len("s3://"):] if io.is_s3(path) else path) as handle:
            parquet = pq.ParquetFile(handle)
            if "as_of" not in parquet.schema_arrow.names:
                raise UserError(f"{table_path} has no as_of column: recompute the features.")
            idx = parquet.schema_arrow.get_field_index("as_of")
            for rg in range(parquet.metadata.num_row_groups):
                column = parquet.metadata.row_group(rg).column(idx)
                stats = column.statistics
                if stats is not None and stats.has_min_max:
                    lows.add(stats.min)
                    highs.add(stats.max)
                elif parquet.metadata.row_group(rg).num_rows:
                    values = pc.unique(parquet.read_row_group(rg, columns=["as_of"]).column(0)).to_pylist()
                    lows.update(values)
                    highs.update(values)
    dates = {str(d)[:10] for d in lows | highs if d is not None}
    if not dates:
        raise UserError(f"{table_path} has no rows with an as_of date.")
    if len(dates) > 1:
        raise UserError(f"{table_path} mixes several as_of dates ({', '.join(sorted(dates))}); recompute the features.")
    return dates.pop()


def run_score(config: JobConfig, run_dir: str, eligible_fn: EligibleFn | None = None) -> dict[str, Any]:
    """`segments score --run RUN_DIR`: writes scores/ and returns a summary (per segment, and skipped ones)."""
    started = time.perf_counter()
    layout = io.RunLayout(run_dir)
    storage = config.storage
    io.check_bucket(run_dir, storage)
    features_path = layout.table("features")
    files = io.table_files(features_path, storage)
    if not files:
        raise UserError(f"{features_path} has no data files: run `segments features` first.")
    fs, _ = io.filesystem_for(features_path, storage)
    first = files[0][len("s3://"):] if io.is_s3(files[0]) else files[0]
    schema = pq.read_schema(first, filesystem=fs)
    if "persona_id" not in schema.names:
        raise UserError(f"{features_path} has no persona_id column.")
    table_features = feature_columns(schema)
    features_marker = io.read_marker(features_path, storage)
    specs, skipped = load_model_specs(config, run_dir, table_features, features_marker.get("categories"))
    if not specs and not skipped:
        raise UserError("no segments are configured: nothing to score.")
    as_of = features_as_of(run_dir, storage)
    for item in skipped:
        log.warning("segment %s skipped: %s", item["segment"], item["reason"])

    with ray_session(config.ray):
        features_ds = read_features(features_path, storage, config.scoring)
        extra = {
            "as_of": as_of,
            "segments": {s.segment.name: s.model_version for s in specs},
            "skipped": skipped,
        }
        if specs:
            scores = score_dataset(features_ds, specs, config, eligible_fn)
            marker = io.write_dataset(scores, layout.table("scores"), storage, extra=extra)
            if marker["rows"]:
                counts = segment_counts(io.read_dataset(layout.table("scores"), storage, columns=["segment", "member"]))
            else:  # nobody eligible: publish an empty table that still has its schema
                marker = io.write_arrow(SCORES_SCHEMA.empty_table(), layout.table("scores"), storage, extra=extra)
                counts = {}
        else:
            marker = io.write_arrow(SCORES_SCHEMA.empty_table(), layout.table("scores"), storage, extra=extra)
            counts = {}

    per_segment = {
        spec.segment.name: {"model_version": spec.model_version, **counts.get(spec.segment.name, {"scored": 0, "members": 0})}
        for spec in specs
    }
    return {
        "stage": "score",
        "run_dir": run_dir,
        "as_of": as_of,
        "personas": features_marker.get("rows"),
        "rows_out": marker["rows"],
        "segments": per_segment,
        "skipped": skipped,
        "membership": config.scoring.membership,
        "path": layout.table("scores"),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _block_counts(batch: pa.Table) -> pa.Table:
    if batch.num_rows == 0:
        return pa.table({"segment": pa.array([], pa.string()), "scored": pa.array([], pa.int64()),
                         "members": pa.array([], pa.int64())})
    grouped = batch.group_by("segment").aggregate([("member", "count"), ("member", "sum")])
    return pa.table({"segment": grouped.column("segment"),
                     "scored": grouped.column("member_count").cast(pa.int64()),
                     "members": grouped.column("member_sum").cast(pa.int64())})


def segment_counts(scores_ds) -> dict[str, dict[str, int]]:
    """Scored rows and members per segment: per-block partial counts, summed on the driver (a few rows)."""
    import ray

    parts = [t for t in ray.get(scores_ds.map_batches(_block_counts, batch_format="pyarrow", batch_size=None)
                                .to_arrow_refs()) if t.num_rows]
    if not parts:
        return {}
    total = pa.concat_tables(parts).group_by("segment").aggregate([("scored", "sum"), ("members", "sum")])
    return {row["segment"]: {"scored": int(row["scored_sum"]), "members": int(row["members_sum"])}
            for row in total.to_pylist()}
