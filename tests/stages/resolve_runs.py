"""Helpers of the resolve and evaluate stage tests: a generated sample as files, a run of chosen stages."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.config import JobConfig
from jobs.run.layout import RunLayout
from jobs.run.pipeline import run_pipeline
from jobs.run.stage import Stage, ordered
from jobs.stages import evaluate, resolve
from jobs.storage import read_arrow, read_json

PERSONS, PARTNERS, DAYS = 250, 4, 30
STAGES = ordered([Stage.of(resolve.run), Stage.of(evaluate.run)])


def write_files(table: pa.Table, folder, chunks: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, table.num_rows, chunks + 1).astype(int)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        pq.write_table(table.slice(a, b - a), folder / f"events-{i:04d}.parquet")


def run_stages(config: JobConfig, run_dir: str, names=("resolve",)) -> dict:
    """Run the named stages into `run_dir`; returns each stage's figures (the `result` in summary.json)."""
    layout = RunLayout(run_dir)
    run_pipeline(config, STAGES, names=list(names), layout=layout)
    stages = read_json(layout.summary, config.storage)["stages"]
    return {name: stages[name] for name in names}


def resolved(run_dir: str, storage) -> dict:
    """(partner_id, event_id) -> persona_id of a run's events_resolved."""
    table = read_arrow(
        RunLayout(run_dir).table("events_resolved"), storage, columns=["partner_id", "event_id", "persona_id"]
    )
    keys = zip(table.column("partner_id").to_pylist(), table.column("event_id").to_pylist())
    return dict(zip(keys, table.column("persona_id").to_pylist()))
