import pytest

from jobs.config import load_config
from jobs.errors import UserError


def test_yaml_then_flags(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("root: /data\nray:\n  num_partitions: 4\ntraining:\n  num_workers: 2\n")
    config = load_config(path, {"ray.num_partitions": 16, "run_id": None})
    assert config.root == "/data" and config.ray.num_partitions == 16 and config.training.num_workers == 2


def test_scoring_settings_of_the_actor_pool_era_still_read(tmp_path):
    """Scoring left its actor pool for tasks: a config naming actors, cpus_per_actor, threads_per_actor keeps
    working, with the same meaning, under the new names."""
    path = tmp_path / "job.yaml"
    path.write_text("scoring:\n  actors: 8\n  cpus_per_actor: 1\n  threads_per_actor: 2\n")
    scoring = load_config(path).scoring
    assert (scoring.tasks, scoring.cpus_per_task, scoring.threads_per_task) == (8, 1.0, 2)


def test_invalid_field_is_named(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("ray:\n  num_partitions: -1\nsurprise: 1\n")
    with pytest.raises(UserError) as err:
        load_config(path)
    assert "ray.num_partitions" in str(err.value) and "surprise" in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)


def test_segment_names_unique():
    with pytest.raises(UserError, match="unique"):
        load_config(
            None, {"segments": [{"name": "a", "kind": "price_hunters"}, {"name": "a", "kind": "ecommerce_buyers"}]}
        )
