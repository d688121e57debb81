"""Train stage on a real local Ray: XGBoost per segment (a small single-worker round in one Ray task, two workers
on Ray Train) from the features and labels TABLES, gates, the champion selection and the production refit,
the models bundle, honest alarms, S3, `--segment` carry-over; a planted leak and a model no better than
chance never reach `scores/`.

events_resolved and features/ are published by hand (`segment_tables`); labels/ comes from the real labels
stage, so labels -> train runs as the pipeline runs it (test_segment_stages_on_real_upstream runs them all
after the real resolve, plan and features stages).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from segment_tables import (
    CATEGORIES,
    INFORMATIVE,
    NOISE,
    make_events,
    plan_for,
    publish_events,
    publish_features,
    small_config,
    stand_in_features,
)

from features.catalog import feature_names
from jobs.config import JobConfig, SegmentConfig, TrainView
from jobs.errors import UserError
from jobs.model.booster import load_booster, model_version
from jobs.run.layout import EVENTS_RESOLVED, FEATURES, LABELS, MODELS, RunLayout
from jobs.run.pipeline import run_pipeline
from jobs.run.stage import Stage, ordered
from jobs.stages import labels, score, train
from jobs.storage import TableIn, TableOut, list_files, read_json, write_json, writing

STAGES = ordered([Stage.of(m.run) for m in (labels, train)])
WITH_SCORES = ordered([Stage.of(m.run) for m in (labels, train, score)])


def prepare_run(config: JobConfig, run_dir: str, personas: int, seed: int, leak: bool = False) -> RunLayout:
    """events_resolved, features/ and plan.json of a run, as the upstream stages leave them."""
    layout = RunLayout(run_dir)
    events = make_events(personas, seed)
    plan = plan_for(config, events)
    publish_events(layout.table(EVENTS_RESOLVED), events, config.storage)
    publish_features(layout.table(FEATURES), events, plan, config, leak)
    write_json(layout.plan, plan.to_json(), config.storage)
    return layout


def bundle_file(layout: RunLayout, config: JobConfig, segment: str, name: str) -> bytes:
    return TableIn(MODELS, layout.table(MODELS), config.storage).file(RunLayout.model_file(segment, name))


def card_of(layout: RunLayout, config: JobConfig, segment: str) -> dict:
    return json.loads(bundle_file(layout, config, segment, "model_card.json"))


@pytest.mark.slow
def test_train_publishes_one_bundle_and_skips_thin_segments(ray_cluster, tmp_path):
    segments = [
        SegmentConfig(name="buyers", kind="ecommerce_buyers"),
        SegmentConfig(name="fashion_lovers", kind="category_lovers", category="fashion"),
        SegmentConfig(name="ghost_brand", kind="high_interest", brand="NoSuchBrand"),
    ]
    config = small_config(tmp_path, segments)
    layout = prepare_run(config, str(tmp_path / "runs" / "r1"), personas=1500, seed=11)
    summary = run_pipeline(config, STAGES, names=["labels", "train"], layout=layout)
    assert summary["status"] == "succeeded"
    stage_result = read_json(layout.summary, config.storage)["stages"]["train"]["result"]
    results = {name: read_json_metrics(layout, config, name) for name in ("buyers", "fashion_lovers", "ghost_brand")}

    models = TableIn(MODELS, layout.table(MODELS), config.storage)
    ghost = results["ghost_brand"]
    assert ghost["status"] == "skipped" and "0 positives" in ghost["reason"]
    card = card_of(layout, config, "ghost_brand")
    assert card["status"] == "skipped" and card["reason"] == ghost["reason"] and card["model_version"] is None
    with pytest.raises(FileNotFoundError):
        models.file(RunLayout.model_file("ghost_brand", "model.json"))
    assert models.marker["segments"]["ghost_brand"] == {"status": "skipped", "model_version": None}
    assert stage_result["trained"] == 2 and stage_result["skipped"] == 1

    names = feature_names(config.features.model_copy(update={"categories": CATEGORIES}))
    for name in ("buyers", "fashion_lovers"):
        m = results[name]
        assert m["status"] == "trained", m.get("reason")
        for file in ("model.json", "metrics.json", "importance.json", "report.html", "model_card.json"):
            assert bundle_file(layout, config, name, file), file
        card = card_of(layout, config, name)
        for key in (
            "segment",
            "kind",
            "status",
            "reason",
            "model_version",
            "feature_names",
            "feature_types",
            "config_hash",
            "train_as_of",
            "eval_as_of",
            "horizon_days",
            "created_at",
            "inputs",
            "champion",
            "refit_as_of",
        ):
            assert key in card, key
        block = card["champion"]
        assert block["primary_metric"] == "pr_auc" and block["chosen"] in block["candidates"]
        assert set(block["candidates"]) == {"xgboost", "rfm"} and block["reason"]
        for figures in block["candidates"].values():
            assert {"pr_auc", "roc_auc", "alarms"} <= set(figures) and figures["alarms"] == []
        # evaluated out of time from train_as_of; the exported model refitted at refit_as_of
        assert block["fits"]["evaluation"]["as_of"] == card["train_as_of"]
        assert block["fits"]["production"]["as_of"] == card["refit_as_of"] > card["train_as_of"]
        assert block["fits"]["production"]["model_version"] == card["model_version"]
        assert card["model_version"] != block["fits"]["evaluation"]["model_versions"][block["chosen"]]
        assert card["feature_categories"] == CATEGORIES
        exported = load_booster(bundle_file(layout, config, name, "model.json")).feature_names
        assert card["feature_names"] == exported
        assert exported == (names if block["chosen"] == "xgboost" else m["rfm_baseline"]["features"])
        assert card["inputs"] == {
            "features": TableIn(FEATURES, layout.table(FEATURES), config.storage).version,
            "labels": TableIn(LABELS, layout.table(LABELS), config.storage).version,
        }
        assert card["model_version"] == model_version(bundle_file(layout, config, name, "model.json"))
        assert models.marker["segments"][name] == {"status": "trained", "model_version": card["model_version"]}
        assert card["train_as_of"] < card["eval_as_of"]
        # the planted behaviour is found out of time, and the honest checks are quiet
        assert m["model"]["roc_auc"] > 0.7, m["model"]["roc_auc"]
        assert m["rfm_baseline"]["roc_auc"] is not None
        assert m["alarms"] == [] and m["leakage"]["flagged"] == []
        sizes = m["sizes"]
        assert sizes["train_rows"] > 0 and sizes["valid_rows"] > 0 and sizes["eval_rows"] > 0
        assert set(m["model"]["lift"]) == {"1%", "5%", "10%", "20%"}
        assert m["model"]["reliability"] and m["model"]["brier"] is not None
        assert m["training"]["calibration"]["method"].startswith("base margin shift fitted on the validation")
        # one worker and a few thousand rows: the round is fitted in one Ray task, not a Ray Train run
        assert m["training"]["fit_run"]["runner"] == "ray_task" and m["training"]["fit_run"]["rows"] > 0
        assert m["importance"][0]["feature"] in INFORMATIVE

    buyers = results["buyers"]
    # carts in the last 7 days are the planted signal RFM does not have: the look-alike wins on PR-AUC
    assert buyers["champion"]["chosen"] == "xgboost", buyers["champion"]["reason"]
    assert buyers["model"]["pr_auc"] > buyers["rfm_baseline"]["pr_auc"]
    assert stage_result["segments"]["buyers"]["decision"].startswith("champion xgboost: ")
    assert "carts_7d" in [i["feature"] for i in buyers["importance"][:3]]
    # calibrated probabilities: the mean prediction is near the base rate
    assert abs(buyers["model"]["mean_predicted"] - buyers["model"]["base_rate"]) < 0.08
    # lovers are trained on past fashion buyers only
    assert results["fashion_lovers"]["sizes"]["eval_rows"] < buyers["sizes"]["eval_rows"]

    # the saved model scores a feature matrix by name, through the one load path
    booster = load_booster(bundle_file(layout, config, "buyers", "model.json"))
    assert booster.feature_names == names
    assert booster.inplace_predict(np.zeros((3, len(names)), np.float32)).shape == (3,)
    assert card_of(layout, config, "buyers")["calibration"]["shift"] != 0
    assert list_files(layout.train_scratch, config.storage) == []  # Ray Train checkpoints removed after success

    # unchanged inputs and config: the rerun skips the stage and keeps the models
    again = run_pipeline(config, STAGES, names=["labels", "train"], layout=layout)
    assert again["stages"]["train"]["status"] == "skipped"
    assert card_of(layout, config, "buyers")["model_version"] == models.marker["segments"]["buyers"]["model_version"]


def read_json_metrics(layout: RunLayout, config: JobConfig, segment: str) -> dict:
    return json.loads(bundle_file(layout, config, segment, "metrics.json"))


@pytest.mark.slow
def test_s3_run_two_workers_leak_never_exported_and_one_segment_keeps_the_others(
    ray_cluster, storage, s3_bucket, tmp_path
):
    """On an s3:// run folder with two Train workers: a feature that sees the label window raises the leakage
    alarm on the look-alike, which is never exported (the RFM booster, which does not read it, is scored
    instead); then `--segment ghost_brand` refits only that one and carries the other's files over unchanged."""
    segments = [
        SegmentConfig(name="buyers", kind="ecommerce_buyers"),
        SegmentConfig(name="ghost_brand", kind="high_interest", brand="NoSuchBrand"),
    ]
    config = small_config(tmp_path, segments, num_workers=2, num_boost_round=20)
    config = config.model_copy(update={"storage": storage})
    layout = prepare_run(config, f"{s3_bucket}/runs/r1", personas=900, seed=5, leak=True)
    run_pipeline(config, WITH_SCORES, names=["labels", "train", "score"], layout=layout)

    m = read_json_metrics(layout, config, "buyers")
    assert m["status"] == "trained" and m["training"]["num_workers"] == 2
    assert m["training"]["fit_run"]["runner"] == "ray_train"
    assert [f["feature"] for f in m["leakage"]["flagged"]] == [NOISE]
    # a model with a leak looks too good to be true, which is the point of the alarm
    assert m["model"]["roc_auc"] > 0.95
    block = m["champion"]
    assert block["candidates"]["xgboost"]["alarms"] and "xgboost: leakage: " + NOISE in m["alarms"]
    assert block["chosen"] == "rfm", block["reason"]
    models = TableIn(MODELS, layout.table(MODELS), storage)
    card = card_of(layout, config, "buyers")
    assert card["status"] == "trained" and models.marker["segments"]["buyers"]["model_version"] == card["model_version"]
    assert NOISE not in load_booster(bundle_file(layout, config, "buyers", "model.json")).feature_names
    scores = TableIn("scores", layout.table("scores"), storage)
    assert scores.marker["segments"] == {"buyers": card["model_version"]}
    files = {
        f: bundle_file(layout, config, "buyers", f)
        for f in ("model.json", "metrics.json", "importance.json", "report.html", "model_card.json")
    }
    assert all(files.values())
    assert list_files(layout.train_scratch, storage) == []  # Ray Train checkpoints cleaned up

    only_ghost = config.model_copy(
        update={"training": config.training.model_copy(update={"only_segments": ["ghost_brand"]})}
    )
    again = run_pipeline(only_ghost, STAGES, names=["labels", "train"], layout=layout)
    assert again["stages"]["labels"]["status"] == "skipped" and again["stages"]["train"]["status"] == "ran"
    assert models.marker["carried_over"] == ["buyers"]
    assert models.marker["segments"]["buyers"] == {"status": "trained", "model_version": card["model_version"]}
    assert {f: bundle_file(layout, config, "buyers", f) for f in files} == files
    assert card_of(layout, config, "ghost_brand")["status"] == "skipped"


