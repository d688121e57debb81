"""Train stage on a real local Ray: Ray Train XGBoost per segment, gates, outputs, honest alarms.

The feature stage is replaced here by a tiny stand-in (a handful of RFM-like columns computed with
pandas from events before the cut-off) so these tests exercise the train stage alone, quickly; the
events carry a planted behaviour the model must find.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from jobs import io
from jobs.config import JobConfig, SegmentConfig
from jobs.errors import UserError
from jobs.train import calibrated, fit_intercept, hash_uniform, prior_corrected, resolve_cutoffs, run_train, train_segments

UTC = dt.timezone.utc
START = dt.datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 120
CATEGORIES = ["fashion", "home"]
STAND_IN = ["orders_365d", "revenue_365d", "days_since_last_purchase", "carts_7d", "cat00_purchases_365d",
            "cat01_purchases_365d", "noise"]


def make_events(personas: int = 1500, seed: int = 11) -> pa.Table:
    """Purchases at a persona-specific rate; 1-6 days before each purchase some add_to_cart events
    (the planted short-term intent that RFM columns do not see); fashion affinity per persona."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("persona_id", "ts", "event_type", "partner_id", "product_id", "category",
                                             "order_id", "event_id", "price")}

    def add(pid, day, kind, category, order=None, price=None):
        rows["persona_id"].append(pid)
        rows["ts"].append(START + dt.timedelta(days=float(day)))
        rows["event_type"].append(kind)
        rows["partner_id"].append(f"p{int(rng.integers(0, 3))}")
        rows["product_id"].append(f"x{int(rng.integers(0, 50))}")
        rows["category"].append(category)
        rows["order_id"].append(order)
        rows["event_id"].append(f"e{len(rows['event_id'])}")
        rows["price"].append(price)

    for i in range(personas):
        pid = f"persona-{i:05d}"
        rate = rng.gamma(0.6, 1 / 20)  # purchases per day
        fashion = rng.beta(0.5, 0.5)
        n = rng.poisson(rate * DAYS)
        for k, day in enumerate(np.sort(rng.uniform(0, DAYS, n))):
            category = "fashion/women" if rng.random() < fashion else "home/kitchen"
            for _ in range(int(rng.integers(1, 4))):
                add(pid, max(0.0, day - rng.uniform(1, 6)), "add_to_cart", category)
            add(pid, day, "purchase", category, order=f"o{i}-{k}", price=float(rng.gamma(2, 20)))
        for day in rng.uniform(0, DAYS, rng.poisson(3)):
            add(pid, day, "product_view", "home/decor")
    table = pa.table(rows)
    return table.cast(table.schema.set(table.schema.get_field_index("ts"), pa.field("ts", pa.timestamp("us", tz="UTC"))))


def stand_in_features(leak: bool = False):
    """compute_features stand-in: pandas on the driver (test-sized data), only events before `as_of`."""

    def compute(events, as_of: dt.date, config: JobConfig):
        import ray.data

        df = events.to_pandas()
        cut = pd.Timestamp(dt.datetime.combine(as_of, dt.time(0), tzinfo=UTC))
        past = df[df["ts"] < cut]
        buys = past[past["event_type"] == "purchase"]
        ids = pd.Index(sorted(df["persona_id"].dropna().unique()), name="persona_id")
        out = pd.DataFrame(index=ids)
        out["orders_365d"] = buys.groupby("persona_id")["order_id"].nunique().reindex(ids).fillna(0).astype("int64")
        out["revenue_365d"] = buys.groupby("persona_id")["price"].sum().reindex(ids).fillna(0.0)
        last = buys.groupby("persona_id")["ts"].max().reindex(ids)
        out["days_since_last_purchase"] = (cut - last).dt.total_seconds() / 86400.0
        carts = past[(past["event_type"] == "add_to_cart") & (past["ts"] >= cut - pd.Timedelta(days=7))]
        out["carts_7d"] = carts.groupby("persona_id").size().reindex(ids).fillna(0).astype("int64")
        for slot, name in enumerate(CATEGORIES):
            in_cat = buys[buys["category"].str.startswith(name)]
            out[f"cat{slot:02d}_purchases_365d"] = in_cat.groupby("persona_id").size().reindex(ids).fillna(0).astype("int64")
        out["noise"] = np.random.default_rng(as_of.toordinal()).normal(size=len(ids))
        if leak:  # what a feature that peeks past the cut-off looks like
            future = df[(df["ts"] >= cut) & (df["ts"] < cut + pd.Timedelta(days=30)) & (df["event_type"] == "purchase")]
            out["noise"] = future.groupby("persona_id").size().reindex(ids).fillna(0).astype("float64").to_numpy()
        out = out.reset_index()
        out.insert(1, "as_of", as_of)
        return ray.data.from_pandas(out)

    return compute


