"""Several boosters in ONE Ray Train run or one Ray task (`jobs.model.fit.fit_boosters`) on the real shared
Ray: each fit gives the booster plain `xgboost.train` gives on the same rows, in a round small enough for one
task and in a Ray Train run whose worker (fitting two at a time) is killed after the first fit's checkpoint,
which resumes without refitting the completed fit."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
import xgboost

from jobs.config import TrainingConfig
from jobs.model import fit
from jobs.model.booster import model_bytes
from jobs.model.examples import FIT, LABEL, SAMPLE, VALID, hash_uniform

NAMES = [f"f{i}" for i in range(6)]
TRAINING = TrainingConfig(
    num_boost_round=30,
    early_stopping_rounds=5,
    report_every=10,
    checkpoint_seconds=0,  # a checkpoint after every completed fit
    max_failures=1,
    one_task_rows=0,  # Ray Train, whatever the rows
    nthread=2,
    params={"objective": "binary:logistic", "eval_metric": ["logloss", "auc"], "max_depth": 3, "eta": 0.3},
)


def _with_fit(table: pa.Table, fit_id: str) -> pa.Table:
    """The rows of one fit with its id in `_fit`, as the train stage hands them to `fit_boosters`."""
    return table.append_column(FIT, pa.array([fit_id] * table.num_rows, pa.string()))


def _rows(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(NAMES))).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=n) > 1.0).astype(np.int64)
    ids = pa.array([f"p{seed}-{i}" for i in range(n)])
    columns = {name: X[:, i] for i, name in enumerate(NAMES)}
    columns |= {LABEL: y, VALID: hash_uniform(ids, 7) < 0.2, SAMPLE: hash_uniform(ids, 8)}
    return pa.table(columns)


def _plain(table: pa.Table) -> bytes:
    """The same fit in this process, rows in sample-key order as the workers put them."""
    table = table.sort_by(SAMPLE)
    X = np.column_stack([table.column(n).to_numpy() for n in NAMES]).astype(np.float32)
    y = table.column(LABEL).to_numpy().astype(np.float32)
    valid = table.column(VALID).to_numpy(zero_copy_only=False)
    spw = float((y[~valid] == 0).sum() / max(1, y[~valid].sum()))
    dtrain = xgboost.QuantileDMatrix(X[~valid], y[~valid], feature_names=NAMES, feature_types=["float"] * 6, nthread=2)
    dvalid = xgboost.QuantileDMatrix(X[valid], y[valid], ref=dtrain, feature_names=NAMES, feature_types=["float"] * 6)
    params = {**TRAINING.params, "eval_metric": ["logloss", "auc"], "nthread": 2, "seed": 7, "scale_pos_weight": spw}
    booster = xgboost.train(
        params, dtrain, 30, evals=[(dvalid, "validation")], early_stopping_rounds=5, verbose_eval=False
    )
    return model_bytes(fit._best(booster, 5)[0])


def _scale_pos_weight(table: pa.Table) -> float:
    y = table.filter(pa.compute.invert(table.column(VALID))).column(LABEL).to_numpy()
    return float((y == 0).sum() / max(1, y.sum()))


def _fit_round(tables: dict[str, pa.Table], training: TrainingConfig, storage: Path, name: str, **kwargs):
    """`fit.fit_boosters` on the rows of `tables` ({fit id: its rows}, three blocks each), as the stage calls it."""
    blocks = []
    for fit_id, table in tables.items():
        tagged, third = _with_fit(table, fit_id), -(-table.num_rows // 3)
        blocks += [ray.put(tagged.slice(i, third)) for i in range(0, table.num_rows, third)]
    return fit.fit_boosters(
        blocks,
        sum(t.num_rows for t in tables.values()),
        {fit_id: _scale_pos_weight(table) for fit_id, table in tables.items()},
        training=training,
        feature_names=NAMES,
        feature_types=["float"] * len(NAMES),
        storage_path=str(storage),
        storage_filesystem=None,
        name=name,
        **kwargs,
    )


def test_fits_of_one_run_match_plain_xgboost_in_one_task_and_in_ray_train_through_a_killed_worker(
    ray_cluster, tmp_path
):
    tables = {f"seg{i}/evaluation": _rows(1500 + 400 * i, seed=i) for i in range(3)}
    second = list(tables)[1]
    plain = {fit_id: _plain(table) for fit_id, table in tables.items()}

    def run(name: str, train_loop=fit.train_fn_per_worker, training=TRAINING):
        fitted, figures = _fit_round(tables, training, tmp_path / "scratch", name, train_loop=train_loop)
        assert list(fitted) == list(tables)
        # the run's fixed cost is part of its seconds, and the fits' figures no longer carry the worker's time
        assert 0 < figures["startup_seconds"] < figures["seconds"]
        assert all(fit.WORKER_BEGAN not in info for _, info in fitted.values())
        return fitted, figures["runner"]

    rows = sum(t.num_rows for t in tables.values())
    in_task, runner = run("small", training=TRAINING.model_copy(update={"one_task_rows": rows}))
    assert runner == "ray_task"
    assert {k: v[0] for k, v in in_task.items()} == plain
    assert not (tmp_path / "scratch" / "small").exists()  # no Ray Train run, no checkpoints

    completed_log = tmp_path / "completed.log"
    crashed = tmp_path / "crashed"
    snapshot = tmp_path / "scratch" / "crash" / "checkpoint_manager_snapshot.json"
    # the worker fits two at a time (2 threads), the largest first: it completes, the others wait for its
    # checkpoint and then kill the worker, so exactly one fit is complete before the restore
    largest = max(tables, key=lambda fit_id: tables[fit_id].num_rows)

    def first_fit_recorded() -> bool:
        """Whether the controller has recorded a checkpoint holding the first completed fit: it writes its
        checkpoint manager's state to the run's storage after taking each reported checkpoint."""
        try:
            state = json.loads(snapshot.read_text())
        except (FileNotFoundError, ValueError):  # not written yet, or being written
            return False
        latest = state.get("latest_checkpoint_result") or {}
        return (latest.get("metrics") or {}).get("completed_fits", 0) >= 1

    def crash_after_first_fit(config: dict) -> None:
        """The stage's worker function, killed (os._exit) as a fit other than the largest starts, once the
        controller has recorded the largest one's checkpoint (a report it has not taken yet would die with the
        worker); every fit that completes is logged."""
        fit_one = fit._fit_one

        def logged_fit(*args):
            fit_id = args[-1].fit
            if fit_id != largest and not crashed.exists():
                deadline = time.monotonic() + 120
                while not first_fit_recorded() and time.monotonic() < deadline:
                    time.sleep(0.1)
                crashed.write_text("1")
                os._exit(1)
            fitted = fit_one(*args)
            with open(completed_log, "a") as log:
                log.write(fit_id + "\n")
            return fitted

        fit._fit_one = logged_fit
        fit.train_fn_per_worker(config)

    watchers: list[str] = []  # Ray Train's preemption watcher actor: one more process, not started (fit.py)
    done = threading.Event()

    def look_for_a_watcher() -> None:
        import psutil

        while not done.wait(0.1):
            for proc in psutil.process_iter(["cmdline"]):
                cmdline = " ".join(proc.info["cmdline"] or [])
                if "ray::PreemptionWatcher" in cmdline:
                    watchers.append(cmdline)

    looking = threading.Thread(target=look_for_a_watcher, daemon=True)
    looking.start()
    try:
        resumed, runner = run("crash", crash_after_first_fit)  # one_task_rows 0: a Ray Train run
    finally:
        done.set()
        looking.join(timeout=5)
    assert runner == "ray_train" and crashed.exists()
    assert not watchers
    # the largest fit was completed once (before the crash), the others once each after the restore
    completed = completed_log.read_text().split()
    assert completed[0] == largest and sorted(completed) == sorted(tables)
    assert {k: v[0] for k, v in resumed.items()} == plain
    assert resumed[second][1]["best_iteration"] == in_task[second][1]["best_iteration"]


def test_a_round_in_one_task_is_rerun_when_its_worker_is_killed(ray_cluster, tmp_path):
    """The one-task round (`fit._fit_in_task`) whose worker is SIGKILLed while it runs: Ray reruns the task
    (`training.max_failures` retries) and the models are those of an undisturbed run."""
    import psutil

    tables = {"seg/evaluation": _rows(20_000, seed=9)}
    training = TRAINING.model_copy(update={"one_task_rows": 20_000, "num_boost_round": 200})

    def run(name: str) -> dict:
        fitted, figures = _fit_round(tables, training, tmp_path / "scratch", name)
        assert figures["runner"] == "ray_task"
        return {k: v[0] for k, v in fitted.items()}

    def running_the_task() -> list[psutil.Process]:
        """The workers whose process title says they run `_fit_in_task` (Ray names a busy worker after its task)."""
        return [p for p in psutil.process_iter(["cmdline"]) if "ray::_fit_in_task" in " ".join(p.info["cmdline"] or [])]

    clean = run("clean")
    deadline = time.monotonic() + 30
    while running_the_task() and time.monotonic() < deadline:  # the clean run's worker is idle again
        time.sleep(0.01)
    killed: list[int] = []

    def kill_the_first_attempt() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for proc in running_the_task():
                proc.kill()
                killed.append(proc.pid)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_first_attempt, daemon=True)
    killer.start()
    assert run("killed") == clean
    killer.join(timeout=1)
    assert len(killed) == 1
