"""The one place that reads a finished batch run for serving, so a change of the run's format lands here.

What publishing needs from `ROOT/runs/RUN_ID/`: the file lists of scores/, identity_map/, events_resolved/
and features/ (read inside Ray tasks, one file each, never on the driver), the small identity_audit/ (junk
identifiers), the feature table's cut-off, category slots and columns, and the trained models of the models
bundle with their cards (checked by `jobs.model.bundle`, as the score stage checks them). Tables are
published folders (`jobs.storage.tables`); features/ is partitioned by `as_of=YYYY-MM-DD/` (the snapshot
the scores were computed at is used; an unpartitioned table is read whole).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.config import JobConfig, SegmentConfig, StorageConfig
from jobs.errors import UserError
from jobs.model import bundle
from jobs.run.layout import RunLayout
from jobs.storage import (
    filesystem_for,
    fs_path,
    marker_or_none,
    read_marker,
    read_parquet,
    read_published_file,
    table_files,
)

ID_COLUMNS = ("persona_id", "as_of")  # every other column of features/ is a feature


def read_parquet_file(path: str, storage: StorageConfig, columns: Sequence[str] | None = None) -> pa.Table:
    """One Parquet file of a table (inside a Ray task); columns that the file lacks are simply absent."""
    if columns is not None:
        fs, _ = filesystem_for(path, storage)
        present = set(pq.read_schema(fs_path(path), filesystem=fs).names)
        columns = [c for c in columns if c in present]
    return read_parquet(path, storage, columns)


@dataclass(frozen=True)
class SegmentModel:
    """A trained segment as serving uses it: its definition, the model bytes and what they read."""

    segment: SegmentConfig
    model: bytes
    model_version: str
    feature_names: tuple[str, ...]
    categories: tuple[str, ...] | None


class RunSource:
    """A finished run, read for publishing."""

    def __init__(self, run_dir: str, storage: StorageConfig) -> None:
        self.layout = RunLayout(run_dir)
        self.run_dir = run_dir
        self.storage = storage
        for table in ("scores", "identity_map", "features", "models"):
            if marker_or_none(self.layout.table(table), storage) is None:
                raise UserError(
                    f"{run_dir} is not a finished run: its {table}/ table is not published "
                    f"({self.layout.table(table)} has no _SUCCESS marker); run the pipeline first."
                )
        self._scores_marker = read_marker(self.layout.table("scores"), storage)
        self._features_marker = read_marker(self.layout.table("features"), storage)

    @property
    def run_id(self) -> str:
        return self.layout.run_id

    @property
    def root(self) -> str:
        root = self.layout.root
        if root is None:
            raise UserError(
                f"--run {self.run_dir} is not of the form ROOT/runs/RUN_ID: the online tables go under "
                "ROOT/online/, so publish a run folder inside a ROOT."
            )
        return root

    @property
    def as_of(self) -> dt.date:
        """The cut-off of the scored features: the online path applies only events at or after it."""
        stamp = self._scores_marker.get("as_of") or self._features_marker.get("as_of")
        if not stamp:
            raise UserError(
                f"{self.layout.table('scores')} does not say which cut-off it scored (no as_of): "
                "rerun `segments score`."
            )
        return dt.date.fromisoformat(str(stamp)[:10])

    @property
    def categories(self) -> list[str] | None:
        categories = self._features_marker.get("categories")
        return list(categories) if categories else None

    @property
    def scored_versions(self) -> dict[str, str]:
        """segment -> model version the scores were computed with."""
        return dict(self._scores_marker.get("segments") or {})

    def _feature_partition(self) -> dict | None:
        if not self._features_marker.get("partitions"):
            return None
        return {"as_of": self.as_of}

    def feature_files(self) -> list[str]:
        files = table_files(self.layout.table("features"), self.storage, self._feature_partition())
        if not files:
            raise UserError(f"{self.layout.table('features')} has no data files for the cut-off {self.as_of}.")
        return files

    def feature_names(self) -> list[str]:
        fs, _ = filesystem_for(self.run_dir, self.storage)
        schema = pq.read_schema(fs_path(self.feature_files()[0]), filesystem=fs)
        if "persona_id" not in schema.names:
            raise UserError(f"{self.layout.table('features')} has no persona_id column.")
        return [name for name in schema.names if name not in ID_COLUMNS]

    def score_files(self) -> list[str]:
        return table_files(self.layout.table("scores"), self.storage)

    def scores_have_reasons(self) -> bool:
        """Whether scores/ explains its scores (a `reasons` list per row, from the governance work)."""
        files = self.score_files()
        if not files:
            return False
        fs, _ = filesystem_for(files[0], self.storage)
        return "reasons" in pq.read_schema(fs_path(files[0]), filesystem=fs).names

    def identity_files(self) -> list[str]:
        return table_files(self.layout.table("identity_map"), self.storage)

    def event_files(self) -> list[str]:
        """events_resolved/ (for the intents); a run without it publishes profiles without intents."""
        if marker_or_none(self.layout.table("events_resolved"), self.storage) is None:
            return []
        return table_files(self.layout.table("events_resolved"), self.storage)

    def audit_files(self) -> list[str]:
        if marker_or_none(self.layout.table("identity_audit"), self.storage) is None:
            return []
        return table_files(self.layout.table("identity_audit"), self.storage)

    def models(self, config: JobConfig) -> tuple[list[SegmentModel], list[dict]]:
        """The configured segments' trained models, checked like the score stage checks them (card vs config,
        bytes vs version, names vs the feature table) and against the versions scores/ was computed with;
        and the segments left out, with why."""
        table = self.layout.table("models")
        entries = read_marker(table, self.storage).get("segments", {})
        scored = self.scored_versions
        table_features, categories = self.feature_names(), self.categories or []
        models, skipped = [], []
        for segment in config.segments:
            name = segment.name
            entry = entries.get(name)
            if entry is None or entry.get("status") != bundle.TRAINED:
                skipped.append({"segment": name, "reason": f"no trained model in {table}"})
                continue
            card = json.loads(read_published_file(table, RunLayout.model_file(name, bundle.CARD), self.storage))
            raw = read_published_file(table, RunLayout.model_file(name, bundle.MODEL), self.storage)
            spec = bundle.model_spec(segment, card, raw, table_features, categories, f"{table} {name}/")
            if scored.get(name) != spec.model_version:
                skipped.append(
                    {
                        "segment": name,
                        "reason": f"scores/ holds version {scored.get(name)} of this segment, "
                        f"the model is {spec.model_version}: rerun `segments score`",
                    }
                )
                continue
            models.append(SegmentModel(segment, raw, spec.model_version, spec.feature_names, spec.categories))
        return models, skipped