def small_config(tmp_path, segments, **training) -> JobConfig:
    base = {"num_boost_round": 40, "early_stopping_rounds": 8, "report_every": 10, "min_positives": 30,
            "min_negatives": 30, "shuffled_label_runs": 3, "max_failures": 0,
            "params": {"objective": "binary:logistic", "eval_metric": ["logloss", "auc"], "tree_method": "hist",
                       "max_depth": 3, "eta": 0.2, "min_child_weight": 5}}
    return JobConfig(root=str(tmp_path), ray={"num_partitions": 2}, features={"categories": CATEGORIES},
                     segments=segments, training=base | training)


def write_events(run_dir: str, config: JobConfig, events: pa.Table) -> None:
    io.write_arrow(events, io.RunLayout(run_dir).table("events_resolved"), config.storage)


def train(config, run_dir, segments=None, leak=False):
    events = io.read_dataset(io.RunLayout(run_dir).table("events_resolved"), config.storage)
    return train_segments(config, run_dir, segments or config.segments, events, features_fn=stand_in_features(leak),
                          feature_names=STAND_IN, feature_types=["q"] * len(STAND_IN))


def test_cutoffs_default_to_fully_observed_windows():
    config = JobConfig()
    seg = SegmentConfig(name="b", kind="ecommerce_buyers", horizon_days=30)
    cut = resolve_cutoffs(config, seg, dt.date(2026, 5, 1))
    assert (cut.eval_as_of, cut.train_as_of) == (dt.date(2026, 4, 1), dt.date(2026, 3, 2))
    assert cut.eval_window_complete
    overlapping = JobConfig(training={"train_as_of": "2026-03-20", "eval_as_of": "2026-04-01"})
    with pytest.raises(UserError, match="not be out of time"):
        resolve_cutoffs(overlapping, seg, dt.date(2026, 5, 1))


def test_hash_split_is_stable_and_uniform():
    ids = pa.array([f"persona-{i}" for i in range(20000)])
    u = hash_uniform(ids, 7)
    assert np.array_equal(u, hash_uniform(ids, 7)) and not np.array_equal(u, hash_uniform(ids, 8))
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01 and abs((u < 0.2).mean() - 0.2) < 0.01


