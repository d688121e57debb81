"""Fitting a run's XGBoost models on Ray Train (Train V2 `XGBoostTrainer`): every fit of a round in ONE run.

A Ray Train run has a fixed cost (worker group, rabit tracker, the split coordinator, the controller's
polls: ~10-14 s on 2 cores) that one fit of a few thousand rows never earns back, so the driver
(`fit_boosters`) hands all of a round's fits (e.g. every segment's evaluation fit) to one `XGBoostTrainer`
as ONE set of blocks in the object store whose `_fit` column names each row's fit (made by tasks from the
prepared cut-offs, each read once). With several workers the driver splits them into one equal share per
worker (`Dataset.split(equal=True)`, what Ray Train's own data config does with a streaming split); each worker gets
its share's block references in its config and fetches them from the object store. Handing the dataset to
the trainer (`datasets=`) would start a dataset manager and a split coordinator actor (new processes) and a
streaming executor in every run: 2-7 s of a small run's reading on 2 cores, for rows that already sit in the
object store. Each worker (`train_fn_per_worker`) reads its share once, groups the rows by fit, and runs one
`xgboost.train` per fit (early stopping on the fit's validation rows, the `_valid` flag): one at a time in
the config's order inside the one collective group the trainer sets up, or, a lone worker, several at once
on a thread each (`_fit_shard`). The driver holds the blocks until the run ends, so a restarted worker
fetches them again.

A round small enough that this fixed cost would be most of it (one worker, at most `training.one_task_rows`
rows) runs in one Ray task instead (`_fit_in_task`): the same function on the one share, the same models,
no reports or checkpoints; Ray reruns the task if its worker dies.

Fault tolerance (Ray Train): every checkpoint holds the models of the fits completed so far (`fits/NNN.json`
and their figures) plus the periodic model (at `report_every` rounds) of each fit in progress
(`fits/NNN.periodic.ubj`); after a worker failure the run restores the latest checkpoint, skips the completed
fits and resumes those in progress from their periodic models. A checkpoint is reported after a completed fit
or at a periodic round (fitting several at once: by the worker's main thread, within a second of either)
once `training.checkpoint_seconds` have passed since the last one (each report can wait for the
controller's poll), and after the last fit: that one holds them all.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import ray
import xgboost

from features.matrix import feature_matrix
from jobs.config import TrainingConfig
from jobs.model.booster import load_booster, model_bytes, openmp_threads
from jobs.model.examples import FIT, LABEL, SAMPLE, VALID

FITS_DIR = "fits"
PERIODIC = "periodic.ubj"  # fits/NNN.periodic.ubj: a fit in progress at its last checkpoint
BATCH_ROWS = 65_536
# Train V2 waits for the controller's poll (this interval, 2 s by default) at every report, and a run ends a
# poll after its last one: 0.2 s instead of 0.5 s takes ~1 s off every run (a poll is one small remote call per
# worker). The driver's value travels to the controller and workers when the trainer starts.
HEALTH_CHECK_INTERVAL = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# Ray 2.60 starts a preemption watcher actor (one more worker process, ~2.5 s of imports on 2 cores, beside
# the fit) in every Ray Train run, to wait for a draining node's deadline; without it a preempted worker is a
# failure that the run's FailureConfig restarts from the last checkpoint. Set it to 1 to have the watcher.
PREEMPTION_WATCHER = ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
# a fit's figures carry the wall-clock time its worker began reading its shard, for the run's start-up figure
# (`fit_boosters`), which takes it out again
WORKER_BEGAN = "worker_began_at"


# --------------------------------------------------------------------------------------------------
# The worker side


Batches = list[tuple[np.ndarray, np.ndarray]]


def _blocks(refs: Sequence[ray.ObjectRef]):
    """The worker's share of the round's blocks, fetched one at a time (bounded memory)."""
    for ref in refs:
        yield ray.get(ref)


def _shard_batches(blocks, fits: Sequence[str], feature_names: Sequence[str]) -> dict[str, list]:
    """{fit: its rows of the worker's blocks, read once, as parts for `_split`}.

    Each block's feature matrix is made once, whatever the number of fits whose rows it holds (each fit takes
    its rows out of it): one pass over the round's data before the first fit starts. A fit's `_split` (its
    order and batches) runs when it starts, beside the fits in progress."""
    parts: dict[str, list] = {fit: [] for fit in fits}
    for batch in blocks:
        if not batch.num_rows:
            continue
        encoded = batch.column(FIT).combine_chunks().dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        present = [(code, str(fit)) for code, fit in enumerate(encoded.dictionary.to_pylist()) if fit in parts]
        if not present:  # all completed before a restore
            continue
        X = feature_matrix(batch, feature_names)
        label = batch.column(LABEL).to_numpy(zero_copy_only=False).astype(np.float32)
        key = batch.column(SAMPLE).to_numpy(zero_copy_only=False)
        valid = batch.column(VALID).to_numpy(zero_copy_only=False).astype(bool)
        for code, fit in present:
            rows = np.flatnonzero(codes == code) if len(encoded.dictionary) > 1 else slice(None)
            parts[fit].append((X[rows], label[rows], key[rows], valid[rows]))
    return parts


def _split(parts: list, width: int, batch_size: int) -> tuple[Batches, Batches]:
    """A fit's (training batches, validation batches) of its parts, each split in the order of the rows'
    persona hash (the `_u` column): blocks come in whatever order the tasks made them, and the same data must
    give the same model (subsampling draws by row position). With several workers the split between them
    still varies from run to run."""
    empty = [(np.empty((0, width), np.float32), np.empty(0, np.float32))]
    if not parts:  # an empty shard still takes part in the collective steps
        return empty, empty
    X = np.concatenate([p[0] for p in parts])
    y, key, valid = (np.concatenate([p[i] for p in parts]) for i in (1, 2, 3))
    del parts

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


class _Progress:
    """What a worker has done: the completed fits' models and figures, and the periodic models of the fits in
    progress (several at once when the worker fits concurrently, see `_fit_shard`)."""

    def __init__(self, fits: Sequence[str], rank: int, every_seconds: float) -> None:
        self.fits = list(fits)
        self.rank = rank
        self.models: dict[str, bytes] = {}
        self.figures: dict[str, dict] = {}
        self._periodic: dict[str, bytes] = {}
        self.news = False  # a fit completed or kept since the last report
        self._lock = threading.Lock()  # fitting threads add to the dicts while the reporting thread reads them
        self._every = every_seconds
        self._last = time.monotonic()

    def due(self) -> bool:
        """Whether `checkpoint_seconds` have passed since the last report, as all workers agree (the slowest
        clock's view: every rank must report at the same steps).

        Each report waits for the controller's poll (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S) when the previous one
        is still unread: a report per completed fit and every `report_every` rounds cost ~0.5 s each, most of a
        small run. A failure redoes at most `checkpoint_seconds` of work."""
        due = time.monotonic() - self._last >= self._every
        if xgboost.collective.get_world_size() > 1:
            due = bool(xgboost.collective.allreduce(np.array([float(due)]), xgboost.collective.Op.MAX)[0])
        return due

    def completed(self, fit: str, model: bytes, figures: dict) -> None:
        with self._lock:
            self.models[fit], self.figures[fit] = model, figures
            self._periodic.pop(fit, None)
            self.news = True

    def in_progress(self, fit: str, model: xgboost.Booster) -> None:
        """Keeps `fit`'s model at this round for the next report's checkpoint."""
        raw = bytes(model.save_raw("ubj"))
        with self._lock:
            self._periodic[fit] = raw
            self.news = True

    def restore(self, checkpoint) -> dict[str, xgboost.Booster]:
        """Loads the completed fits of `checkpoint`; {fit in progress there: its periodic model}."""
        resumed = {}
        with checkpoint.as_directory() as path:
            for i, fit in enumerate(self.fits):
                model, periodic = Path(path, FITS_DIR, f"{i:03d}.json"), Path(path, FITS_DIR, f"{i:03d}.{PERIODIC}")
                if model.exists():
                    figures = json.loads(Path(path, FITS_DIR, f"{i:03d}.figures.json").read_text())
                    self.completed(fit, model.read_bytes(), figures)
                elif periodic.exists():
                    resumed[fit] = load_booster(periodic.read_bytes())
        return resumed

    def report(self, metrics: dict) -> None:
        """Reports `metrics` with a checkpoint of the completed fits (and the fits in progress) from rank 0."""
        import ray.train  # see `_ray_train_run`: only Ray Train workers report

        with self._lock:
            models, figures, periodic = dict(self.models), dict(self.figures), dict(self._periodic)
            self.news = False
        with tempfile.TemporaryDirectory() as path:
            if self.rank == 0:
                Path(path, FITS_DIR).mkdir()
                for i, fit in enumerate(self.fits):
                    if fit in models:
                        Path(path, FITS_DIR, f"{i:03d}.json").write_bytes(models[fit])
                        Path(path, FITS_DIR, f"{i:03d}.figures.json").write_text(json.dumps(figures[fit]))
                    elif fit in periodic:
                        Path(path, FITS_DIR, f"{i:03d}.{PERIODIC}").write_bytes(periodic[fit])
            checkpoint = ray.train.Checkpoint.from_directory(path) if self.rank == 0 else None
            ray.train.report({**metrics, "completed_fits": len(models)}, checkpoint=checkpoint)
        self._last = time.monotonic()


class _KeepEveryN(xgboost.callback.TrainingCallback):
    """Keeps the fit in progress every `frequency` rounds (`_Progress.in_progress`) and, when `report` (the
    fits run one at a time), reports it with a checkpoint.

    Reporting after every round would make 300 rounds take minutes: in Train V2 each report waits for the
    controller to take it (a poll every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S). Reporting at the checkpoint
    rounds only keeps the progress reports and the checkpoints for fault tolerance at a fixed, small cost.
    """

    def __init__(self, progress: _Progress, fit: str, frequency: int, report: bool) -> None:
        super().__init__()
        self.fit = fit
        self._progress, self._frequency, self._report = progress, frequency, report

    def after_iteration(self, model, epoch, evals_log) -> bool:
        if self._frequency and (epoch + 1) % self._frequency == 0 and self._progress.due():
            self._progress.in_progress(self.fit, model)
            if self._report:
                auc = (evals_log.get("validation") or {}).get("auc") or [None]
                metrics = {"round": epoch + 1} | ({"validation_auc": float(auc[-1])} if auc[-1] is not None else {})
                self._progress.report(metrics)
        return False


def train_fn_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker: shard -> per fit QuantileDMatrix -> xgboost.train -> checkpoint."""
    import ray.train  # see `_ray_train_run`

    context = ray.train.get_context()
    progress = _Progress(config["fits"], context.get_world_rank(), config["checkpoint_seconds"])
    checkpoint = ray.train.get_checkpoint()
    resumed = progress.restore(checkpoint) if checkpoint is not None else {}
    if len(progress.models) == len(progress.fits):  # failed after the last fit's report: report it again
        progress.report({"final": 1})
        return
    _fit_shard(config, progress, context.get_local_world_size(), context.get_world_size(), resumed)


class _Unreported(_Progress):
    """The progress of a round fitted in one Ray task: nothing is reported or checkpointed (a failure reruns
    the task, see `fit_boosters`)."""

    def __init__(self, fits: Sequence[str]) -> None:
        super().__init__(fits, rank=0, every_seconds=0.0)

    def due(self) -> bool:
        return False

    def report(self, metrics: dict) -> None:
        return None


@ray.remote
def _fit_in_task(config: dict) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """Every fit of `config` in this one task, as one Ray Train worker alone would fit them:
    {fit: (model bytes, its figures)}."""
    progress = _Unreported(config["fits"])
    _fit_shard(config, progress, local_world_size=1, world_size=1)
    return {fit: (progress.models[fit], progress.figures[fit]) for fit in progress.fits}


def _fit_shard(
    config: dict,
    progress: _Progress,
    local_world_size: int,
    world_size: int,
    resumed: Mapping[str, xgboost.Booster] | None = None,
) -> None:
    """The fits of `config` not in `progress` yet, on this rank's shard (those in progress at a restore resumed
    from their periodic models, `resumed`); a report after a fit when `progress` is due, and after the last one.

    A lone worker (or task) with T threads fits up to T of its fits at once, each on T // that many threads:
    a booster of a few thousand rows gains little from a second OpenMP thread (its threads meet at a barrier
    per tree level), and fits are independent; on 2 cores two 1-thread fits at once took 2.6-3.4 s where the
    same ten fits one after the other on 2 threads took 3.6-4.5 s (3k people), 78 s against 90 s at 5M
    events, with the same models. Several workers fit one booster together over XGBoost's collective, one fit
    at a time."""
    nthread = config.get("nthread") or max(1, (os.cpu_count() or 1) // max(1, local_world_size))
    todo = [fit for fit in progress.fits if fit not in progress.models]
    at_once = max(1, min(len(todo), nthread)) if world_size == 1 and not config.get("use_gpu") else 1
    params = dict(config["params"])
    params.update({"nthread": max(1, nthread // at_once), "seed": config["seed"]})
    metrics = params.get("eval_metric") or ["auc"]
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    params["eval_metric"] = [m for m in metrics if m != "auc"] + ["auc"]  # early stopping watches the last
    if config.get("use_gpu"):
        params["device"] = "cuda"
    began_at, started = time.time(), time.perf_counter()
    shard = _blocks(config["shards"][progress.rank])
    data = _shard_batches(shard, todo, config["feature_names"])
    load_seconds = time.perf_counter() - started
    resumed = resumed or {}

    def fit_one(fit: str) -> None:
        spw = float(config["fits"][fit])
        keep = _KeepEveryN(progress, fit, config["report_every"], report=at_once == 1)
        split_started = time.perf_counter()
        batches = _split(data.pop(fit), len(config["feature_names"]), config["batch_size"])
        split_seconds = time.perf_counter() - split_started
        with openmp_threads(params["nthread"]):  # per thread: OpenMP keeps a thread's limit in that thread
            model, figures = _fit_one(config, params | {"scale_pos_weight": spw}, batches, resumed.get(fit), keep)
        figures |= {"load_seconds": load_seconds / len(todo) + split_seconds, WORKER_BEGAN: began_at}
        progress.completed(fit, model, figures)

    if at_once == 1:
        for fit in todo:
            fit_one(fit)
            final = len(progress.models) == len(progress.fits)
            if final or progress.due():
                progress.report({"final": int(final)})
        return
    # the largest first, so that the last one to finish is a small one
    order = sorted(todo, key=lambda fit: -sum(len(part[1]) for part in data[fit]))
    with ThreadPoolExecutor(at_once, thread_name_prefix="fit") as pool:
        pending = {pool.submit(fit_one, fit) for fit in order}
        while pending:  # this thread reports: Ray Train's report is not for the fitting threads
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()
            if pending and progress.news and progress.due():
                progress.report({"final": 0})
    progress.report({"final": 1})


def _best(booster: xgboost.Booster, early: int | None) -> tuple[xgboost.Booster, int]:
    rounds = booster.num_boosted_rounds()
    best_iteration = int(getattr(booster, "best_iteration", rounds - 1)) if early else rounds - 1
    return (booster[: best_iteration + 1] if best_iteration + 1 < rounds else booster), best_iteration


def _fit_one(
    config: dict, params: dict, batches, start_model: xgboost.Booster | None, keep: _KeepEveryN
) -> tuple[bytes, dict[str, Any]]:
    """One booster on its (training, validation) batches, resumed from `start_model`: (its bytes, figures)."""
    names, types, nthread = config["feature_names"], config["feature_types"], params["nthread"]
    max_bin = int(params.get("max_bin", 256))
    started = time.perf_counter()
    train, valid = batches
    dtrain = _quantile_dmatrix(train, names, types, nthread, max_bin)
    dvalid = _quantile_dmatrix(valid, names, types, nthread, max_bin, ref=dtrain)
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
        callbacks=[keep],
    )
    best, best_iteration = _best(booster, early)
    best_score = getattr(booster, "best_score", None)
    return model_bytes(best), {
        "best_iteration": best_iteration,
        "boosted_rounds": booster.num_boosted_rounds(),
        "best_validation_auc": float(best_score) if best_score is not None else None,
        "nthread": nthread,
        "train_seconds": time.perf_counter() - started,
    }


# --------------------------------------------------------------------------------------------------
# The driver side


def _shards(blocks: Sequence[ray.ObjectRef], workers: int) -> list[list[ray.ObjectRef]]:
    """The blocks as one equal share of rows per worker (their references), each block made before a worker
    asks for it: a task that blocked in `ray.get` on one still being made would give its CPU back, and Ray
    would start another worker process meanwhile."""
    if workers == 1:
        if blocks:
            ray.wait(list(blocks), num_returns=len(blocks), fetch_local=False)
        return [list(blocks)]
    from ray.data import from_arrow_refs  # see `_ray_train_run`

    return [share.to_arrow_refs() for share in from_arrow_refs(list(blocks)).split(workers, equal=True)]


def fit_boosters(
    blocks: Sequence[ray.ObjectRef],
    rows: int,
    scale_pos_weights: Mapping[str, float],
    *,
    training: TrainingConfig,
    feature_names: Sequence[str],
    feature_types: Sequence[str],
    storage_path: str,
    storage_filesystem: pafs.FileSystem | None,
    name: str,
    train_loop: Callable[[dict], None] = train_fn_per_worker,
) -> tuple[dict[str, tuple[bytes, dict[str, Any]]], dict[str, Any]]:
    """Fit one model per fit of `scale_pos_weights` ({fit id: scale_pos_weight}) in ONE Ray Train run, in
    that order; `blocks` (Arrow tables in the object store, `rows` rows in all) hold the rows of all of them, each
    with its fit id in `_fit` (`examples.tag_fits`).

    With one worker and at most `training.one_task_rows` rows, the same fits run in one Ray task instead
    (`_fit_in_task`, retried `training.max_failures` times if its worker dies): the models are the same, and
    the run skips Ray Train's controller, worker group and collective set-up, seconds that a round of that
    size never earns back with checkpoints.

    Returns ({fit: (model bytes, its figures)}, the run's figures: `runner` "ray_train" or "ray_task", `rows`,
    `seconds`, `startup_seconds`: from the call until the first worker began to read its shard, the wait for
    the round's blocks and the run's fixed cost, such as a Ray Train run's controller and worker processes).
    The blocks' columns: the features, the label, the `_valid` flag (validation rows), the `_u` sample key and
    `_fit`. `storage_path` (as `storage_filesystem` names it; None = local) holds Ray Train's checkpoints of
    the run under `name`; the caller removes them. `train_loop`: the Ray Train workers'
    function (a test wraps `train_fn_per_worker` to kill a worker mid-run).
    """
    if not scale_pos_weights:
        return {}, {}
    called_at, started = time.time(), time.perf_counter()
    shards = _shards(blocks, training.num_workers)
    loop_config = {
        "fits": {fit: float(spw) for fit, spw in scale_pos_weights.items()},
        "feature_names": list(feature_names),
        "feature_types": list(feature_types),
        "params": dict(training.params),
        "num_boost_round": training.num_boost_round,
        "early_stopping_rounds": training.early_stopping_rounds,
        "report_every": training.report_every,
        "checkpoint_seconds": training.checkpoint_seconds,
        "seed": training.seed,
        "nthread": training.nthread,
        "use_gpu": training.use_gpu,
        "batch_size": BATCH_ROWS,
        "shards": shards,
    }
    in_one_task = training.num_workers == 1 and rows <= training.one_task_rows
    if in_one_task:
        fitted = ray.get(
            _fit_in_task.options(
                num_cpus=training.cpus_per_worker,
                num_gpus=1 if training.use_gpu else 0,
                max_retries=training.max_failures,
            ).remote(loop_config)
        )
    else:
        fitted = _ray_train_run(loop_config, training, storage_path, storage_filesystem, name, train_loop)
    seconds = time.perf_counter() - started
    # after a restore the fits completed before it keep their first worker's time: the earliest is the start
    began_at = min(figures.pop(WORKER_BEGAN) for _, figures in fitted.values())
    return fitted, {
        "runner": "ray_task" if in_one_task else "ray_train",
        "rows": rows,
        "seconds": round(seconds, 3),
        "startup_seconds": round(min(max(0.0, began_at - called_at), seconds), 3),
    }


def _ray_train_run(
    loop_config: dict,
    training: TrainingConfig,
    storage_path: str,
    storage_filesystem: pafs.FileSystem | None,
    name: str,
    train_loop: Callable[[dict], None],
) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """The fits of `loop_config` in one `XGBoostTrainer` run: {fit: (model bytes, its figures)}, read from the
    run's last checkpoint."""
    # imported here, not at the top: a round fitted in one Ray task (`_fit_in_task`) needs neither Ray Train
    # nor Ray Data, ~0.8 s of imports in the worker that runs it, and that worker starts the fit only after them
    import ray.train
    from ray.train.xgboost import XGBoostTrainer

    os.environ.setdefault(*HEALTH_CHECK_INTERVAL)
    os.environ.setdefault(*PREEMPTION_WATCHER)
    run_config = ray.train.RunConfig(
        name=name,
        storage_path=storage_path,
        storage_filesystem=storage_filesystem,
        failure_config=ray.train.FailureConfig(max_failures=training.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
    )
    trainer = XGBoostTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=training.num_workers,
            use_gpu=training.use_gpu,
            resources_per_worker={"CPU": training.cpus_per_worker},
        ),
        run_config=run_config,
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {name} ended without a checkpoint")
    fitted = {}
    with result.checkpoint.as_directory() as local:
        for i, fit in enumerate(loop_config["fits"]):
            model, figures = Path(local, FITS_DIR, f"{i:03d}.json"), Path(local, FITS_DIR, f"{i:03d}.figures.json")
            if not model.exists():
                raise RuntimeError(f"Ray Train run {name} ended without the model of fit {fit}")
            fitted[fit] = (model.read_bytes(), json.loads(figures.read_text()))
    return fitted
