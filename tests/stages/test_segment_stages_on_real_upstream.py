"""labels -> train -> score -> report after the REAL upstream stages (resolve, plan, features) on a generated
sample (the session's shared small run, tests/conftest.py): the tables they hand over fit together (cut-offs,
partitions, feature columns, versions)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from features.catalog import feature_names
from jobs.config import StorageConfig
from jobs.model.baselines import default_rfm_features
from jobs.run.layout import EVENTS_RESOLVED, FEATURES, LABELS, MODELS, SCORES, RunLayout
from jobs.run.plan import RunPlan
from jobs.segments.definitions import label_column, labels_table
from jobs.storage import TableIn, read_json

STAGES = ["resolve", "plan", "features", "labels", "train", "score", "report"]


@pytest.mark.slow
def test_segment_stages_read_what_the_real_upstream_stages_publish(small_run):
    storage = StorageConfig()
    config = small_run["config"]
    layout = RunLayout.for_run(str(small_run["root"]), small_run["run_id"])
    assert all(small_run["summary"]["stages"][name]["status"] == "ran" for name in STAGES), small_run["summary"]
    plan = RunPlan.from_json(read_json(layout.plan, storage))
    features, labels, models, scores = (
        TableIn(name, layout.table(name), storage) for name in (FEATURES, LABELS, MODELS, SCORES)
    )

    # labels: a partition at every cut-off of every segment, each a snapshot the features table also has
    cutoffs = {d for c in plan.cutoffs.values() for d in (c.train_as_of, c.eval_as_of, c.refit_as_of)}
    assert set(labels.marker["cutoffs"]) == {d.isoformat() for d in cutoffs}
    assert {f"as_of={d.isoformat()}" for d in cutoffs} <= set(features.marker["partitions"])
    resolved = TableIn(EVENTS_RESOLVED, layout.table(EVENTS_RESOLVED), storage).arrow()
    buyers = next(s for s in config.segments if s.name == "ecommerce_buyers")
    for as_of in cutoffs:
        part = labels.arrow(partition={"as_of": as_of})
        positives = sorted(
            p
            for p, y in zip(
                part.column("persona_id").to_pylist(), part.column(label_column("ecommerce_buyers")).to_pylist()
            )
            if y
        )
        assert positives == sorted(labels_table(resolved, buyers, as_of).column("persona_id").to_pylist())
        assert positives, f"the sample has buyers after {as_of}"

    # train: the plan's cut-offs, the catalogue's columns for the plan's categories, the tables' versions
    card = json.loads(models.file(RunLayout.model_file("ecommerce_buyers", "model_card.json")))
    cut = plan.for_segment("ecommerce_buyers")
    assert card["status"] == "trained", card.get("reason")
    assert (card["train_as_of"], card["eval_as_of"]) == (cut.train_as_of.isoformat(), cut.eval_as_of.isoformat())
    names = feature_names(config.features.model_copy(update={"categories": list(plan.categories)}))
    # the card names the exported model's columns: the catalogue's for the look-alike, the RFM columns otherwise
    chosen = card["champion"]["chosen"]
    assert card["feature_names"] == (names if chosen == "xgboost" else default_rfm_features(names))
    assert card["feature_categories"] == list(plan.categories)
    table_columns = features.schema({"as_of": plan.as_of}).names
    assert [c for c in table_columns if c in set(names)] == names, "every model column, in the table's order"
    assert card["inputs"] == {"features": features.version, "labels": labels.version}
    assert models.marker["segments"]["ghost_brand"]["status"] == "skipped"

    # score: everyone in the features partition at the plan's as_of, with the bundle's model
    assert scores.marker["as_of"] == plan.as_of.isoformat() == features.marker["snapshots"][-1]
    assert scores.marker["segments"] == {"ecommerce_buyers": card["model_version"]}
    scored = scores.arrow(columns=["persona_id"]).column("persona_id").to_pylist()
    personas = features.arrow(columns=["persona_id"], partition={"as_of": plan.as_of}).column("persona_id").to_pylist()
    assert sorted(scored) == sorted(personas)

    # the run's report: every segment on one page, with charts, who was scored and who is a member
    page = Path(layout.report).read_text()
    assert "ghost_brand" in page and "<svg" in page
    row = re.search(r'<tr><td><a href="#ecommerce_buyers">ecommerce_buyers</a></td>.*?</tr>', page).group(0)
    members = sum(scores.arrow(columns=["member"]).column("member").to_pylist())
    assert f"<td>{len(scored):,}</td><td>{members:,}</td>" in row and "<th>scored</th>" in page
