"""Score stage: task scoring of the plan's as_of partition, distributed percentiles, membership, skipped
segments, and the checks that refuse a model that does not fit the config or the feature table.

The inputs are built here by hand: a small features table (two snapshots; only the plan's as_of is scored)
and a models bundle of real XGBoost models trained on it, published as the train stage publishes them.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import rankdata

from features.catalog import reason_labels
from jobs.config import FeaturesConfig, JobConfig, ScoreView, ScoringConfig, SegmentConfig
from jobs.errors import UserError
from jobs.model.booster import model_bytes, model_version
from jobs.run.layout import FEATURES, MODELS, SCORES, RunLayout
from jobs.run.pipeline import run_pipeline
from jobs.run.plan import RunPlan
from jobs.run.stage import Stage, ordered
from jobs.segments.membership import score_bins
from jobs.stages import score
from jobs.storage import TableIn, TableOut, join, write_json, writing

AS_OF = dt.date(2026, 3, 1)
EARLIER = dt.date(2026, 2, 1)
CATEGORIES = ("fashion", "home")
# catalogue names, so that reasons get their labels; the first drives the label, the second half as much
FEATURES_USED = [
    "orders_30d",
    "revenue_365d",
    "product_views_90d",
    "days_since_last_purchase",
    "carts_30d",
    "sessions_30d",
    "price_spread_seen_90d",
    "aov_365d",
    "logins_90d",
    "cat00_views_90d",
    "cat01_views_90d",
    "night_share_365d",
]
PLAN = RunPlan("r1", AS_OF, AS_OF, CATEGORIES, {})

SEGMENTS = [
    SegmentConfig(name="seg_a", kind="ecommerce_buyers"),
    SegmentConfig(name="seg_b", kind="category_lovers", category="home"),  # eligible: cat01_purchases_365d >= 1
    SegmentConfig(name="seg_c", kind="high_interest", category="electronics"),
    SegmentConfig(name="seg_d", kind="price_hunters"),
]


def make_features(n: int = 600, seed: int = 3, as_of: dt.date = AS_OF) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {
        "persona_id": pa.array([f"per-{i:05d}" for i in range(n)]),
        "as_of": pa.array([as_of] * n, pa.date32()),
    }
    for j, name in enumerate(FEATURES_USED):
        if j % 4 == 3:  # some int64 columns, one of them with nulls
            values = rng.integers(0, 20, n)
            mask = rng.random(n) < 0.1 if j == 3 else None
            columns[name] = pa.array(values, pa.int64(), mask=mask)
        else:
            values = rng.normal(size=n)
            values[rng.random(n) < 0.05] = np.nan  # NaN = missing
            columns[name] = pa.array(values, pa.float64())
    columns["cat01_purchases_365d"] = pa.array(rng.integers(0, 3, n), pa.int64())
    # the table may hold columns a model does not use (e.g. empty category slots): they are ignored
    columns["zz_unused"] = pa.array(np.zeros(n), pa.float64())
    return pa.table(columns)


def train_model(features: pa.Table, names: list[str], seed: int = 0, rounds: int = 20):
    import xgboost as xgb

    x = np.column_stack([features.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in names])
    rng = np.random.default_rng(seed)
    y = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) + rng.normal(scale=0.5, size=len(x)) > 0.3).astype(int)
    dtrain = xgb.DMatrix(x, label=y, feature_names=names)
    return xgb.train({"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1}, dtrain, rounds)


def publish_features(run_dir: str, storage, table: pa.Table) -> None:
    with writing(join(run_dir, FEATURES), storage, {"categories": list(CATEGORIES)}) as writer:
        writer.write_arrow(table, partition={"as_of": AS_OF})
        writer.write_arrow(make_features(seed=99, as_of=EARLIER), partition={"as_of": EARLIER})  # not scored


def card(segment: SegmentConfig, booster=None, status="trained", reason=None, feature_names=None, **extra) -> dict:
    names = feature_names if feature_names is not None else (booster.feature_names if booster else None)
    return {
        "segment": segment.name,
        "kind": segment.kind,
        "status": status,
        "reason": reason,
        "model_version": model_version(model_bytes(booster)) if booster else None,
        "feature_names": names,
        "feature_types": ["q"] * len(names or []),
        "config_hash": "test",
        "train_as_of": "2026-02-01",
        "eval_as_of": "2026-02-15",
        "horizon_days": segment.horizon_days,
        "created_at": "2026-03-01T00:00:00+00:00",
        **extra,
    }


def publish_models(run_dir: str, storage, entries: dict[str, tuple[dict, bytes | None]]) -> None:
    """A models bundle: per segment its card and (trained) model bytes."""
    extra = {
        "segments": {n: {"status": c["status"], "model_version": c["model_version"]} for n, (c, _) in entries.items()}
    }
    with writing(join(run_dir, MODELS), storage, extra) as writer:
        for name, (segment_card, raw) in entries.items():
            if raw is not None:
                writer.write_file(RunLayout.model_file(name, "model.json"), raw)
            writer.write_file(RunLayout.model_file(name, "model_card.json"), json.dumps(segment_card).encode())


def build_run(root: str, storage, features: pa.Table | None = None):
    run_dir = join(root, "runs", "r1")
    features = features if features is not None else make_features()
    publish_features(run_dir, storage, features)
    boosters = {
        "seg_a": train_model(features, FEATURES_USED, seed=1),
        "seg_b": train_model(features, list(reversed(FEATURES_USED)), seed=2),  # another column order: still fine
    }
    entries = {name: (card(SEGMENTS[i], b), model_bytes(b)) for i, (name, b) in enumerate(boosters.items())}
    entries["seg_c"] = (card(SEGMENTS[2], status="skipped", reason="only 12 positives (< 100)"), None)
    # seg_d has no model in the bundle at all (e.g. `segments train --segment seg_a` on a fresh run)
    publish_models(run_dir, storage, entries)
    return run_dir, features, boosters, {n: e[0]["model_version"] for n, e in entries.items() if e[1]}, entries


def run_score(config: JobConfig, run_dir: str) -> dict:
    storage = config.storage
    return score.run(
        ScoreView.from_config(config),
        PLAN,
        TableIn(FEATURES, join(run_dir, FEATURES), storage),
        TableIn(MODELS, join(run_dir, MODELS), storage),
        TableOut(SCORES, join(run_dir, SCORES), storage),
    )


def reference_scores(booster, features: pa.Table) -> np.ndarray:
    import xgboost as xgb

    names = booster.feature_names
    x = np.column_stack([features.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in names])
    return booster.predict(xgb.DMatrix(x, feature_names=names))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_score_stage(where, tmp_path, ray_cluster, storage, s3_bucket):
    root = str(tmp_path) if where == "local" else s3_bucket + "/prefix"
    run_dir, features, boosters, versions, _ = build_run(root, storage)
    config = JobConfig(storage=storage, segments=SEGMENTS, scoring=ScoringConfig(batch_size=128, tasks=1))
    summary = run_score(config, run_dir)

    assert summary["as_of"] == AS_OF.isoformat() and summary["rows_in"] == features.num_rows
    assert {s["segment"] for s in summary["skipped"]} == {"seg_c", "seg_d"}
    assert "12 positives" in next(s["reason"] for s in summary["skipped"] if s["segment"] == "seg_c")
    scores = TableIn(SCORES, join(run_dir, SCORES), storage).arrow().to_pandas()
    assert list(scores.columns) == [
        "persona_id",
        "segment",
        "score",
        "percentile",
        "model_version",
        "member",
        "reasons",
    ]
    assert set(scores["segment"]) == {"seg_a", "seg_b"}

    home = features.column("cat01_purchases_365d").to_numpy() >= 1
    eligible = {"seg_a": np.ones(features.num_rows, bool), "seg_b": home}
    assert 0 < home.sum() < features.num_rows
    for name, booster in boosters.items():
        got = scores[scores["segment"] == name].set_index("persona_id").sort_index()
        ids = np.array(features.column("persona_id").to_pylist())[eligible[name]]
        assert sorted(got.index) == sorted(ids), "every eligible persona scored once, nobody else"
        assert (got["model_version"] == versions[name]).all()
        want = reference_scores(booster, features)[eligible[name]]
        np.testing.assert_allclose(got.loc[ids, "score"].to_numpy(), want, rtol=1e-6)
        # percentile = share of the segment ranked below (ties: mid-rank), up to one histogram bin's share
        exact = 100 * (rankdata(want, method="average") - 0.5) / len(want)
        _, per_bin = np.unique(score_bins(want.astype(np.float64)), return_counts=True)
        error = np.abs(got.loc[ids, "percentile"].to_numpy() - exact)
        assert np.max(error) <= 100 * per_bin.max() / len(want) + 1e-9
        members = got["member"].to_numpy()
        assert members.sum() == pytest.approx(0.10 * len(got), abs=2 + 0.01 * len(got))
        assert got.loc[got["member"], "score"].min() >= got.loc[~got["member"], "score"].max()
        assert_member_reasons(got, driver=booster.feature_names[0])  # seg_b's model reads the columns reversed
        assert summary["segments"][name] == {
            "model_version": versions[name],
            "scored": len(got),
            "members": int(members.sum()),
            "members_without_reasons": 0,  # reasons are computed for the rows that may be members only
        }
    marker = TableIn(SCORES, join(run_dir, SCORES), storage).marker
    assert marker["as_of"] == AS_OF.isoformat() and marker["segments"] == versions
    for name in boosters:  # the coarse score distribution the report draws: every scored persona in its bin
        got = scores[scores["segment"] == name]["score"].to_numpy()
        assert marker["distribution"][name] == np.bincount(np.minimum(got * 20, 19).astype(int), minlength=20).tolist()


LABELS = reason_labels(FeaturesConfig(), CATEGORIES)


def assert_member_reasons(got, driver: str) -> None:
    """Members: 1-3 distinct catalogue labels, the label of the feature that drives the model (`driver`) first
    for most; everyone else: null."""
    assert got.loc[~got["member"], "reasons"].isna().all()
    member_reasons = got.loc[got["member"], "reasons"]
    assert all(1 <= len(r) <= 3 and len(set(r)) == len(r) for r in member_reasons)
    assert {label for r in member_reasons for label in r} <= set(LABELS.values())
    first = [r[0] for r in member_reasons]
    assert first.count(LABELS[driver]) > len(first) / 2, first


def test_threshold_membership_two_tasks_and_everyone_eligible(tmp_path, ray_cluster, storage):
    run_dir, features, _, _, _ = build_run(str(tmp_path), storage)
    segments = [SEGMENTS[0], SegmentConfig(name="seg_b", kind="price_hunters")]  # kinds that score everyone
    config = JobConfig(
        storage=storage,
        segments=segments,
        scoring=ScoringConfig(membership="threshold", threshold=0.6, tasks=2, batch_size=100),
    )
    run_score(config, run_dir)
    scores = TableIn(SCORES, join(run_dir, SCORES), storage).arrow().to_pandas()
    assert len(scores) == 2 * features.num_rows
    assert ((scores["score"] >= 0.6) == scores["member"]).all()
    assert_member_reasons(scores[scores["segment"] == "seg_a"], driver=FEATURES_USED[0])
    assert scores.groupby("segment")["persona_id"].nunique().to_dict() == scores.groupby("segment").size().to_dict()


def test_model_with_other_features_is_refused(tmp_path, ray_cluster, storage):
    run_dir, features, _, _, entries = build_run(str(tmp_path), storage)
    renamed = FEATURES_USED[:-1] + ["f99_new"]
    last = FEATURES_USED[-1]
    other = train_model(features.rename_columns([{last: "f99_new"}.get(c, c) for c in features.column_names]), renamed)
    publish_models(run_dir, storage, {**entries, "seg_b": (card(SEGMENTS[1], other), model_bytes(other))})
    config = JobConfig(storage=storage, segments=SEGMENTS[:2])
    with pytest.raises(
        UserError, match=r"seg_b.*does not match the feature table: 1 model feature\(s\) missing.*f99_new"
    ):
        run_score(config, run_dir)
    assert TableIn(SCORES, join(run_dir, SCORES), storage).version is None

    # a card whose feature list disagrees with its model.json is refused too
    same = train_model(features, FEATURES_USED)
    publish_models(
        run_dir,
        storage,
        {**entries, "seg_b": (card(SEGMENTS[1], same, feature_names=FEATURES_USED[:-1]), model_bytes(same))},
    )
    with pytest.raises(UserError, match="different feature names"):
        run_score(config, run_dir)

    # a feature the models need is gone from the table: the run stops with a message naming it
    publish_models(run_dir, storage, entries)
    publish_features(run_dir, storage, features.drop_columns([FEATURES_USED[5]]))
    layout = RunLayout(run_dir)
    write_json(layout.plan, PLAN.to_json(), storage)
    with pytest.raises(UserError, match=f"does not match the feature table.*{FEATURES_USED[5]}"):
        run_pipeline(config, ordered([Stage.of(score.run)]), names=["score"], layout=layout)


def test_model_of_another_definition_or_category_slots_is_refused(tmp_path, storage):
    run_dir, features, _, _, entries = build_run(str(tmp_path), storage)
    card_a, raw_a = entries["seg_a"]
    other = SegmentConfig(name="seg_a", kind="ecommerce_buyers", horizon_days=7)
    publish_models(run_dir, storage, {"seg_a": ({**card_a, "definition": other.model_dump(mode="json")}, raw_a)})
    with pytest.raises(UserError, match="configured differently from the model"):
        run_score(JobConfig(storage=storage, segments=SEGMENTS[:1]), run_dir)

    publish_models(run_dir, storage, {"seg_a": ({**card_a, "feature_categories": ["home", "fashion"]}, raw_a)})
    with pytest.raises(UserError, match="category slots"):
        run_score(JobConfig(storage=storage, segments=SEGMENTS[:1]), run_dir)


def test_model_replaced_after_training_is_refused(tmp_path, storage):
    run_dir, features, _, _, entries = build_run(str(tmp_path), storage)
    other = model_bytes(train_model(features, FEATURES_USED, seed=9, rounds=3))
    publish_models(run_dir, storage, {"seg_a": (entries["seg_a"][0], other)})
    with pytest.raises(UserError, match="replaced after training"):
        run_score(JobConfig(storage=storage, segments=SEGMENTS[:1]), run_dir)
