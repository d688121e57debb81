"""Score stage: actor-pool scoring (the read fused into the actors), distributed percentiles, membership, skipped segments, feature checks.

The inputs (features/ and models/SEGMENT/) are built here by hand: a small feature table written with
jobs.io.write_arrow and real XGBoost models trained on it, saved as model.json + model_card.json exactly as
the train stage writes them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.stats import rankdata

from jobs import io
from jobs.config import JobConfig, ScoringConfig, SegmentConfig
from jobs.errors import UserError

AS_OF = dt.date(2026, 3, 1)
FEATURES = [f"f{i:02d}" for i in range(12)]


def make_features(n: int = 600, seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {
        "persona_id": pa.array([f"per-{i:05d}" for i in range(n)]),
        "as_of": pa.array([AS_OF] * n, pa.date32()),
    }
    for j, name in enumerate(FEATURES):
        if j % 4 == 3:  # some int64 columns, one of them with nulls
            values = rng.integers(0, 20, n)
            mask = rng.random(n) < 0.1 if j == 3 else None
            columns[name] = pa.array(values, pa.int64(), mask=mask)
        else:
            values = rng.normal(size=n)
            values[rng.random(n) < 0.05] = np.nan  # NaN = missing
            columns[name] = pa.array(values, pa.float64())
    return pa.table(columns)


def train_model(features: pa.Table, names: list[str], seed: int = 0, rounds: int = 20):
    import xgboost as xgb

    x = np.column_stack([features.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in names])
    rng = np.random.default_rng(seed)
    y = (np.nan_to_num(x[:, 0]) + 0.5 * np.nan_to_num(x[:, 1]) + rng.normal(scale=0.5, size=len(x)) > 0.3).astype(int)
    dtrain = xgb.DMatrix(x, label=y, feature_names=names)
    return xgb.train({"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1}, dtrain, rounds)


def save_model(run_dir: str, storage, segment: SegmentConfig, booster=None, status: str = "trained",
               feature_names: list[str] | None = None, reason: str | None = None) -> str | None:
    folder = io.join(run_dir, "models", segment.name)
    version = None
    if booster is not None:
        raw = bytes(booster.save_raw("json"))
        version = hashlib.sha256(raw).hexdigest()[:12]
        io.write_bytes(io.join(folder, "model.json"), raw, storage)
    card = {
        "segment": segment.name,
        "kind": segment.kind,
        "status": status,
        "reason": reason,
        "model_version": version,
        "feature_names": feature_names if feature_names is not None else (booster.feature_names if booster else None),
        "feature_types": ["q"] * len(feature_names or (booster.feature_names if booster else []) or []),
        "config_hash": "test",
        "train_as_of": "2026-02-01",
        "eval_as_of": "2026-02-15",
        "horizon_days": segment.horizon_days,
        "created_at": "2026-03-01T00:00:00+00:00",
    }
    io.write_json(io.join(folder, "model_card.json"), card, storage)
    return version


def eligible_factory():
    """An eligibility rule for the test segments (a closure, so Ray ships it by value to the actors)."""

    def eligible(segment, table, categories=None):
        if segment.name == "seg_b":  # only personas with f02 > 0 are scored for seg_b
            values = table.column("f02").to_numpy(zero_copy_only=False)
            return np.nan_to_num(values, nan=-1.0) > 0
        return np.ones(table.num_rows, dtype=bool)

    return eligible


SEGMENTS = [
    SegmentConfig(name="seg_a", kind="ecommerce_buyers"),
    SegmentConfig(name="seg_b", kind="price_hunters"),
    SegmentConfig(name="seg_c", kind="high_interest", category="electronics"),
    SegmentConfig(name="seg_d", kind="price_hunters"),
]


def build_run(root: str, storage, features: pa.Table | None = None):
    run_dir = io.join(root, "runs", "r1")
    features = features if features is not None else make_features()
    # the table may hold columns a model does not use (e.g. empty category slots): they are ignored
    unused = pa.array(np.zeros(features.num_rows), pa.float64())
    io.write_arrow(features.append_column("zz_unused", unused), io.join(run_dir, "features"), storage)
    boosters = {
        "seg_a": train_model(features, FEATURES, seed=1),
        "seg_b": train_model(features, list(reversed(FEATURES)), seed=2),  # another column order: still fine
    }
    versions = {name: save_model(run_dir, storage, SEGMENTS[i], b) for i, (name, b) in enumerate(boosters.items())}
    save_model(run_dir, storage, SEGMENTS[2], None, status="skipped", reason="only 12 positives (< 100)")
    # seg_d has no model folder at all (e.g. `segments train --segment seg_a` only)
    return run_dir, features, boosters, versions


def reference_scores(booster, features: pa.Table) -> np.ndarray:
    import xgboost as xgb

    names = booster.feature_names
    x = np.column_stack([features.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in names])
    return booster.predict(xgb.DMatrix(x, feature_names=names))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_score_stage(where, tmp_path, ray_cluster, storage, s3_bucket):
    from jobs import score
    from jobs.score import run_score

    root = str(tmp_path) if where == "local" else s3_bucket + "/prefix"
    run_dir, features, boosters, versions = build_run(root, storage)
    config = JobConfig(storage=storage, segments=SEGMENTS, scoring=ScoringConfig(batch_size=128, actors=1))
    summary = run_score(config, run_dir, eligible_fn=eligible_factory())

    assert summary["as_of"] == AS_OF.isoformat()
    assert {s["segment"] for s in summary["skipped"]} == {"seg_c", "seg_d"}
    assert "12 positives" in next(s["reason"] for s in summary["skipped"] if s["segment"] == "seg_c")
    scores = io.read_arrow(io.join(run_dir, "scores"), storage).to_pandas()
    assert list(scores.columns) == ["persona_id", "segment", "score", "percentile", "model_version", "member"]
    assert set(scores["segment"]) == {"seg_a", "seg_b"}

    f02 = np.nan_to_num(features.column("f02").to_numpy(zero_copy_only=False), nan=-1.0)
    eligible = {"seg_a": np.ones(features.num_rows, bool), "seg_b": f02 > 0}
    for name, booster in boosters.items():
        got = scores[scores["segment"] == name].set_index("persona_id").sort_index()
        ids = np.array(features.column("persona_id").to_pylist())[eligible[name]]
        assert sorted(got.index) == sorted(ids), "every eligible persona scored once, nobody else"
        assert (got["model_version"] == versions[name]).all()
        want = reference_scores(booster, features)[eligible[name]]
        np.testing.assert_allclose(got.loc[ids, "score"].to_numpy(), want, rtol=1e-6)
        # percentile = share of the segment ranked below (ties: mid-rank), up to one histogram bin's share
        exact = 100 * (rankdata(want, method="average") - 0.5) / len(want)
        _, per_bin = np.unique(score.score_bins(want.astype(np.float64)), return_counts=True)
        error = np.abs(got.loc[ids, "percentile"].to_numpy() - exact)
        assert np.max(error) <= 100 * per_bin.max() / len(want) + 1e-9
        members = got["member"].to_numpy()
        assert members.sum() == pytest.approx(0.10 * len(got), abs=2 + 0.01 * len(got))
        assert got.loc[got["member"], "score"].min() >= got.loc[~got["member"], "score"].max()
        assert summary["segments"][name] == {"model_version": versions[name], "scored": len(got),
                                             "members": int(members.sum())}
    marker = io.read_marker(io.join(run_dir, "scores"), storage)
    assert marker["as_of"] == AS_OF.isoformat() and marker["segments"] == versions


def test_threshold_membership_two_actors_and_segment_definitions(tmp_path, ray_cluster, storage):
    """No eligible_fn: jobs.segments.eligible_mask decides (everyone, for these two kinds)."""
    from jobs.score import run_score

    run_dir, features, boosters, _ = build_run(str(tmp_path), storage)
    config = JobConfig(storage=storage, segments=SEGMENTS[:2],
                       scoring=ScoringConfig(membership="threshold", threshold=0.6, actors=2, batch_size=100))
    run_score(config, run_dir)
    scores = io.read_arrow(io.join(run_dir, "scores"), storage).to_pandas()
    assert len(scores) == 2 * features.num_rows
    assert ((scores["score"] >= 0.6) == scores["member"]).all()
    assert scores.groupby("segment")["persona_id"].nunique().to_dict() == scores.groupby("segment").size().to_dict()


def test_model_with_other_features_is_refused(tmp_path, ray_cluster, storage):
    from jobs.score import run_score

    run_dir, features, _, _ = build_run(str(tmp_path), storage)
    renamed = FEATURES[:-1] + ["f99_new"]
    table = features.rename_columns(["persona_id", "as_of"] + renamed)
    save_model(run_dir, storage, SEGMENTS[1], train_model(table, renamed))
    config = JobConfig(storage=storage, segments=SEGMENTS[:2])
    with pytest.raises(UserError, match=r"seg_b.*does not match the feature table: 1 model feature\(s\) missing.*f99_new"):
        run_score(config, run_dir, eligible_fn=eligible_factory())
    assert not io.exists(io.join(run_dir, "scores", io.MARKER), storage)

    # a card whose feature list disagrees with its model.json is refused too
    save_model(run_dir, storage, SEGMENTS[1], train_model(features, FEATURES), feature_names=FEATURES[:-1])
    with pytest.raises(UserError, match="different feature names"):
        run_score(config, run_dir, eligible_fn=eligible_factory())


def test_model_of_another_definition_or_category_slots_is_refused(tmp_path, storage):
    from jobs.score import run_score

    run_dir, features, _, _ = build_run(str(tmp_path), storage)
    card_path = io.join(run_dir, "models", "seg_a", "model_card.json")
    card = io.read_json(card_path, storage)
    other = SegmentConfig(name="seg_a", kind="ecommerce_buyers", horizon_days=7)
    io.write_json(card_path, {**card, "definition": other.model_dump(mode="json")}, storage)
    with pytest.raises(UserError, match="configured differently from the model"):
        run_score(JobConfig(storage=storage, segments=SEGMENTS[:1]), run_dir)

    io.write_json(card_path, {**card, "feature_categories": ["fashion", "home"]}, storage)
    io.write_arrow(features, io.join(run_dir, "features"), storage, extra={"categories": ["home", "fashion"]})
    with pytest.raises(UserError, match="category slots"):
        run_score(JobConfig(storage=storage, segments=SEGMENTS[:1]), run_dir)


def test_model_replaced_after_training_is_refused(tmp_path, storage):
    from jobs.score import run_score

    run_dir, features, _, _ = build_run(str(tmp_path), storage)
    other = train_model(features, FEATURES, seed=9, rounds=3)
    io.write_bytes(io.join(run_dir, "models", "seg_a", "model.json"), bytes(other.save_raw("json")), storage)
    with pytest.raises(UserError, match="replaced after training"):
        run_score(JobConfig(storage=storage, segments=SEGMENTS[:1]), run_dir)


def test_cli_feature_mismatch_exits_2(tmp_path, storage):
    from typer.testing import CliRunner

    from jobs.cli import app

    run_dir, features, _, _ = build_run(str(tmp_path), storage)
    table = features.drop_columns(["f05"])
    io.write_arrow(table, io.join(run_dir, "features"), storage)
    config_file = tmp_path / "job.yaml"
    config_file.write_text(json.dumps({"segments": [s.model_dump(mode="json") for s in SEGMENTS[:2]]}))
    result = CliRunner().invoke(app, ["score", "--run", run_dir, "--config", str(config_file)])
    assert result.exit_code == 2, result.output
    assert "does not match the feature table" in result.output and "f05" in result.output
    assert "Traceback" not in result.output


def test_percentiles_from_merged_block_histograms():
    from jobs import score

    rng = np.random.default_rng(5)
    # crowded near 0 (a rare segment), a tie cluster, and a few negatives (order keys handle the sign)
    values = np.concatenate([rng.beta(0.5, 60, 20000), np.full(500, 0.25), -rng.random(50), rng.random(1000)])
    rng.shuffle(values)
    blocks = np.array_split(values, 7)
    partial = [score._bin_counts(pa.table({"segment": ["s"] * len(b), "score": b})) for b in blocks]
    lookup = score.percentile_lookup(score.merge_histograms(pa.concat_tables(partial)))["s"]
    assert lookup["total"] == len(values)
    pct = score.percentiles(values, lookup)
    exact = 100 * (rankdata(values, method="average") - 0.5) / len(values)
    assert np.max(np.abs(pct - exact)) < 0.05  # at most one bin's share of rows (here < 0.05%)
    np.testing.assert_allclose(pct[values == 0.25], exact[values == 0.25])  # ties: the exact mid-rank
    order = np.argsort(values, kind="stable")
    assert np.all(np.diff(pct[order]) >= 0), "percentile never decreases with the score"
    assert np.all(np.diff(score.score_bins(values[order])) >= 0)
    top = score.membership(values, pct, ScoringConfig(top_percent=5))
    assert np.sum(top != (exact >= 95)) <= 0.001 * len(values)  # ties at the cut are all in or all out


def test_read_is_fused_into_the_scoring_actors(tmp_path, ray_cluster, storage):
    """A table of >= 2 files per actor: each actor reads its own files (no feature block crosses the object
    store), scores them `batch_size` rows at a time, and every persona comes out exactly once."""
    import ray

    from jobs.score import load_model_specs, read_features, scoring_map

    run_dir, features, boosters, _ = build_run(str(tmp_path), storage)
    features_path = io.join(run_dir, "features")
    write_id = io.new_write_id()
    (tmp_path / "runs" / "r1" / "features" / write_id).mkdir()
    for i, part in enumerate(np.array_split(np.arange(features.num_rows), 5)):
        pq.write_table(features.take(part), io.join(features_path, write_id, f"part-{i:05d}.parquet"))
    io.publish_marker(features_path, write_id, storage)
    config = JobConfig(storage=storage, segments=SEGMENTS[:1], scoring=ScoringConfig(actors=2, batch_size=50))
    specs, _ = load_model_specs(config, run_dir, FEATURES)

    scored_ds = scoring_map(read_features(features_path, storage, config.scoring), specs, config)
    scored = pa.concat_tables(ray.get(scored_ds.to_arrow_refs())).to_pandas().set_index("persona_id")

    assert "ReadParquet->MapBatches(Scorer)" in scored_ds.stats()
    ids = features.column("persona_id").to_pylist()
    assert sorted(scored.index) == sorted(ids)
    np.testing.assert_allclose(scored.loc[ids, "score"].to_numpy(), reference_scores(boosters["seg_a"], features),
                               rtol=1e-6)


def test_histogram_tree_merge_over_many_blocks(ray_cluster):
    """20 blocks: two levels of merge tasks; the result equals one in-memory merge of every score."""
    import ray

    from jobs import score

    rng = np.random.default_rng(8)
    blocks = [pa.table({"segment": rng.choice(["a", "b"], 400).tolist(), "score": rng.beta(0.5, 4, 400)})
              for _ in range(20)]
    merged = score.score_histogram(ray.data.from_arrow(blocks))
    expected = score.merge_histograms(score._bin_counts(pa.concat_tables(blocks)))
    assert merged.sort_by([("segment", "ascending"), ("bin", "ascending")]).equals(
        expected.sort_by([("segment", "ascending"), ("bin", "ascending")]))
    assert score.score_histogram(ray.data.from_arrow([blocks[0].slice(0, 0)])).num_rows == 0
