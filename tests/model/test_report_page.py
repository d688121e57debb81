"""The HTML quality page: self-contained, escaped, charts per trained segment, a line per skipped one."""

from __future__ import annotations

import re

import numpy as np

from jobs.model import quality
from jobs.model.report import render_page


def _metrics(name, status="trained"):
    rng = np.random.default_rng(2)
    y = (rng.random(500) < 0.2).astype(int)
    score = np.clip(0.2 + 0.3 * y + rng.normal(scale=0.15, size=500), 0, 1)
    base = {
        "segment": name,
        "kind": "ecommerce_buyers",
        "status": status,
        "train_as_of": "2026-03-01",
        "eval_as_of": "2026-04-01",
        "horizon_days": 30,
    }
    if status != "trained":
        return base | {
            "reason": "12 positives at the training cut-off (training.min_positives = 100)",
            "sizes": {"train_rows": 10},
            "alarms": [],
        }
    return base | {
        "model": quality.binary_metrics(y, score),
        "rfm_baseline": quality.binary_metrics(y, np.clip(score + rng.normal(scale=0.3, size=500), 0, 1)),
        "model_beats_rfm": True,
        "sizes": {
            "train_rows": 400,
            "train_positives": 80,
            "valid_rows": 100,
            "valid_positives": 20,
            "eval_rows": 500,
            "eval_positives": int(y.sum()),
        },
        "leakage": quality.leakage_check({"x": score}, y),
        "importance": quality.gain_importance({"orders_365d": 3.0, "carts_7d": 1.0}),
        "alarms": [],
    }


def test_page_is_self_contained_with_charts_per_segment():
    page = render_page("Run <r1>", [_metrics("buyers<&>"), _metrics("virgins", status="skipped")])
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
    assert "Run &lt;r1&gt;" in page and "buyers&lt;&amp;&gt;" in page and "buyers<&>" not in page
    assert page.count("<svg") == 4  # gain, lift, calibration, importance of the trained segment
    assert "Cumulative gain" in page and "Lift" in page and "Calibration" in page
    assert "skipped: 12 positives" in page
    # nothing loaded from elsewhere: the only URL is the SVG namespace
    urls = set(re.findall(r"https?://[^\"' )]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}
    assert "<script" not in page and "<link" not in page and "@import" not in page


def test_run_page_shows_who_was_scored_and_who_is_a_member():
    page = render_page(
        "Run r1",
        [_metrics("buyers"), _metrics("virgins", status="skipped")],
        scoring={"buyers": {"scored": 1234, "members": 123}},
    )
    assert "<th>scored</th><th>members</th>" in page
    row = re.search(r'<tr><td><a href="#buyers">buyers</a></td>.*?</tr>', page).group(0)
    assert "<td>1,234</td><td>123</td>" in row
    virgins = re.search(r'<tr><td><a href="#virgins">virgins</a></td>.*?</tr>', page).group(0)
    assert "<td>–</td><td>–</td>" in virgins
    assert "<th>scored</th>" not in render_page("Run r1", [_metrics("buyers")])


def test_a_feature_that_knows_the_future_is_named_as_such_not_as_a_high_auc():
    rng = np.random.default_rng(5)
    n = 20_000
    propensity = rng.normal(size=n)
    y, past_y = ((propensity + rng.normal(size=(2, n)) * 1.5) > 1.5).astype(np.int64)
    honest = {f"honest_{i}": propensity + rng.normal(scale=1.0 + i / 4, size=n) for i in range(6)}
    leakage = quality.leakage_check(honest | {"peeks": y + rng.normal(scale=1.2, size=n)}, y, past_y=past_y)
    kinds = {f["feature"]: f["kind"] for f in leakage["flagged"]}
    assert kinds == {"peeks": "future_over_past"}, leakage["flagged"]

    page = render_page("run", [_metrics("buyers") | {"leakage": leakage}])
    assert "predicts the label after the cut-off better than the one before" in page
    assert re.search(r"peeks \(AUC 0\.\d{3} after the cut-off vs 0\.\d{3} before, z [\d.]+\)", page)
    assert "single-feature AUC beyond" not in page
