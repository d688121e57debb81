"""The models bundle: what the train stage publishes as `models/`, and the checks a reader makes before
scoring with a model. Pure: callers read the bytes (`TableIn.file`) and hand them in.

    models/<write_id>/SEGMENT/model.json         the champion's booster (XGBoost JSON), trained segments only
                             /model_card.json    status, reason, model_version, definition, the exported
                                                 model's feature names, types and category slots, cut-offs,
                                                 calibration, alarms, `champion` (candidates, decision, fits)
                             /metrics.json       every quality figure (`jobs.model.quality`)
                             /importance.json    gain importance, trained segments only
                             /report.html        the segment's quality page
    models/_SUCCESS  extra: {"segments": {SEGMENT: {"status": "trained"|"skipped"|"rejected", "model_version": ...}},
                             "categories": [...], "carried_over": [SEGMENT ...]}

Paths inside the bundle come from `RunLayout.model_file(segment, name)`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobs.config import SegmentConfig
from jobs.errors import UserError
from jobs.model.booster import load_booster, model_version

log = logging.getLogger(__name__)

MODEL = "model.json"
CARD = "model_card.json"
METRICS = "metrics.json"
IMPORTANCE = "importance.json"
REPORT = "report.html"
TRAINED = "trained"
SKIPPED = "skipped"
REJECTED = "rejected"  # trained, but no candidate was acceptable (`jobs.model.champion`): never scored or served


def segment_files(status: str) -> tuple[str, ...]:
    """The files a segment has in the bundle, by its status."""
    if status == TRAINED:
        return (MODEL, METRICS, IMPORTANCE, REPORT, CARD)
    return (METRICS, REPORT, CARD)


@dataclass(frozen=True)
class ModelSpec:
    """One trained segment model, checked against the config and the feature table it will score."""

    segment: SegmentConfig
    raw: bytes
    model_version: str
    feature_names: tuple[str, ...]
    feature_types: tuple[str, ...] | None
    categories: tuple[str, ...] | None  # feature category slots the model was trained with


def check_feature_names(
    segment: str, model_features: Sequence[str], table_features: Sequence[str], source: str
) -> list[str]:
    """Refuse a model that needs a feature the table lacks; returns the table's columns the model does not use.

    Scoring selects the model's columns by name, so extra table columns are harmless (they are reported);
    a missing or repeated one means the model was trained on another feature list: that is a UserError.
    """
    table_set = set(table_features)
    duplicated = sorted({f for f in model_features if list(model_features).count(f) > 1})
    missing = [f for f in model_features if f not in table_set]
    model_set = set(model_features)
    unused = [f for f in table_features if f not in model_set]
    if not (missing or duplicated):
        return unused

    def _few(names: list[str]) -> str:
        return ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")

    problems = []
    if missing:
        problems.append(f"{len(missing)} model feature(s) missing from the feature table: {_few(missing)}")
    if duplicated:
        problems.append(f"repeated feature names in the model: {_few(duplicated)}")
    raise UserError(
        f"the model for segment {segment!r} ({source}) does not match the feature table: {'; '.join(problems)}. "
        "Retrain the segment (`segments train`) on this feature table, or recompute the features the model expects."
    )


def check_card(segment: SegmentConfig, card: Mapping[str, Any], table_categories: Sequence[str], source: str) -> None:
    """The card must describe this segment, as configured now, over these feature category slots."""
    name = segment.name
    if card.get("segment", name) != name:
        raise UserError(f"{source} describes segment {card.get('segment')!r}, not {name!r}.")
    definition = card.get("definition")
    if definition and SegmentConfig.model_validate(definition) != segment:
        raise UserError(
            f"segment {name!r} is configured differently from the model trained for it ({source}: "
            f"{json.dumps(definition, sort_keys=True)}); retrain the segment (`segments train`)."
        )
    card_categories = card.get("feature_categories")
    if card_categories is not None and list(card_categories) != list(table_categories):
        raise UserError(
            f"the model for segment {name!r} was trained with feature category slots {card_categories}, but "
            f"the feature table has {list(table_categories)}: the cat-slot columns mean other categories. "
            "Retrain the segment on this feature table, or pin features.categories."
        )


def model_spec(
    segment: SegmentConfig,
    card: Mapping[str, Any],
    raw: bytes,
    table_features: Sequence[str],
    table_categories: Sequence[str],
    source: str,
) -> ModelSpec:
    """A trained segment's model, checked: card vs config and categories, bytes vs the card's version,
    the booster's feature names vs the card's and vs the feature table. A mismatch is a UserError."""
    name = segment.name
    check_card(segment, card, table_categories, source)
    version = model_version(raw)
    if card.get("model_version") and card["model_version"] != version:
        raise UserError(
            f"{source}: model.json has version {version} but its model card says {card['model_version']}: the model "
            "was replaced after training; retrain the segment."
        )
    card_features = list(card.get("feature_names") or [])
    booster = load_booster(raw)
    booster_features = list(booster.feature_names or [])
    if card_features and booster_features and card_features != booster_features:
        raise UserError(f"{source}: model.json and its model card list different feature names; retrain the segment.")
    model_features = booster_features or card_features
    if not model_features:
        raise UserError(f"{source}: model.json has no feature names: the model cannot be matched to the feature table.")
    unused = check_feature_names(name, model_features, table_features, source)
    if unused:  # by design (empty category slots, an RFM champion's three columns): the run log, not the console
        log.info(
            "segment %s: the model does not use %d feature table column(s): %s",
            name,
            len(unused),
            ", ".join(unused[:8]) + (" ..." if len(unused) > 8 else ""),
            extra={"console": False},
        )
    types = card.get("feature_types") or booster.feature_types
    categories = card.get("feature_categories")
    return ModelSpec(
        segment=segment,
        raw=raw,
        model_version=version,
        feature_names=tuple(model_features),
        feature_types=tuple(types) if types else None,
        categories=tuple(categories if categories is not None else table_categories),
    )