def test_train_writes_models_reports_and_skips_thin_segments(ray_cluster, tmp_path):
    segments = [
        SegmentConfig(name="buyers", kind="ecommerce_buyers"),
        SegmentConfig(name="fashion_lovers", kind="category_lovers", category="fashion"),
        SegmentConfig(name="ghost_brand", kind="high_interest", brand="NoSuchBrand"),
    ]
    config = small_config(tmp_path, segments)
    run_dir = str(tmp_path / "runs" / "r1")
    write_events(run_dir, config, make_events())
    results = {m["segment"]: m for m in train(config, run_dir)}

    ghost = results["ghost_brand"]
    assert ghost["status"] == "skipped" and "0 positives" in ghost["reason"]
    models = tmp_path / "runs" / "r1" / "models"
    card = json.loads((models / "ghost_brand" / "model_card.json").read_text())
    assert card["status"] == "skipped" and card["reason"] == ghost["reason"]
    assert not (models / "ghost_brand" / "model.json").exists()

    for name in ("buyers", "fashion_lovers"):
        m = results[name]
        folder = models / name
        assert m["status"] == "trained", m.get("reason")
        for file in ("model.json", "metrics.json", "importance.json", "report.html", "model_card.json"):
            assert (folder / file).exists(), file
        assert (folder / "model_card.json").stat().st_mtime_ns >= max(
            (folder / f).stat().st_mtime_ns for f in ("model.json", "metrics.json", "report.html"))
        card = json.loads((folder / "model_card.json").read_text())
        for key in ("segment", "kind", "status", "reason", "model_version", "feature_names", "feature_types",
                    "config_hash", "train_as_of", "eval_as_of", "horizon_days", "created_at"):
            assert key in card, key
        assert card["feature_names"] == STAND_IN and card["feature_categories"] == CATEGORIES
        import hashlib

        assert card["model_version"] == hashlib.sha256((folder / "model.json").read_bytes()).hexdigest()[:12]
        assert (card["train_as_of"], card["eval_as_of"]) < (card["eval_as_of"], "9999")
        # the planted behaviour is found out of time, and the honest checks are quiet
        assert m["model"]["roc_auc"] > 0.7, m["model"]["roc_auc"]
        assert m["rfm_baseline"]["roc_auc"] is not None
        assert not m["shuffled_label"]["alarm"], m["shuffled_label"]
        assert len(m["shuffled_label"]["runs"]) == 3
        assert m["leakage"]["flagged"] == []
        sizes = m["sizes"]
        assert sizes["train_rows"] > 0 and sizes["valid_rows"] > 0 and sizes["eval_rows"] > 0
        assert set(m["model"]["lift"]) == {"1%", "5%", "10%", "20%"}
        assert m["model"]["reliability"] and m["model"]["brier"] is not None
        assert m["training"]["calibration"]["method"].startswith("base margin shift fitted on the validation")
        assert m["importance"][0]["feature"] in STAND_IN

    buyers = results["buyers"]
    # carts in the last 7 days are the planted signal RFM does not have
    assert buyers["model"]["roc_auc"] > buyers["rfm_baseline"]["roc_auc"]
    assert "carts_7d" in [i["feature"] for i in buyers["importance"][:3]]
    # calibrated probabilities: the mean prediction is near the base rate
    assert abs(buyers["model"]["mean_predicted"] - buyers["model"]["base_rate"]) < 0.08
    # lovers are trained on past fashion buyers only
    lovers = results["fashion_lovers"]
    assert lovers["sizes"]["eval_rows"] < buyers["sizes"]["eval_rows"]

    # the saved model scores a feature matrix by name
    import xgboost

    booster = xgboost.Booster()
    booster.load_model(str(models / "buyers" / "model.json"))
    assert booster.feature_names == STAND_IN
    assert booster.inplace_predict(np.zeros((3, len(STAND_IN)), np.float32)).shape == (3,)

    from jobs.train import write_run_report

    page = (models / "report.html")
    write_run_report(config, run_dir)
    html = page.read_text()
    assert all(name in html for name in ("buyers", "fashion_lovers", "ghost_brand")) and "<svg" in html
    assert not list((models / "_ray_train").glob("*/checkpoint_*"))  # checkpoints removed after success

    # unchanged inputs and config: the rerun reuses the models
    again = train(config, run_dir, segments[:1])
    assert again[0]["reused"] and json.loads((models / "buyers" / "model_card.json").read_text())["model_version"] == card_version(models)


def card_version(models):
    return json.loads((models / "buyers" / "model_card.json").read_text())["model_version"]


def test_leaky_feature_raises_the_alarm_with_two_workers(ray_cluster, tmp_path):
    config = small_config(tmp_path, [SegmentConfig(name="buyers", kind="ecommerce_buyers")], num_workers=2,
                          shuffled_label_runs=1, num_boost_round=20)
    run_dir = str(tmp_path / "runs" / "leak")
    write_events(run_dir, config, make_events(personas=900, seed=5))
    (m,) = train(config, run_dir, leak=True)
    assert m["status"] == "trained" and m["training"]["num_workers"] == 2
    assert [f["feature"] for f in m["leakage"]["flagged"]] == ["noise"]
    assert any(a.startswith("leakage") for a in m["alarms"])
    # a model with a leak looks too good to be true, which is the point of the alarm
    assert m["model"]["roc_auc"] > 0.95


