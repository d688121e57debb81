"""Training examples: the rows of a labelled feature snapshot as one segment's model sees them. Pure batch
functions, run inside Ray Data tasks.

A labelled snapshot is the features at a cut-off left-joined with the labels there (`label__SEGMENT`, null =
0). `prepare_batch` keeps the segment's eligible rows and adds the label, the validation flag and a sample
key, both from a seeded hash of persona_id, so the split and every sample stay put from run to run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xgboost

from features.matrix import feature_matrix
from jobs.config import SegmentConfig
from jobs.model.booster import load_booster, model_version
from jobs.raykit.shuffle import hash_columns
from jobs.segments.definitions import eligible_mask

LABEL = "label"
VALID = "_valid"
SAMPLE = "_u"
FIT = "_fit"
SEGMENT = "_segment"
PERSONA = "persona_id"


def hash_uniform(ids: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """A uniform [0, 1) number per id, fixed by (id, seed): splits and samples that do not move."""
    h = hash_columns(pa.table({"k": ids}), ["k"])
    with np.errstate(over="ignore"):
        x = h ^ np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def prepare_batch(
    batch: pa.Table,
    segment: SegmentConfig,
    feature_names: Sequence[str],
    categories: Sequence[str],
    validation_share: float,
    seed: int,
    label: str,
    keep_id: bool = False,
) -> pa.Table:
    """Eligible rows only; `label` as 0/1 (absent = 0); validation flag and sample key from the persona hash
    (and persona_id with `keep_id`)."""
    present = set(batch.column_names)  # the property builds a new list on every access
    missing = [n for n in feature_names if n not in present]
    if missing:
        raise ValueError(f"the feature table lacks {len(missing)} catalogue columns, e.g. {missing[:5]}")
    mask = eligible_mask(segment, batch, categories)
    if not mask.all():  # most segments take everyone: a filter would copy every column for nothing
        batch = batch.filter(pa.array(mask, pa.bool_()))
    if label in present:
        y = pc.fill_null(batch.column(label).cast(pa.int64()), 0)
    else:
        y = pa.array(np.zeros(batch.num_rows, dtype=np.int64))
    ids = batch.column("persona_id")
    columns = {name: batch.column(name) for name in feature_names}
    columns[LABEL] = y
    columns[VALID] = pa.array(hash_uniform(ids, seed) < validation_share, pa.bool_())
    columns[SAMPLE] = pa.array(hash_uniform(ids, seed + 1), pa.float64())
    if keep_id:
        columns[PERSONA] = ids
    return pa.table(columns)


def prepare_segments_batch(
    batch: pa.Table,
    segments: Sequence[tuple[SegmentConfig, str]],
    feature_names: Sequence[str],
    categories: Sequence[str],
    validation_share: float,
    seed: int,
) -> pa.Table:
    """`prepare_batch` for every (segment, its label column) of `segments`, one after the other, with the
    segment's name in `_segment`: one pass over a snapshot prepares the rows of every segment."""
    tables = []
    for segment, label in segments:
        rows = prepare_batch(batch, segment, feature_names, categories, validation_share, seed, label, keep_id=True)
        tables.append(rows.append_column(SEGMENT, pa.array([segment.name] * rows.num_rows, pa.string())))
    return pa.concat_tables(tables)


def segment_stats(batch: pa.Table) -> pa.Table:
    """Rows and positives, in all and in the validation split, per segment of a block prepared by
    `prepare_segments_batch` (one row per segment)."""
    y = pc.cast(batch.column(LABEL), pa.int64())
    v = pc.cast(batch.column(VALID), pa.int64())
    table = pa.table({SEGMENT: batch.column(SEGMENT), "y": y, "v": v, "vy": pc.multiply(y, v)})
    grouped = table.group_by(SEGMENT).aggregate([("y", "count"), ("y", "sum"), ("v", "sum"), ("vy", "sum")])
    return pa.table(
        {
            SEGMENT: grouped.column(SEGMENT),
            "rows": grouped.column("y_count"),
            "positives": grouped.column("y_sum"),
            "valid_rows": grouped.column("v_sum"),
            "valid_positives": grouped.column("vy_sum"),
        }
    )


def tag_fits(batch: pa.Table, fits: Mapping[str, str], columns: Sequence[str]) -> pa.Table:
    """The rows of the segments in `fits` ({segment: fit id}) in `columns`, with their fit id in `_fit`."""
    names = pa.array(list(fits), pa.string())
    index = pc.index_in(batch.column(SEGMENT), value_set=names)
    batch = batch.select(list(columns)).filter(pc.is_valid(index))
    index = index.filter(pc.is_valid(index))
    return batch.append_column(FIT, pa.array(list(fits.values()), pa.string()).take(index))


def per_segment(batch: pa.Table, each, by_segment: Mapping[str, Mapping], **kwargs) -> pa.Table:
    """`each(rows, **kwargs, **by_segment[segment])` for the rows of each segment in `by_segment`, with `_segment`
    (one pass serves every segment: e.g. `predict_batch` with each segment's models, `sample_rows` with each
    segment's share)."""
    tables = []
    segments = batch.column(SEGMENT)
    for name, own in by_segment.items():
        out = each(batch.filter(pc.equal(segments, name)), **kwargs, **own)  # an empty one keeps the columns
        tables.append(out.append_column(SEGMENT, pa.array([name] * out.num_rows, pa.string())))
    return pa.concat_tables(tables, promote_options="permissive")


def sample_rows(batch: pa.Table, share: float, columns: Sequence[str]) -> pa.Table:
    """The rows whose sample key is below `share` (the same rows whatever the blocks), in `columns`."""
    if share < 1.0:
        batch = batch.filter(pc.less(batch.column(SAMPLE), share))
    return batch.select(list(columns))


_BOOSTERS: dict[str, xgboost.Booster] = {}
_KEPT_BOOSTERS = 32  # every segment's candidates are scored in one pass: keep them all loaded


def _booster(raw: bytes) -> xgboost.Booster:
    """The booster of `raw`, loaded once per worker process for the blocks that follow."""
    key = model_version(raw)
    if key not in _BOOSTERS:
        if len(_BOOSTERS) >= _KEPT_BOOSTERS:
            _BOOSTERS.clear()
        _BOOSTERS[key] = load_booster(raw, nthread=1)
    return _BOOSTERS[key]


def predict_batch(
    batch: pa.Table,
    models: Mapping[str, bytes],
    feature_names: Sequence[str],
    keep: Sequence[str],
    share: float,
    margin: bool = False,
    valid_only: bool = False,
    model_features: Mapping[str, Sequence[str]] | None = None,
) -> pa.Table:
    """Predictions (or margins) of every model for a sample of rows, with the label and the columns in `keep`.

    A model reads `feature_names`, or its own columns where `model_features` names them (the RFM booster)."""
    if valid_only:
        batch = batch.filter(batch.column(VALID))
    if share < 1.0:
        batch = batch.filter(pc.less(batch.column(SAMPLE), share))
    out = {LABEL: batch.column(LABEL)}
    for name in keep:
        out[name] = batch.column(name)
    if batch.num_rows:
        matrices = {}
        kind = "margin" if margin else "value"
        for name, model in models.items():
            columns = tuple((model_features or {}).get(name, feature_names))
            if columns not in matrices:
                matrices[columns] = feature_matrix(batch, columns)
            predicted = _booster(model).inplace_predict(matrices[columns], predict_type=kind)
            out[name] = pa.array(predicted.astype(np.float64))
    else:
        for name in models:
            out[name] = pa.array([], pa.float64())
    return pa.table(out)
