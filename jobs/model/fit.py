"""Fitting one XGBoost model on Ray Train (Train V2 `XGBoostTrainer`).

The driver (`fit_booster`) only builds `ScalingConfig` / `RunConfig` (checkpoints in the run's Ray Train
scratch folder, local or S3) / `FailureConfig`; each worker (`train_fn_per_worker`) reads its shard
(`ray.train.get_dataset_shard`), builds QuantileDMatrix from the batches, trains with early stopping on the
validation rows (the `_valid` flag), reports and checkpoints every `report_every` rounds (resuming from the
last checkpoint after a worker failure), and reports the model in one final checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import ray.data
import ray.train
import xgboost
from ray.train.xgboost import RayTrainReportCallback, XGBoostTrainer

from features.matrix import feature_matrix
from jobs.config import TrainingConfig
from jobs.model.booster import load_booster, model_bytes, openmp_threads
from jobs.model.bundle import MODEL
from jobs.model.examples import LABEL, SAMPLE, VALID

FINAL_FILE = "final.json"
PERIODIC_FILE = "model.ubj"
BATCH_ROWS = 65_536
# Train V2 waits for the controller's poll (this interval, 2 s by default) at every report; the driver's
# value travels to the controller and workers when the trainer starts (Ray Train propagates it).
HEALTH_CHECK_INTERVAL = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")


# --------------------------------------------------------------------------------------------------
# The worker side


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
            keys.append(
                batch.column(SAMPLE).to_numpy(zero_copy_only=False)
                if SAMPLE in batch.column_names
                else np.zeros(batch.num_rows)
            )
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
        return [(X[part], y[part]) for part in (rows[i : i + batch_size] for i in range(0, len(rows), batch_size))]

    return ordered(~valid), ordered(valid)


def _quantile_dmatrix(batches: Batches, feature_names, feature_types, nthread: int, max_bin: int, ref=None):
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


class _ReportEveryN(RayTrainReportCallback):
    """RayTrainReportCallback that reports (and checkpoints) only every `frequency` rounds.

    The stock callback calls `ray.train.report` after every round; in Train V2 each report waits for the
    controller to take it (a poll every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S), which would make 300 rounds
    take minutes on any machine. Reporting at the checkpoint rounds only keeps the progress reports and
    the checkpoints for fault tolerance at a fixed, small cost.
    """

    def after_iteration(self, model, epoch, evals_log):
        self._evals_log = evals_log
        if self._frequency and (epoch + 1) % self._frequency == 0:
            self._last_checkpoint_iteration = epoch
            self._save_and_report_checkpoint(self._get_report_dict(evals_log), model)
        return False


def train_fn_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker: shard -> QuantileDMatrix -> xgboost.train -> final checkpoint."""
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
            final_path = Path(path, FINAL_FILE)
            if final_path.exists():  # failed after the final report: report it again
                _final_report(rank, json.loads(final_path.read_text()), path)
                return
            start_model = load_booster(Path(path, PERIODIC_FILE).read_bytes())

    with openmp_threads(nthread):
        _fit_and_report(config, params, nthread, max_bin, start_model, rank)


def _best(booster: xgboost.Booster, early: int | None) -> tuple[xgboost.Booster, int]:
    rounds = booster.num_boosted_rounds()
    best_iteration = int(getattr(booster, "best_iteration", rounds - 1)) if early else rounds - 1
    return (booster[: best_iteration + 1] if best_iteration + 1 < rounds else booster), best_iteration


def _fit_and_report(config: dict, params: dict, nthread: int, max_bin: int, start_model, rank: int) -> None:
    names, types = config["feature_names"], config["feature_types"]
    started = time.perf_counter()
    train, valid = _shard_batches(ray.train.get_dataset_shard("train"), names, config["batch_size"])
    dtrain = _quantile_dmatrix(train, names, types, nthread, max_bin)
    dvalid = _quantile_dmatrix(valid, names, types, nthread, max_bin, ref=dtrain)
    loaded = time.perf_counter()

    done = start_model.num_boosted_rounds() if start_model is not None else 0
    early = config.get("early_stopping_rounds")
    booster = xgboost.train(
        params,
        dtrain,
        num_boost_round=max(0, config["num_boost_round"] - done),
        evals=[(dvalid, "validation")],
        early_stopping_rounds=early,
        xgb_model=start_model,
        verbose_eval=False,
        callbacks=[_ReportEveryN(frequency=config["report_every"], checkpoint_at_end=False, filename=PERIODIC_FILE)],
    )
    best, best_iteration = _best(booster, early)
    best_score = getattr(booster, "best_score", None)
    trained = time.perf_counter()

    final = {
        "best_iteration": best_iteration,
        "boosted_rounds": booster.num_boosted_rounds(),
        "best_validation_auc": float(best_score) if best_score is not None else None,
        "nthread": nthread,
        "load_seconds": loaded - started,
        "train_seconds": trained - loaded,
    }
    files = {MODEL: best}
    with tempfile.TemporaryDirectory() as path:
        if rank == 0:
            for name, model in files.items():
                Path(path, name).write_bytes(model_bytes(model))
            Path(path, FINAL_FILE).write_text(json.dumps(final))
        _final_report(rank, final, path)


def _final_report(rank: int, final: dict, path: str) -> None:
    metrics = {k: v for k, v in final.items() if v is not None}
    metrics["final"] = 1
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(path) if rank == 0 else None)


# --------------------------------------------------------------------------------------------------
# The driver side


def fit_booster(
    dataset: ray.data.Dataset,
    *,
    training: TrainingConfig,
    feature_names: Sequence[str],
    feature_types: Sequence[str],
    scale_pos_weight: float,
    storage_path: str,
    storage_filesystem: pafs.FileSystem | None,
    name: str,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Fit one model with Ray Train; returns ({file name: model bytes}, the final report's metrics).

    `dataset`: the feature columns, the label, the `_valid` flag (validation rows) and the `_u` sample key.
    `storage_path` (as `storage_filesystem` names it; None = local) holds Ray Train's checkpoints of this
    fit under `name`; the caller removes them.
    """
    os.environ.setdefault(*HEALTH_CHECK_INTERVAL)
    run_config = ray.train.RunConfig(
        name=name,
        storage_path=storage_path,
        storage_filesystem=storage_filesystem,
        failure_config=ray.train.FailureConfig(max_failures=training.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
    )
    loop_config = {
        "feature_names": list(feature_names),
        "feature_types": list(feature_types),
        "params": dict(training.params),
        "num_boost_round": training.num_boost_round,
        "early_stopping_rounds": training.early_stopping_rounds,
        "report_every": training.report_every,
        "scale_pos_weight": float(scale_pos_weight),
        "seed": training.seed,
        "nthread": training.nthread,
        "use_gpu": training.use_gpu,
        "batch_size": BATCH_ROWS,
    }
    trainer = XGBoostTrainer(
        train_fn_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=training.num_workers,
            use_gpu=training.use_gpu,
            resources_per_worker={"CPU": training.cpus_per_worker},
        ),
        run_config=run_config,
        datasets={"train": dataset},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {name} ended without a checkpoint")
    with result.checkpoint.as_directory() as local:
        models = {path.name: path.read_bytes() for path in sorted(Path(local).iterdir()) if path.name == MODEL}
        final = json.loads(Path(local, FINAL_FILE).read_text())
    return models, final
