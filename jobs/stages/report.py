"""The report stage: the run's HTML report (`RUN/report.html`): every segment's model quality, champion
decision (the model card's `champion` block), score distribution (the scores marker's `distribution`) and size
per partner, who was scored and who is a member, and a run section with the identity figures (personas,
identifiers per persona, identifiers refused by each junk rule) (`jobs.model.report`, `jobs.model.run_figures`),
and drift against the previous run (`jobs.model.drift`: PSI of every feature and each segment's scores; above
`drift.threshold` an alarm in the report, in this stage's summary and a warning on the console).
"""

from __future__ import annotations

import json
import logging

from jobs.config import ReportView
from jobs.model import bundle
from jobs.model.drift import (
    drift_alarms,
    feature_noise_floors,
    feature_psi,
    pick_previous,
    procedure,
    score_noise_floors,
    score_psi,
)
from jobs.model.report import render_page
from jobs.model.run_figures import (
    IDENTIFIER_COUNTS,
    feature_histogram,
    partner_sizes,
    persona_figures,
    refused_by_rule,
)
from jobs.model.scoring import segment_counts
from jobs.run.layout import FEATURES, MODELS, SCORES, RunLayout
from jobs.run.plan import RunPlan
from jobs.run.stage import FileOut
from jobs.storage import TableIn, join, marker_or_none, read_json_or_none, subfolders

log = logging.getLogger(__name__)
ID_COLUMNS = ("persona_id", "as_of")


def run(
    view: ReportView,
    plan: RunPlan,
    models: TableIn,
    features: TableIn,
    scores: TableIn,
    personas: TableIn,
    identity_map: TableIn,
    identity_audit: TableIn,
    report: FileOut,
) -> dict:
    in_bundle = models.marker.get("segments", {})
    names = [s.name for s in view.segments if s.name in in_bundle]
    sections = [json.loads(models.file(RunLayout.model_file(name, bundle.METRICS))) for name in names]
    # the score stage's line for a segment it could not score says what the data lacks, where it can tell
    why = {item["segment"]: item["reason"] for item in scores.marker.get("skipped") or []}
    sections = [{**m, "reason": why[m["segment"]]} if m.get("segment") in why else m for m in sections]
    cards = {name: json.loads(models.file(RunLayout.model_file(name, bundle.CARD))) for name in names}
    scored = bool(scores.marker.get("rows"))
    counts = segment_counts(scores.dataset(columns=["segment", "member"])) if scored else {}
    sizes = (
        partner_sizes(
            scores.dataset(columns=["persona_id", "segment", "member"]),
            personas.dataset(columns=["persona_id", "partners"]),
            view.num_partitions,
        )
        if scored
        else {}
    )
    run_stats = {
        **persona_figures(
            personas.dataset(columns=["persona_id", *IDENTIFIER_COUNTS]) if personas.marker.get("rows") else None
        ),
        "identifiers_linked": identity_map.marker.get("rows"),
        "refused_by_rule": refused_by_rule(identity_audit.dataset(columns=["rule"]))
        if identity_audit.marker.get("rows")
        else {},
    }
    drift = _drift(view, plan, features, scores, cards)
    for alarm in (drift or {}).get("alarms", []):
        log.warning("drift against run %s: %s", drift["previous_run"], alarm)
    page = render_page(
        f"Look-alike segments: run {plan.run_id}",
        sections,
        scoring=counts,
        cards=cards,
        distributions=scores.marker.get("distribution") or {},
        partner_sizes=sizes,
        run_stats=run_stats,
        drift=drift,
    )
    report.write(page.encode())
    out = {"segments": len(sections), "rows_in": scores.marker.get("rows"), "rows_out": len(sections)}
    if drift is not None:
        out["drift"] = {k: v for k, v in drift.items() if k != "features"}
    return out


def _previous_card(models: TableIn, segment: str) -> dict | None:
    try:
        return json.loads(models.file(RunLayout.model_file(segment, bundle.CARD)))
    except (FileNotFoundError, KeyError, ValueError):
        return None


def _drift(view: ReportView, plan: RunPlan, features: TableIn, scores: TableIn, cards: dict[str, dict]) -> dict | None:
    """PSI of every feature and each segment's scores against the previous run (`jobs.model.drift`): an alarm
    above the threshold and the noise floor; a segment's scores only when both runs' models are comparable."""
    if not view.drift.enabled:
        return None
    storage = scores.storage
    root = RunLayout(scores.path.rstrip("/").rsplit("/", 1)[0]).root
    if root is None:
        return {"previous_run": None, "note": "the run folder is not ROOT/runs/RUN_ID: no previous run to compare"}
    previous = view.drift.previous_run
    if previous is None:
        runs = [
            read_json_or_none(RunLayout.for_run(root, r).summary, storage) or {}
            for r in subfolders(join(root, "runs"), storage)
        ]
        previous = pick_previous(runs, plan.run_id, plan.run_date.isoformat())
    if previous is None:
        return {"previous_run": None, "note": "no earlier succeeded run in ROOT to compare with"}
    before = RunLayout.for_run(root, previous)
    before_scores = marker_or_none(before.table(SCORES), storage) or {}
    before_features = TableIn(FEATURES, before.table(FEATURES), storage)
    before_as_of = before_scores.get("as_of")
    if not before_as_of or before_features.version is None or not before_features.files({"as_of": before_as_of}):
        return {"previous_run": previous, "note": f"run {previous} has no scored features snapshot to compare with"}
    partition = {"as_of": plan.as_of}
    names = [n for n in features.schema(partition).names if n not in ID_COLUMNS]
    before_names = set(before_features.schema({"as_of": before_as_of}).names)
    names = [n for n in names if n in before_names]
    histograms = (
        feature_histogram(before_features.dataset(partition={"as_of": before_as_of}, columns=names), names),
        feature_histogram(features.dataset(partition=partition, columns=names), names),
    )
    by_feature = feature_psi(*histograms)
    distributions = (before_scores.get("distribution") or {}, scores.marker.get("distribution") or {})
    by_segment = score_psi(*distributions)
    before_models = TableIn(MODELS, before.table(MODELS), storage)
    comparable = {
        segment: procedure(cards.get(segment)) is not None
        and procedure(cards.get(segment)) == procedure(_previous_card(before_models, segment))
        for segment in by_segment
    }
    tests = len(by_feature) + len(by_segment)
    floors = feature_noise_floors(*histograms, tests)
    score_floors = score_noise_floors(*distributions, tests)
    judged = {segment: value for segment, value in by_segment.items() if comparable[segment]}
    return {
        "previous_run": previous,
        "previous_as_of": before_as_of,
        "threshold": view.drift.threshold,
        "alarms": drift_alarms(by_feature, judged, view.drift.threshold, floors, score_floors),
        "features_compared": len(by_feature),
        "features": by_feature,
        "scores": by_segment,
        "score_noise_floors": score_floors,
        "feature_noise_floor_max": max(floors.values(), default=None),
        "scores_not_comparable": sorted(segment for segment, same in comparable.items() if not same),
    }
