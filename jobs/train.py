"""Train stage: one look-alike XGBoost model per segment on Ray Train, with an honest quality report.

For every configured segment (`jobs.segments` holds the definitions):

1. **Cut-offs** (`resolve_cutoffs`). `as_of` = config.features.as_of or the day after the last event.
   Out-of-time evaluation at `eval_as_of` (default `as_of - horizon`, so its label window is fully
   observed) and training at `train_as_of` (default `eval_as_of - horizon`, so the training labels end
   where the evaluation begins). Features at a cut-off see only events before it; labels only events in
   `[cut-off, cut-off + horizon)`.
2. **Data** (Ray Data, nothing collected on the driver): the feature snapshot at each cut-off
   (`features.compute.compute_features`, computed once per date and shared by all segments, with the
   feature category slots pinned to the run's features/ table so a model means the same columns at
   training, evaluation and scoring), left-joined with every trained segment's labels (one label
   shuffle and one `Dataset.join` with `config.ray.num_partitions` partitions per cut-off), then per
   segment restricted to the eligible population (`jobs.segments.eligible_mask`) and split into train /
   validation by a seeded hash of persona_id.
3. **Gates**: fewer than `training.min_positives` positives or `min_negatives` negatives in the
   training snapshot: the segment is written as `status: "skipped"` with the reason; the run goes on.
4. **Ray Train** (`XGBoostTrainer`, Train V2): the driver only builds `ScalingConfig` /
   `RunConfig` (storage in the run's `models/_ray_train/`, local or S3) / `FailureConfig`; each worker
   (`train_fn_per_worker`) reads its shard (`ray.train.get_dataset_shard`), builds QuantileDMatrix
   from the batches, trains with early stopping on the validation split, `scale_pos_weight` = negatives /
   positives, reports and checkpoints every `training.report_every` rounds (resuming from the last
   checkpoint after a worker failure), then trains the shuffled-label alarm model on the same shard with
   permuted labels, and reports both models in one final checkpoint.
5. **Evaluation** out of time (`jobs.report`): ROC-AUC, PR-AUC, base rate, lift / capture at top 1/5/10/20%,
   Brier + reliability bins of the calibrated probability (the odds inflation of `scale_pos_weight` is
   undone by a base-margin shift fitted on the validation split, so the saved model predicts
   probabilities; `calibrated`), gain
   importance, an RFM logistic-regression baseline, the shuffled-label alarm and the single-feature
   leakage alarm. Metric rows are a hash sample of at most `training.max_metric_rows` evaluation rows.

Outputs (`models/SEGMENT/`): model.json, metrics.json, importance.json, report.html and model_card.json
written last (the marker); `models/report.html` shows every segment on one page.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.matrix import feature_matrix
from jobs import io
from jobs import report as rpt
from jobs import segments as seglib
from jobs.config import JobConfig, SegmentConfig
from jobs.errors import UserError
from jobs.raykit.session import openmp_threads

log = logging.getLogger(__name__)

LABEL = "label"
VALID = "_valid"
SAMPLE = "_u"
MODEL_FILE = "model.json"
SHUFFLED_PREFIX = "shuffled-"
FINAL_FILE = "final.json"
PERIODIC_FILE = "model.ubj"
CARD_FILE = "model_card.json"
TRAIN_DIR = "_ray_train"


def shuffled_file(run: int) -> str:
    return f"{SHUFFLED_PREFIX}{run}.json"

# --------------------------------------------------------------------------------------------------
# Cut-offs


@dataclass(frozen=True)
class Cutoffs:
    """The dates of one segment's training and out-of-time evaluation."""

    as_of: dt.date  # end of the data (features/ cut-off)
    train_as_of: dt.date
    eval_as_of: dt.date
    horizon_days: int

    @property
    def eval_window_complete(self) -> bool:
        return self.eval_as_of + dt.timedelta(days=self.horizon_days) <= self.as_of


def resolve_cutoffs(config: JobConfig, segment: SegmentConfig, as_of: dt.date) -> Cutoffs:
    """Training and evaluation cut-offs for `segment` (defaults: see the module docstring)."""
    horizon = dt.timedelta(days=segment.horizon_days)
    eval_as_of = config.training.eval_as_of or (as_of - horizon)
    train_as_of = config.training.train_as_of or (eval_as_of - horizon)
    if train_as_of + horizon > eval_as_of:
        raise UserError(
            f"segment {segment.name}: training labels [{train_as_of}, {train_as_of + horizon}) run past the "
            f"evaluation cut-off {eval_as_of}; the evaluation would not be out of time. Set training.train_as_of "
            f"<= {eval_as_of - horizon} or a later training.eval_as_of."
        )
    return Cutoffs(as_of=as_of, train_as_of=train_as_of, eval_as_of=eval_as_of, horizon_days=segment.horizon_days)


# --------------------------------------------------------------------------------------------------
# Row-level helpers (run inside Ray Data tasks)


