"""The train stage: one look-alike model per segment, published as ONE `models/` bundle.

Reads tables only: for each segment, the features partitions at its train and eval cut-offs (the run plan's)
left-joined with the labels partitions there (one join per cut-off, shared by every segment), then
`jobs.model.training` fits, calibrates and evaluates it. Feature names and types come from the feature
catalogue for the plan's categories. The bundle's format is in `jobs.model.bundle`.

Each segment's exported model is its champion (`jobs.model.champion`), refitted for production; the
previous bundle's exported model of the segment (when there is one) is the incumbent it must be beaten by.
A segment with no acceptable candidate is `rejected` (no model file: never scored, exported or served);
the run goes on and says so in one line per segment, unless `training.strict` (`--strict`): then the stage
fails with exit 2 after publishing the bundle (the cards say why).

`training.only_segments` (`segments train --segment NAME`) trains only those; every other configured
segment keeps its files from the previous bundle. Ray Train's checkpoints live in the run's train scratch
folder (`RunLayout.train_scratch`, next to the tables) and are removed once every model is published.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import posixpath

from features.catalog import feature_names, xgboost_feature_types
from jobs.config import SegmentConfig, TrainView
from jobs.errors import UserError
from jobs.model import bundle
from jobs.model.report import render_page
from jobs.model.training import (
    FeatureSet,
    LabelledSnapshots,
    PreviousModel,
    SegmentModel,
    TrainScratch,
    decision_line,
    train_segments,
)
from jobs.raykit.join import join_labels
from jobs.run.layout import RunLayout
from jobs.run.plan import RunPlan
from jobs.segments.definitions import check_segment, label_column
from jobs.storage import TableIn, TableOut, TableWriter, delete, filesystem_for, is_s3

log = logging.getLogger(__name__)

# a task reads a run of the features' and labels' files of about this many bytes: a demo-sized snapshot is
# 8 files of ~200 KB, and every pass over its blocks (stats, samples, fits' rows, predictions, scores) pays a
# Ray task per block; files of event-sized data are larger, and read one per task
SNAPSHOT_TASK_BYTES = 16 << 20


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
        for as_of in (cut.train_as_of, cut.eval_as_of, cut.refit_as_of):
            if segment.name not in label_segments.get(as_of.isoformat(), []):
                raise UserError(
                    f"{labels.path} has no labels of segment {segment.name} at {as_of}: run the labels stage again."
                )

    @functools.cache
    def positives(as_of: dt.date):
        """The labels partition at `as_of` in the object store, read once for the join and the leakage check;
        None when nobody is positive there."""
        if not label_rows.get(f"as_of={as_of.isoformat()}"):
            return None
        columns = ["persona_id", *(label_column(name) for name in label_segments[as_of.isoformat()])]
        return labels.blocks(columns=columns, partition={"as_of": as_of}, task_bytes=SNAPSHOT_TASK_BYTES)

    def labelled(as_of: dt.date, then, then_kwargs: dict):
        return join_labels(
            features,
            ["persona_id", *feature_set.names],
            {"as_of": as_of},
            positives(as_of) or [],  # none: everyone is 0
            label_rows.get(f"as_of={as_of.isoformat()}", 0),
            view.num_partitions,
            then,
            then_kwargs,
            SNAPSHOT_TASK_BYTES,
        )

    snapshots = LabelledSnapshots(labelled, positives)
    scratch_dir = RunLayout(posixpath.dirname(models.path.rstrip("/"))).train_scratch
    fs, scratch_path = filesystem_for(scratch_dir, models.storage)
    scratch = TrainScratch(scratch_path, fs if is_s3(scratch_dir) else None)
    inputs = {"features": features.version, "labels": labels.version}
    previous = TableIn(models.name, models.path, models.storage)
    previous_segments = previous.marker.get("segments", {}) if previous.version else {}

    trained = train_segments(
        [
            (
                segment,
                plan.for_segment(segment.name),
                _previous_model(previous, previous_segments.get(segment.name), segment.name),
            )
            for segment in chosen
        ],
        snapshots,
        feature_set,
        features_config,
        view.training,
        scratch,
        inputs,
    )
    results: dict[str, dict] = {}
    extra = {"segments": {}, "categories": list(plan.categories), "carried_over": []}
    with models.writing(extra) as writer:
        for segment in view.segments:
            name = segment.name
            if segment in chosen:
                result = trained[name]
                _write_segment(writer, result)
                entry = {"status": result.status, "model_version": result.card["model_version"]}
                results[name] = _figures(result)
            elif view.training.only_segments and name in previous_segments:  # not refitted: keeps its files
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
    rejected = [name for name, r in results.items() if r["status"] == bundle.REJECTED]
    if rejected and view.training.strict:
        raise UserError(
            f"{len(rejected)} segment(s) rejected, no acceptable model (training.strict): "
            + "; ".join(f"{name}: {results[name]['decision']}" for name in rejected)
        )
    return {
        "segments": results,
        "trained": statuses.count(bundle.TRAINED),
        "skipped": statuses.count(bundle.SKIPPED),
        "rejected": statuses.count(bundle.REJECTED),
    }


def _previous_model(previous: TableIn, entry: dict | None, name: str) -> PreviousModel | None:
    """The previous bundle's exported model of a segment (the incumbent), if it exported one."""
    if not entry or entry.get("status") != bundle.TRAINED:
        return None
    card = json.loads(previous.file(RunLayout.model_file(name, bundle.CARD)))
    return PreviousModel(previous.file(RunLayout.model_file(name, bundle.MODEL)), card)


def _figures(result: SegmentModel) -> dict:
    """A trained segment's line of the stage's figures: the decision in one line, every candidate's PR-AUC."""
    m = result.metrics
    if result.status == bundle.SKIPPED:
        return {"status": result.status, "reason": m["reason"], "decision": f"skipped: {m['reason']}"}
    block = m["champion"]
    return {
        "status": result.status,
        "reason": m.get("reason"),
        "decision": decision_line(block, result.status),
        "champion": block["chosen"],
        "pr_auc": {name: c["pr_auc"] for name, c in block["candidates"].items()},
        "roc_auc": (m.get("model") or {}).get("roc_auc"),
        "rfm_roc_auc": (m.get("rfm_baseline") or {}).get("roc_auc"),
        "alarms": m.get("alarms", []),
    }
