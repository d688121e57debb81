"""The train stage: one look-alike model per segment, published as ONE `models/` bundle.

Reads tables only: for each segment, the features partitions at its train and eval cut-offs (the run plan's)
left-joined with the labels partitions there (one join per cut-off, shared by every segment), then
`jobs.model.training` fits, calibrates and evaluates it. Feature names and types come from the feature
catalogue for the plan's categories. The bundle's format is in `jobs.model.bundle`.

`training.only_segments` (`segments train --segment NAME`) trains only those; every other configured
segment keeps its files from the previous bundle. Ray Train's checkpoints live in the run's train scratch
folder (`RunLayout.train_scratch`, next to the tables) and are removed once every model is published.
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath

from features.catalog import feature_names, xgboost_feature_types
from jobs.config import SegmentConfig, TrainView
from jobs.errors import UserError
from jobs.model import bundle
from jobs.model.report import render_page
from jobs.model.training import FeatureSet, LabelledSnapshots, SegmentModel, TrainScratch, join_labels, train_segment
from jobs.run.layout import RunLayout
from jobs.run.plan import RunPlan
from jobs.segments.definitions import check_segment, label_column
from jobs.storage import TableIn, TableOut, TableWriter, delete, filesystem_for, is_s3

log = logging.getLogger(__name__)


def _chosen(view: TrainView) -> list[SegmentConfig]:
    only = view.training.only_segments
    if only is None:
        return list(view.segments)
    names = {s.name for s in view.segments}
    unknown = [name for name in only if name not in names]
    if unknown:
        raise UserError(
            f"segment {unknown[0]!r} is not in the config's segments: {', '.join(sorted(names)) or '(none)'}."
        )
    return [s for s in view.segments if s.name in only]


def _write_segment(writer: TableWriter, result: SegmentModel) -> None:
    name = result.metrics["segment"]
    if result.model is not None:
        writer.write_file(RunLayout.model_file(name, bundle.MODEL), result.model)
        writer.write_json(RunLayout.model_file(name, bundle.IMPORTANCE), result.importance)
    writer.write_json(RunLayout.model_file(name, bundle.METRICS), result.metrics)
    page = render_page(f"Segment {name}: model quality", [result.metrics])
    writer.write_file(RunLayout.model_file(name, bundle.REPORT), page.encode())
    writer.write_json(RunLayout.model_file(name, bundle.CARD), result.card)


def run(view: TrainView, plan: RunPlan, features: TableIn, labels: TableIn, models: TableOut) -> dict:
    chosen = _chosen(view)
    for segment in chosen:
        try:
            check_segment(segment)
        except ValueError as exc:
            raise UserError(f"{exc} (config `segments`)") from None
    features_config = view.features.model_copy(update={"categories": list(plan.categories)})
    feature_set = FeatureSet(
        tuple(feature_names(features_config)), tuple(xgboost_feature_types(features_config)), tuple(plan.categories)
    )
    label_marker = labels.marker
    label_segments = label_marker.get("cutoffs", {})
    label_rows = label_marker.get("partitions", {})
    for segment in chosen:
        cut = plan.for_segment(segment.name)
        for as_of in (cut.train_as_of, cut.eval_as_of):
            if segment.name not in label_segments.get(as_of.isoformat(), []):
                raise UserError(
                    f"{labels.path} has no labels of segment {segment.name} at {as_of}: run the labels stage again."
                )

    def labelled(as_of: dt.date):
        partition = {"as_of": as_of}
        snapshot = features.dataset(columns=["persona_id", *feature_set.names], partition=partition)
        if not label_rows.get(f"as_of={as_of.isoformat()}"):  # nobody is positive at this cut-off
            return snapshot
        columns = ["persona_id", *(label_column(name) for name in label_segments[as_of.isoformat()])]
        return join_labels(snapshot, labels.dataset(columns=columns, partition=partition), view.num_partitions)

    snapshots = LabelledSnapshots(labelled)
    scratch_dir = RunLayout(posixpath.dirname(models.path.rstrip("/"))).train_scratch
    fs, scratch_path = filesystem_for(scratch_dir, models.storage)
    scratch = TrainScratch(scratch_path, fs if is_s3(scratch_dir) else None)
    inputs = {"features": features.version, "labels": labels.version}
    previous = TableIn(models.name, models.path, models.storage)
    previous_segments = {}
    if view.training.only_segments and previous.version:  # the segments not refitted keep their files
        previous_segments = previous.marker.get("segments", {})

    results: dict[str, dict] = {}
    extra = {"segments": {}, "categories": list(plan.categories), "carried_over": []}
    with models.writing(extra) as writer:
        for segment in view.segments:
            name = segment.name
            if segment in chosen:
                result = train_segment(
                    segment,
                    plan.for_segment(name),
                    snapshots,
                    feature_set,
                    features_config,
                    view.training,
                    scratch,
                    inputs,
                )
                _write_segment(writer, result)
                entry = {"status": result.status, "model_version": result.card["model_version"]}
                results[name] = {
                    "status": result.status,
                    "reason": result.metrics.get("reason"),
                    "roc_auc": (result.metrics.get("model") or {}).get("roc_auc"),
                    "rfm_roc_auc": (result.metrics.get("rfm_baseline") or {}).get("roc_auc"),
                    "alarms": result.metrics.get("alarms", []),
                }
            elif name in previous_segments:
                entry = previous_segments[name]
                for file in bundle.segment_files(entry["status"]):
                    relative = RunLayout.model_file(name, file)
                    writer.write_file(relative, previous.file(relative))
                writer.extra["carried_over"].append(name)
                results[name] = {"status": entry["status"], "carried_over": True}
            else:
                continue
            writer.extra["segments"][name] = entry
    delete(scratch_dir, models.storage)
    statuses = [r["status"] for r in results.values()]
    return {
        "segments": results,
        "trained": statuses.count(bundle.TRAINED),
        "skipped": statuses.count(bundle.SKIPPED),
    }