def hash_uniform(ids: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """A uniform [0, 1) number per id, fixed by (id, seed): splits and samples that do not move."""
    from jobs.raykit.shuffle import hash_columns

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
    categories: Sequence[str] | None,
    validation_share: float,
    seed: int,
    label: str = LABEL,
) -> pa.Table:
    """Eligible rows only; `label` as 0/1 (absent = 0); validation flag and sample key from the persona hash."""
    missing = [n for n in feature_names if n not in batch.column_names]
    if missing:
        raise ValueError(f"the feature table lacks {len(missing)} catalogue columns, e.g. {missing[:5]}")
    mask = seglib.eligible_mask(segment, batch, categories)
    batch = batch.filter(pa.array(mask, pa.bool_()))
    if label in batch.column_names:
        y = pc.fill_null(batch.column(label).cast(pa.int64()), 0)
    else:
        y = pa.array(np.zeros(batch.num_rows, dtype=np.int64))
    ids = batch.column("persona_id")
    columns = {name: batch.column(name) for name in feature_names}
    columns[LABEL] = y
    columns[VALID] = pa.array(hash_uniform(ids, seed) < validation_share, pa.bool_())
    columns[SAMPLE] = pa.array(hash_uniform(ids, seed + 1), pa.float64())
    return pa.table(columns)


def block_stats(batch: pa.Table) -> pa.Table:
    y = batch.column(LABEL).to_numpy(zero_copy_only=False).astype(np.int64)
    v = batch.column(VALID).to_numpy(zero_copy_only=False).astype(bool)
    return pa.table({"rows": [len(y)], "positives": [int(y.sum())], "valid_rows": [int(v.sum())],
                     "valid_positives": [int(y[v].sum())]})


def sample_rows(batch: pa.Table, share: float, columns: Sequence[str]) -> pa.Table:
    if share < 1.0:
        batch = batch.filter(pc.less(batch.column(SAMPLE), share))
    return batch.select(list(columns))


_BOOSTERS: dict[str, Any] = {}


def _booster(model: bytes):
    import xgboost

    key = hashlib.sha256(model).hexdigest()
    if key not in _BOOSTERS:
        booster = xgboost.Booster()
        booster.load_model(bytearray(model))
        booster.set_param({"nthread": 1})
        _BOOSTERS.clear()
        _BOOSTERS[key] = booster
    return _BOOSTERS[key]


def score_batch(batch: pa.Table, models: dict[str, bytes], feature_names: Sequence[str], keep: Sequence[str],
                share: float, margin: bool = False, valid_only: bool = False) -> pa.Table:
    """Scores (or margins) of every model for a sample of rows, with the label and the columns in `keep`."""
    if valid_only:
        batch = batch.filter(batch.column(VALID))
    if share < 1.0:
        batch = batch.filter(pc.less(batch.column(SAMPLE), share))
    out = {LABEL: batch.column(LABEL)}
    for name in keep:
        out[name] = batch.column(name)
    if batch.num_rows:
        X = feature_matrix(batch, feature_names)
        for name, model in models.items():
            kind = "margin" if margin else "value"
            out[name] = pa.array(_booster(model).inplace_predict(X, predict_type=kind).astype(np.float64))
    else:
        for name in models:
            out[name] = pa.array([], pa.float64())
    return pa.table(out)


# --------------------------------------------------------------------------------------------------
# The worker side of Ray Train


Batches = list[tuple[np.ndarray, np.ndarray]]


def _shard_batches(shard, feature_names: Sequence[str], batch_size: int) -> tuple[Batches, Batches]:
    """The worker's shard as (features, label) batches for training and for validation (the `_valid` flag).

    One dataset carries both splits, so Ray Train starts one split coordinator, not two. Ray Data hands
    blocks over in whatever order they finish; rows are put in the order of their persona hash (the `_u`
    column) so that the same data gives the same model (subsampling draws by row position). With several
    workers the split between them still varies from run to run.
    """
    matrices, labels, keys, flags = [], [], [], []
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
        if batch.num_rows:
            matrices.append(feature_matrix(batch, feature_names))
            labels.append(batch.column(LABEL).to_numpy(zero_copy_only=False).astype(np.float32))
            keys.append(batch.column(SAMPLE).to_numpy(zero_copy_only=False) if SAMPLE in batch.column_names
                        else np.zeros(batch.num_rows))
            flags.append(batch.column(VALID).to_numpy(zero_copy_only=False).astype(bool))
    empty = [(np.empty((0, len(feature_names)), np.float32), np.empty(0, np.float32))]
    if not matrices:  # an empty shard still takes part in the collective steps
        return empty, empty
    X = np.concatenate(matrices)
    del matrices
    y, key, valid = np.concatenate(labels), np.concatenate(keys), np.concatenate(flags)

    def ordered(mask: np.ndarray) -> Batches:
        rows = np.flatnonzero(mask)
        rows = rows[np.argsort(key[rows], kind="stable")]
        if not len(rows):
            return empty
        return [(X[part], y[part]) for part in (rows[i:i + batch_size] for i in range(0, len(rows), batch_size))]

    return ordered(~valid), ordered(valid)


def _quantile_dmatrix(batches, feature_names, feature_types, nthread: int, max_bin: int, ref=None):
    import xgboost

    class _Batches(xgboost.DataIter):
        def __init__(self) -> None:
            self._i = 0
            super().__init__(release_data=False)

        def next(self, input_data: Callable) -> bool:
            if self._i >= len(batches):
                return False
            X, y = batches[self._i]
            input_data(data=X, label=y, feature_names=list(feature_names), feature_types=list(feature_types))
            self._i += 1
            return True

        def reset(self) -> None:
            self._i = 0

    return xgboost.QuantileDMatrix(_Batches(), ref=ref, enable_categorical=True, nthread=nthread, max_bin=max_bin)