@pytest.mark.slow
def test_labels_joined_to_the_wrong_people_are_rejected_and_never_scored(ray_cluster, tmp_path):
    """Features attached to the wrong persona ids (what a join on row order does): every candidate is no
    better than chance against the permuted evaluation labels, the segment is `rejected`, nothing is scored;
    `training.strict` turns that into a failed run."""
    segments = [SegmentConfig(name="buyers", kind="ecommerce_buyers")]
    config = small_config(tmp_path, segments)
    layout = RunLayout(str(tmp_path / "runs" / "r1"))
    events = make_events(1200, seed=3)
    plan = plan_for(config, events)
    publish_events(layout.table(EVENTS_RESOLVED), events, config.storage)
    rng = np.random.default_rng(0)
    extra = {"categories": list(plan.categories), "snapshots": [d.isoformat() for d in plan.snapshots]}
    with writing(layout.table(FEATURES), config.storage, extra) as writer:
        for as_of in plan.snapshots:
            table = stand_in_features(events, as_of, config)
            ids = table.column("persona_id").to_numpy(zero_copy_only=False)
            table = table.set_column(0, "persona_id", pa.array(rng.permutation(ids), pa.string()))
            writer.write_arrow(table, partition={"as_of": as_of})
    write_json(layout.plan, plan.to_json(), config.storage)
    summary = run_pipeline(config, WITH_SCORES, names=["labels", "train", "score"], layout=layout)
    assert summary["status"] == "succeeded"

    card = card_of(layout, config, "buyers")
    assert card["status"] == "rejected" and card["model_version"] is None and card["champion"]["chosen"] is None
    assert card["reason"].startswith("no acceptable candidate") and "not above chance" in card["reason"]
    with pytest.raises(FileNotFoundError):
        bundle_file(layout, config, "buyers", "model.json")
    result = read_json(layout.summary, config.storage)["stages"]["train"]["result"]
    assert result["rejected"] == 1 and result["segments"]["buyers"]["decision"].startswith("rejected: ")
    assert TableIn("scores", layout.table("scores"), config.storage).marker["segments"] == {}

    strict = config.model_copy(update={"training": config.training.model_copy(update={"strict": True})})
    with pytest.raises(UserError, match="rejected"):
        train.run(
            TrainView.from_config(strict),
            plan,
            TableIn(FEATURES, layout.table(FEATURES), config.storage),
            TableIn(LABELS, layout.table(LABELS), config.storage),
            TableOut(MODELS, layout.table(MODELS), config.storage),
        )


def test_train_reports_user_errors(tmp_path):
    config = small_config(tmp_path, [SegmentConfig(name="buyers", kind="ecommerce_buyers")])
    layout = RunLayout(str(tmp_path / "runs" / "x"))
    events = make_events(personas=20, seed=1)
    plan = plan_for(config, events)

    def call(config: JobConfig):
        return train.run(
            TrainView.from_config(config),
            plan,
            TableIn(FEATURES, layout.table(FEATURES), config.storage),
            TableIn(LABELS, layout.table(LABELS), config.storage),
            TableOut(MODELS, layout.table(MODELS), config.storage),
        )

    nope = config.model_copy(update={"training": config.training.model_copy(update={"only_segments": ["nope"]})})
    with pytest.raises(UserError, match="not in the config's segments"):
        call(nope)
    with pytest.raises(UserError, match="has not been published"):
        call(config)
