"""Scoring on Ray: the Parquet read fused into the scoring tasks, and the histogram tree merge."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import xgboost

from jobs.config import ScoringConfig, SegmentConfig, StorageConfig
from jobs.model.booster import model_bytes, model_version
from jobs.model.bundle import ModelSpec
from jobs.model.reasons import ReasonNames, contributions
from jobs.model.scoring import may_be_members, score_histogram, scoring_map
from jobs.segments.membership import bin_counts, merge_histograms
from jobs.storage import TableIn, join, writing


def _features_and_model(n: int, seed: int) -> tuple[pa.Table, xgboost.Booster, ModelSpec]:
    """A table of `n` personas x 12 features, a small booster fitted on it, and its model spec."""
    rng = np.random.default_rng(seed)
    names = [f"f{i:02d}" for i in range(12)]
    features = pa.table({"persona_id": [f"per-{i:05d}" for i in range(n)], **{c: rng.normal(size=n) for c in names}})
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgboost.DMatrix(features.select(names).to_pandas(), label=rng.random(n) < 0.3),
        10,
    )
    raw = model_bytes(booster)
    spec = ModelSpec(
        SegmentConfig(name="seg_a", kind="ecommerce_buyers"), raw, model_version(raw), tuple(names), None, ()
    )
    return features, booster, spec


def test_read_is_fused_into_the_scoring_tasks(tmp_path, ray_cluster):
    """A table of >= 2 files per task: each task reads its own files (no feature block crosses the object
    store), scores them `batch_size` rows at a time, and every persona comes out exactly once."""
    import ray

    n = 600
    features, booster, spec = _features_and_model(n, seed=3)
    store = StorageConfig()
    table_path = join(str(tmp_path), "features")
    with writing(table_path, store) as writer:
        for i, part in enumerate(np.array_split(np.arange(n), 5)):
            writer.write_arrow(features.take(part), partition={"as_of": "2026-03-01"}, name=f"part-{i:05d}")
    handle = TableIn("features", table_path, store)
    files = handle.files({"as_of": "2026-03-01"})
    assert len(files) == 5
    scoring = ScoringConfig(tasks=2, batch_size=50)
    scored_ds = scoring_map(handle, {"as_of": "2026-03-01"}, [spec], scoring)
    scored = pa.concat_tables(ray.get(scored_ds.to_arrow_refs())).to_pandas().set_index("persona_id")

    assert "ReadParquet->MapBatches(score_block)" in scored_ds.stats()
    ids = features.column("persona_id").to_pylist()
    assert sorted(scored.index) == sorted(ids)
    expected = booster.inplace_predict(features.select(spec.feature_names).to_pandas().to_numpy(np.float32))
    np.testing.assert_allclose(scored.loc[ids, "score"].to_numpy(), expected, rtol=1e-6)


def test_a_worker_builds_its_scorer_once_per_stage(ray_cluster):
    """`score_block` builds a worker's Scorer at its first block of a stage, reuses it for the stage's other
    blocks, and replaces it (not adds to it) when a new stage's arguments come; the OpenMP thread limit a
    call sets is lifted after it, as other stages' tasks run in the same worker."""
    import ray
    from threadpoolctl import threadpool_info

    from jobs.model import scoring as scoring_module

    features, booster, spec = _features_and_model(300, seed=4)
    args = {"specs": [spec], "nthread": 1, "batch_size": 64, "scoring": ScoringConfig(reasons="off")}
    openmp_before = [(i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "openmp"]
    assert openmp_before  # xgboost's OpenMP runtime is loaded
    first_stage = ray.put(args)
    head = scoring_module.score_block(features.slice(0, 100), first_stage)
    scorer = scoring_module._worker_scorer[first_stage.hex()]
    tail = scoring_module.score_block(features.slice(100), first_stage)
    assert scoring_module._worker_scorer == {first_stage.hex(): scorer}
    scores = pa.concat_tables([head, tail]).column("score").to_numpy()
    expected = booster.inplace_predict(features.select(spec.feature_names).to_pandas().to_numpy(np.float32))
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert [(i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "openmp"] == (
        openmp_before
    )

    next_stage = ray.put(args)
    scoring_module.score_block(features.slice(0, 10), next_stage)
    assert list(scoring_module._worker_scorer) == [next_stage.hex()]
    assert scoring_module._worker_scorer[next_stage.hex()] is not scorer


def test_histogram_tree_merge_over_many_blocks(ray_cluster):
    """20 blocks: two levels of merge tasks; the result equals one in-memory merge of every score."""
    import ray.data

    rng = np.random.default_rng(8)
    blocks = [
        pa.table({"segment": rng.choice(["a", "b"], 400).tolist(), "score": rng.beta(0.5, 4, 400)}) for _ in range(20)
    ]
    merged = score_histogram(ray.data.from_arrow(blocks))
    expected = merge_histograms(bin_counts(pa.concat_tables(blocks)))
    assert merged.sort_by([("segment", "ascending"), ("bin", "ascending")]).equals(
        expected.sort_by([("segment", "ascending"), ("bin", "ascending")])
    )
    assert score_histogram(ray.data.from_arrow([blocks[0].slice(0, 0)])).num_rows == 0


def test_reasons_sum_contributions_per_label_and_keep_the_top_three_positive():
    names = ["orders_30d", "orders_90d", "revenue_365d", "f_unlabelled", "logins_90d", "carts_30d"]
    labels = {
        "orders_30d": "purchase frequency",
        "orders_90d": "purchase frequency",
        "revenue_365d": "spend",
        "logins_90d": "account activity",
        "carts_30d": "cart activity",
    }
    reasons = ReasonNames(names, labels)
    contribs = np.array(
        [
            # two small "purchase frequency" parts outweigh "spend"; the unlabelled feature is never named
            [0.3, 0.3, 0.5, 9.0, 0.1, 0.2, -1.0],
            # only one label pushes up; the rest pull down: one reason
            [-0.3, -0.1, 0.2, 9.0, -0.1, -0.2, 5.0],
            # nothing pushes up: no reasons
            [-0.3, -0.1, -0.2, 9.0, -0.1, 0.0, 5.0],
        ],
        dtype=np.float32,
    )
    got = reasons.top(contribs).to_pylist()
    assert got == [["purchase frequency", "spend", "cart activity"], ["spend"], []]


def test_contributions_add_up_to_the_margin():
    """XGBoost's contributions (both methods) sum to the model's margin, per row: what the reasons rank."""
    rng = np.random.default_rng(4)
    names = [f"f{i}" for i in range(5)]
    x = rng.normal(size=(300, 5)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgboost.DMatrix(x, label=np.nan_to_num(x[:, 0]) > 0.2, feature_names=names),
        15,
    )
    margin = booster.inplace_predict(x, predict_type="margin")
    for method in ("approx", "shap"):
        contribs = contributions(booster, x, names, None, method)
        assert contribs.shape == (300, 6)
        np.testing.assert_allclose(contribs.sum(axis=1), margin, rtol=1e-4, atol=1e-4)


def test_score_distribution_counts_every_score_in_its_equal_width_bin():
    from jobs.segments.membership import score_distribution

    rng = np.random.default_rng(5)
    scores = np.r_[rng.random(3000), [0.0, 1.0, 0.05, 0.95]]  # the edges: 0 and 1 are in the first and last bin
    segment = np.where(np.arange(len(scores)) % 3 == 0, "a", "b")
    merged = merge_histograms(bin_counts(pa.table({"segment": segment, "score": scores})))
    got = score_distribution(merged)
    for name in ("a", "b"):
        want = np.bincount(np.minimum(scores[segment == name] * 20, 19).astype(int), minlength=20)
        assert got[name] == want.tolist()


def test_reasons_are_computed_for_the_rows_that_may_be_members_only():
    """`may_be_members` is a small superset of the members of any block of a random partition: exact with a
    threshold, the block's top share plus a binomial margin (ties included) with top_percent."""
    rng = np.random.default_rng(4)
    scores = np.round(rng.beta(1, 6, 100_000), 3)  # ties, as tree models give
    cutoff = np.quantile(scores, 0.90)
    members = scores >= cutoff
    for block in np.array_split(rng.permutation(len(scores)), 50):
        maybe = may_be_members(scores[block], ScoringConfig(top_percent=10))
        assert maybe[members[block]].all() and maybe.mean() < 0.25
    exact = may_be_members(scores, ScoringConfig(membership="threshold", threshold=0.3))
    assert np.array_equal(exact, scores >= 0.3)
    assert may_be_members(np.zeros(0), ScoringConfig()).shape == (0,)