def _report_callback(frequency: int):
    """RayTrainReportCallback that reports (and checkpoints) only every `frequency` rounds.

    The stock callback calls `ray.train.report` after every round; in Train V2 each report waits for the
    controller to take it (a poll every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s by default), which would
    make 300 rounds take minutes on any machine. Reporting at the checkpoint rounds only keeps the
    progress reports and the checkpoints for fault tolerance at a fixed, small cost.
    """
    from ray.train.xgboost import RayTrainReportCallback

    class _EveryN(RayTrainReportCallback):
        def after_iteration(self, model, epoch, evals_log):
            self._evals_log = evals_log
            if self._frequency and (epoch + 1) % self._frequency == 0:
                self._last_checkpoint_iteration = epoch
                self._save_and_report_checkpoint(self._get_report_dict(evals_log), model)
            return False

    return _EveryN(frequency=frequency, checkpoint_at_end=False, filename=PERIODIC_FILE)


def train_fn_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker: shard -> QuantileDMatrix -> xgboost.train -> final checkpoint."""
    import ray.train
    import xgboost

    context = ray.train.get_context()
    rank = context.get_world_rank()
    nthread = config.get("nthread") or max(1, (os.cpu_count() or 1) // max(1, context.get_local_world_size()))
    params = dict(config["params"])
    params.update({"nthread": nthread, "seed": config["seed"], "scale_pos_weight": config["scale_pos_weight"]})
    metrics = params.get("eval_metric") or ["auc"]
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    params["eval_metric"] = [m for m in metrics if m != "auc"] + ["auc"]  # early stopping watches the last
    if config.get("use_gpu"):
        params["device"] = "cuda"
    max_bin = int(params.get("max_bin", 256))

    checkpoint = ray.train.get_checkpoint()
    start_model = None
    if checkpoint is not None:
        with checkpoint.as_directory() as path:
            if os.path.exists(os.path.join(path, FINAL_FILE)):  # failed after the final report: report it again
                with open(os.path.join(path, FINAL_FILE)) as f:
                    final = json.load(f)
                _final_report(rank, final, path)
                return
            start_model = xgboost.Booster()
            start_model.load_model(os.path.join(path, PERIODIC_FILE))

    with openmp_threads(nthread):
        _fit_and_report(config, params, nthread, max_bin, start_model, rank)


def _fit_and_report(config: dict, params: dict, nthread: int, max_bin: int, start_model, rank: int) -> None:
    import ray.train
    import xgboost

    names, types = config["feature_names"], config["feature_types"]
    started = time.perf_counter()
    train, valid = _shard_batches(ray.train.get_dataset_shard("train"), names, config["batch_size"])
    dtrain = _quantile_dmatrix(train, names, types, nthread, max_bin)
    dvalid = _quantile_dmatrix(valid, names, types, nthread, max_bin, ref=dtrain)
    loaded = time.perf_counter()

    done = start_model.num_boosted_rounds() if start_model is not None else 0
    early = config.get("early_stopping_rounds")
    booster = xgboost.train(
        params, dtrain, num_boost_round=max(0, config["num_boost_round"] - done), evals=[(dvalid, "validation")],
        early_stopping_rounds=early, xgb_model=start_model, verbose_eval=False,
        callbacks=[_report_callback(config["report_every"])],
    )
    rounds = booster.num_boosted_rounds()
    best_iteration = int(getattr(booster, "best_iteration", rounds - 1)) if early else rounds - 1
    best_score = getattr(booster, "best_score", None)
    best = booster[: best_iteration + 1] if best_iteration + 1 < rounds else booster
    trained = time.perf_counter()

    final = {"best_iteration": best_iteration, "boosted_rounds": rounds,
             "best_validation_auc": float(best_score) if best_score is not None else None,
             "nthread": nthread, "load_seconds": loaded - started, "train_seconds": trained - loaded}
    files = {MODEL_FILE: best}
    y_train, y_valid = dtrain.get_label(), dvalid.get_label()
    for run in range(int(config.get("shuffled_label_runs", 0))):
        # The alarm: the same training on permuted labels (each worker permutes its own shard).
        rng = np.random.default_rng([config["seed"], rank, run + 1])
        dtrain.set_label(rng.permutation(y_train))
        dvalid.set_label(rng.permutation(y_valid))
        shuffled = xgboost.train(params, dtrain, num_boost_round=config["num_boost_round"],
                                 evals=[(dvalid, "validation")], early_stopping_rounds=early, verbose_eval=False)
        s_rounds = shuffled.num_boosted_rounds()
        s_best = int(getattr(shuffled, "best_iteration", s_rounds - 1)) if early else s_rounds - 1
        files[shuffled_file(run)] = shuffled[: s_best + 1] if s_best + 1 < s_rounds else shuffled
    final["shuffled_seconds"] = time.perf_counter() - trained

    with tempfile.TemporaryDirectory() as path:
        if rank == 0:
            for name, model in files.items():
                model.save_model(os.path.join(path, name))
            with open(os.path.join(path, FINAL_FILE), "w") as f:
                json.dump(final, f)
        _final_report(rank, final, path)


def _final_report(rank: int, final: dict, path: str) -> None:
    import ray.train

    metrics = {k: v for k, v in final.items() if v is not None}
    metrics["final"] = 1
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(path) if rank == 0 else None)


# --------------------------------------------------------------------------------------------------
# The driver side of Ray Train


def fit_booster(
    dataset,
    *,
    config: JobConfig,
    feature_names: Sequence[str],
    feature_types: Sequence[str],
    scale_pos_weight: float,
    storage_path: str,
    name: str,
    shuffled_label_runs: int | None = None,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Fit one model with Ray Train; returns ({file name: model bytes}, the final report's metrics).

    `dataset`: the feature columns, the label, and the `_valid` flag (validation rows) and `_u` sample key.
    """
    import ray.train
    from ray.train.xgboost import XGBoostTrainer

    t = config.training
    fs, path = io.filesystem_for(storage_path, config.storage)
    run_config = ray.train.RunConfig(
        name=name,
        storage_path=path,
        storage_filesystem=fs if io.is_s3(storage_path) else None,
        failure_config=ray.train.FailureConfig(max_failures=t.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
    )
    loop_config = {
        "feature_names": list(feature_names), "feature_types": list(feature_types), "params": dict(t.params),
        "num_boost_round": t.num_boost_round, "early_stopping_rounds": t.early_stopping_rounds,
        "report_every": t.report_every, "scale_pos_weight": float(scale_pos_weight), "seed": t.seed,
        "nthread": t.nthread, "use_gpu": t.use_gpu, "batch_size": 65_536,
        "shuffled_label_runs": t.shuffled_label_runs if shuffled_label_runs is None else shuffled_label_runs,
    }
    trainer = XGBoostTrainer(
        train_fn_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker={"CPU": t.cpus_per_worker}
        ),
        run_config=run_config,
        datasets={"train": dataset},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {name} ended without a checkpoint")
    models: dict[str, bytes] = {}
    with result.checkpoint.as_directory() as local:
        for file_name in sorted(os.listdir(local)):
            if file_name == MODEL_FILE or file_name.startswith(SHUFFLED_PREFIX):
                with open(os.path.join(local, file_name), "rb") as f:
                    models[file_name] = f.read()
        with open(os.path.join(local, FINAL_FILE)) as f:
            final = json.load(f)
    try:
        io.delete(io.join(storage_path, name), config.storage)
    except OSError:  # keeping a finished run's checkpoints is harmless
        log.warning("could not remove Ray Train checkpoints of %s", name)
    return models, final


def shift_margin(model: bytes, shift: float) -> bytes | None:
    """The model with `shift` added to every output margin (through its base_score), or None.

    The result is checked on random inputs against the original margins; None when the model format
    is not what this expects (the caller keeps the original model then).
    """
    import xgboost

    try:
        doc = json.loads(model)
        param = doc["learner"]["learner_model_param"]
        raw = str(param["base_score"])
        base = float(raw.strip("[]"))
        new = 1.0 / (1.0 + math.exp(-(math.log(base / (1.0 - base)) + shift)))
        param["base_score"] = f"[{new:.9E}]" if raw.startswith("[") else f"{new:.9E}"
        shifted = json.dumps(doc).encode()
        before, after = xgboost.Booster(), xgboost.Booster()
        before.load_model(bytearray(model))
        after.load_model(bytearray(shifted))
        X = np.random.default_rng(0).normal(size=(64, before.num_features())).astype(np.float32)
        expect = before.inplace_predict(X, predict_type="margin") + shift
        if np.allclose(after.inplace_predict(X, predict_type="margin"), expect, atol=1e-4):
            return shifted
    except Exception:  # noqa: BLE001 - any surprise in the format: keep the model as trained
        pass
    log.warning("could not shift the model's base margin; probabilities stay as trained")
    return None


def prior_corrected(model: bytes, scale_pos_weight: float) -> tuple[bytes, bool]:
    """Undo `scale_pos_weight` in the base margin: training with positive weight w multiplies the
    odds by w, a margin shift of -log(w) divides them back (exact only for a converged model)."""
    if not scale_pos_weight or abs(scale_pos_weight - 1.0) < 1e-12:
        return model, True
    shifted = shift_margin(model, -math.log(scale_pos_weight))
    return (shifted, True) if shifted is not None else (model, False)


def fit_intercept(margins: np.ndarray, y: np.ndarray) -> float:
    """The shift c with mean(sigmoid(margin + c)) == mean(y): intercept-only recalibration."""
    margins = np.asarray(margins, dtype=np.float64)
    target = float(np.mean(y))
    lo, hi = -50.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(margins + mid)))) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-9:
            break
    return (lo + hi) / 2


