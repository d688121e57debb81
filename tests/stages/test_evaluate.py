"""The evaluate stage (evaluate-personas) through the runner: pairwise metrics of a resolved run."""

import json

import pytest
from resolve_runs import DAYS, PARTNERS, PERSONS, run_stages, write_files

from jobs.config import JobConfig
from jobs.errors import UserError
from jobs.run.layout import RunLayout
from jobs.storage import read_json
from jobs.synthetic import generate_events


def test_evaluate_personas_after_resolve(ray_cluster, tmp_path):
    sample = generate_events(PERSONS, PARTNERS, DAYS, seed=11)
    write_files(sample, tmp_path / "events")
    config = JobConfig(events=str(tmp_path / "events"), ray={"num_partitions": 3})
    run_dir = str(tmp_path / "runs" / "r1")
    stages = run_stages(config, run_dir, names=("resolve", "evaluate"))
    metrics = stages["evaluate"]["result"]
    # a tiny sample: the generator's 4 public devices serve 250 people here (1 per 400 at scale), anonymous
    # and as busy as a personal device, so no rule can see them; at 20k people precision is >= 0.98
    assert metrics["pairwise_precision"] >= 0.85 and metrics["pairwise_recall"] >= 0.85
    assert metrics["oracle"]["pairwise_precision"] >= 0.99
    assert 0 < metrics["person_completeness"] <= 1 and 0 < metrics["persona_purity"] <= 1
    assert metrics["rows"] == metrics["rows_in"] == stages["resolve"]["rows_out"]
    assert metrics["events"] == sample.num_rows - stages["resolve"]["quarantined"]
    assert metrics["personas"] == stages["resolve"]["result"]["personas"]
    assert metrics["identifiers_audited"] == stages["resolve"]["result"]["identifiers_audited"]
    assert metrics["oracle"]["identifiers_audited"] > 0 and metrics["truth_column"] == "true_person_id"
    written = read_json(RunLayout(run_dir).persona_evaluation, config.storage)
    assert written == json.loads(json.dumps({k: v for k, v in metrics.items() if k != "rows_in"}))

    # another truth column that the events lack: a user error naming it
    other = JobConfig(events=config.events, ray={"num_partitions": 3}, evaluation={"truth_column": "household_id"})
    with pytest.raises(UserError, match="no ground-truth column 'household_id'"):
        run_stages(other, run_dir, names=("evaluate",))
