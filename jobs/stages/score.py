"""The score stage: every eligible persona's score, percentile and membership per trained segment.

    scores/_SUCCESS              marker: rows, and `as_of` (the plan's), `segments` {SEGMENT: model_version},
                                 `skipped` [{segment, reason}], `distribution` {SEGMENT: scored personas in
                                 20 equal-width score bins over [0, 1]} (the report's chart, the drift input)
    scores/<write id>/part-*     persona_id, segment, score, percentile, model_version, member, reasons
                                 (members' top-3 partner-safe labels, null for others; `jobs.model.reasons`)

A segment without a model says why in one line (its card's reason), prefixed by what the data lacks for its
kind when no persona shows that behaviour at all (`jobs.segments.needs`: "every persona is seen at one
partner only: price_hunters needs views of one product at 2+ partners").

Reads the features partition at the plan's `as_of` and the models bundle (each model checked against the
config and the feature table first, `jobs.model.bundle`); scoring, percentiles and membership run on Ray
(`jobs.model.scoring`), with the Parquet read fused into the scoring actors.
"""

from __future__ import annotations

import json
import logging

import ray

from features.catalog import reason_labels
from jobs.config import ScoreView
from jobs.errors import UserError
from jobs.model import bundle
from jobs.model.scoring import score_dataset, segment_counts
from jobs.run.layout import RunLayout
from jobs.run.plan import RunPlan
from jobs.segments.membership import SCORES_SCHEMA, score_distribution
from jobs.segments.needs import FACT_COLUMNS, data_facts, unmet_need
from jobs.storage import TableIn, TableOut, read_dataset

log = logging.getLogger(__name__)

ID_COLUMNS = ("persona_id", "as_of")


def _model_specs(view: ScoreView, models: TableIn, table_features: list[str], categories: list[str]):
    """The checked models of the configured segments, and the segments without one, with why."""
    entries = models.marker.get("segments", {})
    specs, skipped = [], []
    for segment in view.segments:
        name = segment.name
        entry = entries.get(name)
        if entry is None:
            skipped.append({"segment": name, "reason": f"no trained model in {models.path}: run `segments train`"})
            continue
        card_file = RunLayout.model_file(name, bundle.CARD)
        card = json.loads(models.file(card_file))
        if entry["status"] != bundle.TRAINED:
            skipped.append({"segment": name, "reason": card.get("reason") or f"model status {entry['status']!r}"})
            continue
        raw = models.file(RunLayout.model_file(name, bundle.MODEL))
        source = f"{models.path} {name}/"
        specs.append(bundle.model_spec(segment, card, raw, table_features, categories, source))
    return specs, skipped


def _data_facts(features: TableIn, partition: dict, table_features: list[str]) -> dict[str, int]:
    """Personas of the scored snapshot showing each behaviour a segment kind may need (`jobs.segments.needs`):
    per-block counts of a few columns, summed here."""
    columns = [c for c in FACT_COLUMNS if c in table_features]
    ds = features.dataset(partition=partition, columns=columns or ["persona_id"])
    totals: dict[str, int] = {}
    for part in ray.get(ds.map_batches(data_facts, batch_format="pyarrow", batch_size=None).to_arrow_refs()):
        for name, values in part.to_pydict().items():
            totals[name] = totals.get(name, 0) + sum(values)
    return totals


def run(view: ScoreView, plan: RunPlan, features: TableIn, models: TableIn, scores: TableOut) -> dict:
    if not view.segments:
        raise UserError("no segments are configured: nothing to score.")
    partition = {"as_of": plan.as_of}
    files = features.files(partition)
    if not files:
        raise UserError(f"{features.path} has no features at the scoring cut-off {plan.as_of}: run the features stage.")
    table_features = [name for name in features.schema(partition).names if name not in ID_COLUMNS]
    specs, skipped = _model_specs(view, models, table_features, list(plan.categories))
    if skipped:
        facts = _data_facts(features, partition, table_features)
        by_name = {seg.name: seg for seg in view.segments}
        for item in skipped:
            need = unmet_need(by_name[item["segment"]], facts)
            if need:
                item["reason"] = f"{need} ({item['reason']})"
    for item in skipped:
        log.warning("segment %s skipped: %s", item["segment"], item["reason"])

    extra = {
        "as_of": plan.as_of.isoformat(),
        "segments": {s.segment.name: s.model_version for s in specs},
        "skipped": skipped,
    }
    marker = {"rows": 0}
    if specs:
        labels = {
            s.segment.name: reason_labels(view.features, s.categories if s.categories is not None else plan.categories)
            for s in specs
        }
        scored, histogram = score_dataset(features, partition, specs, view.scoring, labels)
        extra["distribution"] = score_distribution(histogram)
        marker = scores.write_dataset(scored, extra=extra)
    if not marker["rows"]:  # nobody eligible (or nothing trained): an empty table that still has its schema
        marker = scores.write_arrow(SCORES_SCHEMA.empty_table(), extra=extra)
    # with reasons on, also the members whose reasons were not computed (`may_be_members` missed them: 0 expected)
    counted = ["segment", "member"] + (["reasons"] if view.scoring.reasons != "off" else [])
    counts = segment_counts(read_dataset(scores.path, scores.storage, columns=counted)) if marker["rows"] else {}
    for name, count in counts.items():
        if count.get("members_without_reasons"):
            log.warning("segment %s: %d members have no computed reasons", name, count["members_without_reasons"])
    per_segment = {
        spec.segment.name: {
            "model_version": spec.model_version,
            **counts.get(spec.segment.name, {"scored": 0, "members": 0}),
        }
        for spec in specs
    }
    rows_in = (features.marker.get("partitions") or {}).get(f"as_of={plan.as_of.isoformat()}")
    return {
        "rows_in": rows_in,
        "rows_out": marker["rows"],
        "as_of": plan.as_of.isoformat(),
        "segments": per_segment,
        "skipped": skipped,
        "membership": view.scoring.membership,
        "reasons": view.scoring.reasons,
    }