def calibrated(model: bytes, valid_margins: np.ndarray, valid_y: np.ndarray, scale_pos_weight: float) -> tuple[bytes, dict]:
    """The model whose probabilities match the validation split's positive rate (base margin shifted).

    `scale_pos_weight` buys recall of the rare class during training but inflates the odds; an early
    stopped model has not converged, so the exact prior correction (-log w) is off for rare segments.
    The shift is therefore fitted on the validation split (never on the evaluation cut-off); the prior
    correction is the fallback when the split has one class only. Ranking is unchanged either way.
    """
    if 0 < int(np.sum(valid_y)) < len(valid_y):
        shift = fit_intercept(valid_margins, valid_y)
        shifted = shift_margin(model, shift)
        if shifted is not None:
            return shifted, {"method": "base margin shift fitted on the validation split", "shift": shift}
    corrected, ok = prior_corrected(model, scale_pos_weight)
    if ok:
        return corrected, {"method": "prior correction -log(scale_pos_weight)", "shift": -math.log(scale_pos_weight or 1.0)}
    return model, {"method": "none: weighted probabilities (scale_pos_weight not undone)", "shift": 0.0}


# --------------------------------------------------------------------------------------------------
# RFM baseline


def default_rfm_features(feature_names: Sequence[str]) -> list[str]:
    """Recency, frequency and monetary columns of the catalogue (longest window up to 365 days)."""
    def longest(prefix: str) -> str | None:
        found = sorted((int(n[len(prefix):-1]), n) for n in feature_names
                       if n.startswith(prefix) and n.endswith("d") and n[len(prefix):-1].isdigit())
        within = [n for w, n in found if w <= 365] or [n for _, n in found]
        return within[-1] if within else None

    chosen = [c for c in ("days_since_last_purchase", longest("orders_"), longest("revenue_")) if c and c in feature_names]
    if not chosen:
        raise UserError("no RFM columns (days_since_last_purchase, orders_<N>d, revenue_<N>d) in the feature table; "
                        "set training.rfm_features")
    return chosen