def test_prior_correction_keeps_ranking_and_restores_the_base_rate():
    import xgboost

    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 3)).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=4000) > 1.8).astype(np.float32)
    spw = float((1 - y).sum() / y.sum())
    booster = xgboost.train({"objective": "binary:logistic", "scale_pos_weight": spw, "max_depth": 2},
                            xgboost.DMatrix(X, label=y), 30)
    raw = booster.save_raw("json")
    corrected, ok = prior_corrected(bytes(raw), spw)
    assert ok
    fixed = xgboost.Booster()
    fixed.load_model(bytearray(corrected))
    before, after = booster.inplace_predict(X), fixed.inplace_predict(X)
    assert np.array_equal(np.argsort(before, kind="stable"), np.argsort(after, kind="stable"))
    assert before.mean() > 2 * y.mean() and abs(after.mean() - y.mean()) < 0.03


def test_intercept_calibration_matches_the_validation_rate():
    import xgboost

    rng = np.random.default_rng(4)
    margins = rng.normal(size=5000)
    y = (rng.random(5000) < 0.03).astype(float)
    shift = fit_intercept(margins, y)
    assert np.mean(1 / (1 + np.exp(-(margins + shift)))) == pytest.approx(y.mean(), abs=1e-6)
    X = rng.normal(size=(3000, 3)).astype(np.float32)
    yy = (X[:, 0] + rng.normal(size=3000) > 2.2).astype(np.float32)
    spw = float((1 - yy).sum() / yy.sum())
    booster = xgboost.train({"objective": "binary:logistic", "scale_pos_weight": spw, "max_depth": 2, "eta": 0.1},
                            xgboost.DMatrix(X, label=yy), 10)  # far from converged: -log(w) would be off
    raw = bytes(booster.save_raw("json"))
    model, info = calibrated(raw, booster.inplace_predict(X, predict_type="margin"), yy, spw)
    fixed = xgboost.Booster()
    fixed.load_model(bytearray(model))
    assert fixed.inplace_predict(X).mean() == pytest.approx(yy.mean(), abs=1e-4)
    assert info["method"].startswith("base margin shift")
    _, fallback = calibrated(raw, np.zeros(10), np.zeros(10), spw)
    assert fallback["method"].startswith("prior correction")


def test_run_train_reports_user_errors(tmp_path):
    config = JobConfig(root=str(tmp_path))
    with pytest.raises(UserError, match="not in the config's segments"):
        run_train(config, str(tmp_path / "runs" / "x"), segment="nope")
    with pytest.raises(UserError, match="has not been published"):
        run_train(config, str(tmp_path / "runs" / "x"))


def test_train_on_s3_run_folder(ray_cluster, storage, s3_bucket, tmp_path):
    segment = SegmentConfig(name="buyers", kind="ecommerce_buyers")
    config = small_config(tmp_path, [segment], shuffled_label_runs=1, num_boost_round=12, report_every=5)
    config = config.model_copy(update={"storage": storage})
    run_dir = f"{s3_bucket}/runs/r1"
    write_events(run_dir, config, make_events(personas=700, seed=3))
    (m,) = train(config, run_dir)
    assert m["status"] == "trained"
    folder = f"{run_dir}/models/buyers"
    for file in ("model.json", "metrics.json", "importance.json", "report.html", "model_card.json"):
        assert io.exists(f"{folder}/{file}", storage), file
    card = io.read_json(f"{folder}/model_card.json", storage)
    assert card["status"] == "trained" and card["model_version"]
    assert io.list_files(f"{run_dir}/models/_ray_train", storage) == []  # Ray Train checkpoints cleaned up


def test_openmp_threads_lifts_rays_one_thread_limit_in_fractional_cpu_workers(ray_cluster):
    """Ray sets OMP_NUM_THREADS=1 in a 0.5-CPU worker and XGBoost caps nthread at OpenMP's maximum:
    without `openmp_threads` a Train worker asked for 2 threads trains on 1."""

    def openmp_limits() -> tuple[list[int], list[int]]:
        import xgboost  # noqa: F401 - loads the OpenMP runtime XGBoost uses
        from threadpoolctl import threadpool_info

        from jobs.raykit.session import openmp_threads

        def limits() -> list[int]:
            return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "openmp"]

        before = limits()
        with openmp_threads(2):
            inside = limits()
        return before, inside

    before, inside = ray_cluster.get(ray_cluster.remote(num_cpus=0.5)(openmp_limits).remote())
    assert before and set(before) == {1}, "Ray's own limit in a fractional-CPU worker"
    assert set(inside) == {2}