def rfm_matrix(columns: dict[str, np.ndarray]) -> np.ndarray:
    """log1p of each RFM column; recency-like columns get 'never' as a large value plus an indicator."""
    parts = []
    for name, values in columns.items():
        v = np.asarray(values, dtype=np.float64)
        if name.startswith("days_since"):
            parts.append(np.isnan(v).astype(np.float64))
            v = np.where(np.isnan(v), 3650.0, v)
        parts.append(np.log1p(np.clip(np.nan_to_num(v, nan=0.0), 0, None)))
    return np.column_stack(parts)


def fit_rfm(columns: dict[str, np.ndarray], y: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(rfm_matrix(columns), y)
    return model


# --------------------------------------------------------------------------------------------------
# One segment


@dataclass
class _Context:
    config: JobConfig
    layout: io.RunLayout
    events: Any
    feature_names: list[str]
    feature_types: list[str]
    categories: list[str] | None
    input_id: str | None
    features_fn: Callable
    segments: list[SegmentConfig]
    snapshots: dict[dt.date, Any]
    joined: dict[dt.date, Any]

    def labelled(self, as_of: dt.date):
        """The feature snapshot at `as_of` left-joined with every segment's labels (one shuffle, one join)."""
        if as_of not in self.joined:
            labels = seglib.labels_wide_dataset(self.events, self.segments, as_of, self.config)
            self.joined[as_of] = self.features_at(as_of).join(
                labels, join_type="left_outer", num_partitions=self.config.ray.num_partitions, on=("persona_id",)
            ).materialize()
            self.snapshots.pop(as_of, None)  # the joined table holds the features now
        return self.joined[as_of]

    def features_at(self, as_of: dt.date):
        if as_of not in self.snapshots:
            log.info("train: feature snapshot as of %s", as_of)
            self.snapshots[as_of] = self.features_fn(self.events, as_of, self.config).materialize()
        return self.snapshots[as_of]


def _segment_hash(config: JobConfig, segment: SegmentConfig, categories: Sequence[str] | None) -> str:
    payload = {"features": config.features.model_dump(mode="json"), "training": config.training.model_dump(mode="json"),
               "segment": segment.model_dump(mode="json"), "categories": list(categories or [])}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _prepared(ctx: _Context, segment: SegmentConfig, as_of: dt.date):
    """Eligible rows of the snapshot at `as_of` with labels, validation flag and sample key (materialized)."""
    t = ctx.config.training
    prepared = ctx.labelled(as_of).map_batches(
        prepare_batch, batch_format="pyarrow", zero_copy_batch=True,
        fn_kwargs={"segment": segment, "feature_names": ctx.feature_names, "categories": ctx.categories,
                   "validation_share": t.validation_share, "seed": t.seed, "label": seglib.label_column(segment)},
    ).materialize()
    stats = prepared.map_batches(block_stats, batch_format="pyarrow", batch_size=None).to_pandas()
    sizes = {k: int(stats[k].sum()) if len(stats) else 0 for k in ("rows", "positives", "valid_rows", "valid_positives")}
    return prepared, sizes


def _collect(ds, fn: Callable, **kwargs) -> dict[str, np.ndarray]:
    """Small per-row results (scores, samples) on the driver, as numpy columns."""
    import ray

    refs = ds.map_batches(fn, batch_format="pyarrow", fn_kwargs=kwargs).to_arrow_refs()
    tables = [t for t in ray.get(refs) if t.num_rows] or ray.get(refs[:1])
    table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def train_segment(ctx: _Context, segment: SegmentConfig, cut: Cutoffs) -> dict[str, Any]:
    """Train, evaluate and write one segment's folder; returns its metrics (also for skipped segments)."""
    config, t = ctx.config, ctx.config.training
    started = time.perf_counter()
    out = ctx.layout.path("models", segment.name)
    config_hash = _segment_hash(config, segment, ctx.categories)
    base = {"segment": segment.name, "kind": segment.kind, "train_as_of": cut.train_as_of.isoformat(),
            "eval_as_of": cut.eval_as_of.isoformat(), "horizon_days": cut.horizon_days,
            "eval_window_complete": cut.eval_window_complete, "config_hash": config_hash,
            "definition": segment.model_dump(mode="json")}
    card = {**base, "feature_names": ctx.feature_names, "feature_types": ctx.feature_types,
            "feature_categories": ctx.categories, "input_write_id": ctx.input_id}
    io.delete(io.join(out, CARD_FILE), config.storage)  # the folder is in flux until the card is back

    if segment.kind in ("category_virgins", "category_lovers") and seglib.category_slot(segment, ctx.categories or []) is None:
        reason = (f"category {segment.category!r} has no feature slot in this run's feature categories "
                  f"{ctx.categories}: pin it in features.categories")
        metrics = {**base, "status": "skipped", "reason": reason, "sizes": {}, "alarms": [],
                   "seconds": round(time.perf_counter() - started, 3)}
        _write_outputs(ctx, out, metrics, None, card | {"status": "skipped", "reason": reason})
        log.warning("train: %s skipped: %s", segment.name, reason)
        return metrics

    train_prepared, train_sizes = _prepared(ctx, segment, cut.train_as_of)
    negatives = train_sizes["rows"] - train_sizes["positives"]
    sizes = {"train_rows": train_sizes["rows"] - train_sizes["valid_rows"],
             "train_positives": train_sizes["positives"] - train_sizes["valid_positives"],
             "valid_rows": train_sizes["valid_rows"], "valid_positives": train_sizes["valid_positives"]}
    reasons = []
    if train_sizes["positives"] < t.min_positives:
        reasons.append(f"{train_sizes['positives']} positives at the training cut-off {cut.train_as_of} "
                       f"(training.min_positives = {t.min_positives})")
    if negatives < t.min_negatives:
        reasons.append(f"{negatives} negatives at the training cut-off {cut.train_as_of} "
                       f"(training.min_negatives = {t.min_negatives})")
    if reasons:
        metrics = {**base, "status": "skipped", "reason": "; ".join(reasons), "sizes": sizes, "alarms": [],
                   "seconds": round(time.perf_counter() - started, 3)}
        _write_outputs(ctx, out, metrics, None, card | {"status": "skipped", "reason": metrics["reason"]})
        log.warning("train: %s skipped: %s", segment.name, metrics["reason"])
        return metrics

    fit_data = train_prepared.select_columns(ctx.feature_names + [LABEL, SAMPLE, VALID])
    spw = sizes["train_rows"] - sizes["train_positives"]
    spw = spw / max(1, sizes["train_positives"])
    fit_started = time.perf_counter()
    run_name = f"{segment.name}-{io.new_write_id()}"
    models, final = fit_booster(
        fit_data, config=config, feature_names=ctx.feature_names, feature_types=ctx.feature_types,
        scale_pos_weight=spw, storage_path=ctx.layout.path("models", TRAIN_DIR), name=run_name,
    )
    fit_seconds = time.perf_counter() - fit_started
    valid_share = min(1.0, t.max_metric_rows / max(1, sizes["valid_rows"]))
    valid = _collect(train_prepared, score_batch, models={"margin": models[MODEL_FILE]}, feature_names=ctx.feature_names,
                     keep=[], share=valid_share, margin=True, valid_only=True)
    model, calibration = calibrated(models[MODEL_FILE], valid["margin"], valid[LABEL], spw)

    # Out of time: the snapshot at eval_as_of, labels after it, scored by the model, its shuffled twin
    # and the RFM baseline fitted on (a sample of) the training snapshot.
    rfm_columns = list(t.rfm_features or default_rfm_features(ctx.feature_names))
    eval_prepared, eval_sizes = _prepared(ctx, segment, cut.eval_as_of)
    sizes.update({"eval_rows": eval_sizes["rows"], "eval_positives": eval_sizes["positives"]})
    metric_share = min(1.0, t.max_metric_rows / max(1, eval_sizes["rows"]))
    shuffled_names = sorted(n for n in models if n.startswith(SHUFFLED_PREFIX))
    scored = _collect(eval_prepared, score_batch,
                      models={"score": model, **{n: models[n] for n in shuffled_names}},
                      feature_names=ctx.feature_names, keep=rfm_columns, share=metric_share)
    rfm_share = min(1.0, t.max_metric_rows / max(1, train_sizes["rows"]))
    rfm_train = _collect(train_prepared, sample_rows, share=rfm_share, columns=rfm_columns + [LABEL])
    y_eval = scored[LABEL].astype(np.int64)
    sizes["eval_metric_rows"] = int(len(y_eval))

    model_metrics = rpt.binary_metrics(y_eval, scored["score"])
    rfm_metrics: dict[str, Any] = {"features": rfm_columns, "method": "logistic regression on log1p(recency, frequency, monetary)"}
    y_rfm = rfm_train[LABEL].astype(np.int64)
    if 0 < y_rfm.sum() < len(y_rfm) and len(y_eval):
        rfm = fit_rfm({c: rfm_train[c] for c in rfm_columns}, y_rfm)
        rfm_metrics.update(rpt.binary_metrics(y_eval, rfm.predict_proba(rfm_matrix({c: scored[c] for c in rfm_columns}))[:, 1]))
    n_pos = int(y_eval.sum())
    shuffled_aucs = []
    if 0 < n_pos < len(y_eval):
        shuffled_aucs = [rpt.binary_metrics(y_eval, scored[n], calibrated=False)["roc_auc"] for n in shuffled_names]
    shuffled = rpt.shuffled_label_alarm(shuffled_aucs, n_pos, len(y_eval) - n_pos)
    leak_share = min(1.0, t.leakage_sample_rows / max(1, eval_sizes["rows"]))
    leak_rows = _collect(eval_prepared, sample_rows, share=leak_share, columns=ctx.feature_names + [LABEL])
    leakage = rpt.leakage_check({n: leak_rows[n] for n in ctx.feature_names}, leak_rows[LABEL])

    import xgboost

    booster = xgboost.Booster()
    booster.load_model(bytearray(model))
    importance = rpt.gain_importance(booster.get_score(importance_type="gain"), top=len(ctx.feature_names))

    beats = (model_metrics.get("roc_auc") is not None and rfm_metrics.get("roc_auc") is not None
             and model_metrics["roc_auc"] > rfm_metrics["roc_auc"])
    alarms = []
    if shuffled["alarm"]:
        alarms.append(f"shuffled-label AUC {shuffled['roc_auc']:.3f}")
    if leakage["flagged"]:
        alarms.append("leakage: " + ", ".join(f["feature"] for f in leakage["flagged"][:5]))
    if model_metrics.get("roc_auc") is None:
        alarms.append("evaluation set has one class only")
    elif not beats:
        alarms.append("model does not beat RFM")
    if not cut.eval_window_complete:
        alarms.append("evaluation label window not fully observed")
    metrics = {
        **base, "status": "trained", "reason": None, "sizes": sizes, "model": model_metrics, "rfm_baseline": rfm_metrics,
        "model_beats_rfm": bool(beats), "shuffled_label": shuffled, "leakage": leakage, "importance": importance[:30],
        "alarms": alarms,
        "training": {**final, "scale_pos_weight": spw, "calibration": calibration, "params": dict(t.params),
                     "num_boost_round": t.num_boost_round, "early_stopping_rounds": t.early_stopping_rounds,
                     "num_workers": t.num_workers, "cpus_per_worker": t.cpus_per_worker, "fit_seconds": round(fit_seconds, 3)},
        "seconds": round(time.perf_counter() - started, 3),
    }
    version = hashlib.sha256(model).hexdigest()[:12]
    card |= {"status": "trained", "reason": None, "model_version": version, "scale_pos_weight": spw,
             "calibration": calibration,
             "roc_auc": model_metrics.get("roc_auc"), "rfm_roc_auc": rfm_metrics.get("roc_auc"), "alarms": alarms}
    _write_outputs(ctx, out, metrics, model, card, importance)
    log.info("train: %s AUC %.3f (RFM %s) in %.1fs", segment.name, model_metrics.get("roc_auc") or float("nan"),
             rfm_metrics.get("roc_auc"), metrics["seconds"])
    return metrics


def _write_outputs(ctx: _Context, out: str, metrics: dict, model: bytes | None, card: dict,
                   importance: list | None = None) -> None:
    storage = ctx.config.storage
    for name in (MODEL_FILE, "metrics.json", "importance.json", "report.html"):
        io.delete(io.join(out, name), storage)
    if model is not None:
        io.write_bytes(io.join(out, MODEL_FILE), model, storage)
    io.write_json(io.join(out, "metrics.json"), metrics, storage)
    if importance is not None:
        io.write_json(io.join(out, "importance.json"), importance, storage)
    page = rpt.render_page(f"Segment {metrics['segment']}: model quality", [metrics])
    io.write_bytes(io.join(out, "report.html"), page.encode(), storage)
    card = {**card, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if model is None:
        card.setdefault("model_version", None)
    io.write_json(io.join(out, CARD_FILE), card, storage)  # last: the marker


# --------------------------------------------------------------------------------------------------
# Stage entry point


def _feature_categories(config: JobConfig, layout: io.RunLayout) -> list[str] | None:
    """The run's feature category list: pinned in config, else the features/ table's (so models match it)."""
    if config.features.categories:
        return [c.strip().lower() for c in config.features.categories]
    table = layout.table("features")
    if io.exists(io.join(table, io.MARKER), config.storage):
        categories = io.read_marker(table, config.storage).get("categories")
        if categories:
            return list(categories)
    return None


def _data_as_of(config: JobConfig, layout: io.RunLayout, events) -> dt.date:
    """config.features.as_of, else the features/ table's cut-off, else the day after the last event."""
    if config.features.as_of:
        return config.features.as_of
    table = layout.table("features")
    if io.exists(io.join(table, io.MARKER), config.storage):
        stamp = io.read_marker(table, config.storage).get("as_of")
        if stamp:
            return dt.date.fromisoformat(stamp)
    from features.compute import default_as_of

    return default_as_of(events)


def _select_segments(config: JobConfig, segment: str | None) -> list[SegmentConfig]:
    if segment is None:
        return list(config.segments)
    chosen = [s for s in config.segments if s.name == segment]
    if not chosen:
        names = ", ".join(s.name for s in config.segments) or "(none)"
        raise UserError(f"segment {segment!r} is not in the config's segments: {names}.")
    return chosen


def train_segments(
    config: JobConfig,
    run_dir: str,
    segments: Sequence[SegmentConfig],
    events,
    *,
    features_fn: Callable | None = None,
    feature_names: Sequence[str] | None = None,
    feature_types: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Train `segments` on `events` (a Ray Dataset of events_resolved rows); needs Ray up.

    `features_fn(events, as_of, config) -> Dataset` and the feature names / types default to
    `features.compute.compute_features` and `features.catalog` (tests pass small stand-ins, with the
    feature categories pinned in `config.features.categories`).
    """
    layout = io.RunLayout(run_dir)
    for segment in segments:
        try:
            seglib.check_segment(segment)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    categories = _feature_categories(config, layout)
    if categories is None and features_fn is not None:
        categories = []
    if categories is None:  # no features/ table yet: the list the training snapshot chooses is pinned for all
        from features.compute import compute_features_with_categories, default_as_of

        as_of = config.features.as_of or default_as_of(events)
        _, categories = compute_features_with_categories(events, as_of, config)
    config = config.model_copy(update={"features": config.features.model_copy(update={"categories": list(categories)})})
    input_id = None
    source = layout.table("events_resolved")
    if io.exists(io.join(source, io.MARKER), config.storage):
        input_id = io.read_marker(source, config.storage).get("write_id")
    if feature_names is None:
        from features.catalog import feature_names as catalog_names, xgboost_feature_types

        feature_names, feature_types = catalog_names(config.features), xgboost_feature_types(config.features)
    if features_fn is None:
        from features.compute import compute_features as features_fn
    if feature_types is None or len(feature_types) != len(feature_names):
        raise ValueError("feature_types must give one type per feature name")
    ctx = _Context(config=config, layout=layout, events=events, feature_names=list(feature_names),
                   feature_types=list(feature_types), categories=list(categories), input_id=input_id,
                   features_fn=features_fn, segments=list(segments), snapshots={}, joined={})
    as_of = _data_as_of(config, layout, events)
    results = []
    for segment in segments:
        cut = resolve_cutoffs(config, segment, as_of)
        card_path = layout.path("models", segment.name, CARD_FILE)
        if io.exists(card_path, config.storage) and input_id is not None:
            card = io.read_json(card_path, config.storage)
            if card.get("config_hash") == _segment_hash(config, segment, ctx.categories) and card.get("input_write_id") == input_id:
                log.info("train: %s is up to date (model %s)", segment.name, card.get("model_version"))
                results.append(io.read_json(layout.path("models", segment.name, "metrics.json"), config.storage)
                               | {"reused": True})
                continue
        results.append(train_segment(ctx, segment, cut))
    return results


def write_run_report(config: JobConfig, run_dir: str) -> str:
    """models/report.html: every configured segment that has metrics, on one page."""
    layout = io.RunLayout(run_dir)
    sections = []
    for segment in config.segments:
        path = layout.path("models", segment.name, "metrics.json")
        if io.exists(path, config.storage):
            sections.append(io.read_json(path, config.storage))
    target = layout.path("models", "report.html")
    io.write_bytes(target, rpt.render_page(f"Look-alike segments: run {layout.run_id}", sections).encode(), config.storage)
    return target


def run_train(config: JobConfig, run_dir: str, segment: str | None = None) -> dict[str, Any]:
    """`segments train`: models/SEGMENT/ for every configured segment (or one), and models/report.html."""
    from jobs.raykit.session import ray_session

    started = time.perf_counter()
    layout = io.RunLayout(run_dir)
    chosen = _select_segments(config, segment)
    source = layout.table("events_resolved")
    io.read_marker(source, config.storage)  # a clear error when the identity stage has not run
    # Train V2 waits for the controller's poll (this interval) at every report; 2 s by default is
    # needlessly slow for a job's own local Ray. Only affects a Ray started by this process.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    with ray_session(config.ray):
        from features.compute import INPUT_COLUMNS

        events = io.read_dataset(source, config.storage)
        events = events.select_columns([c for c in INPUT_COLUMNS if c in events.columns()])
        results = train_segments(config, run_dir, chosen, events)
    page = write_run_report(config, run_dir)
    summary = {
        "stage": "train",
        "segments": {
            m["segment"]: {"status": m["status"], "reason": m.get("reason"),
                           "roc_auc": (m.get("model") or {}).get("roc_auc"),
                           "rfm_roc_auc": (m.get("rfm_baseline") or {}).get("roc_auc"),
                           "alarms": m.get("alarms", []), "reused": bool(m.get("reused"))}
            for m in results
        },
        "trained": sum(m["status"] == "trained" for m in results),
        "skipped": sum(m["status"] == "skipped" for m in results),
        "seconds": round(time.perf_counter() - started, 3),
        "path": layout.path("models"),
        "report": page,
    }
    return summary
