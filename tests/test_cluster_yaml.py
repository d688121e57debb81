"""cluster.yaml against Ray's own cluster-config schema, plus what this project needs from it."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_valid_against_rays_schema(cluster):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cluster)))  # after Ray fills in the AWS defaults
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["cpu_worker"]["min_workers"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_node_types_s3_access_and_install(cluster):
    assert cluster["provider"]["type"] == "aws"
    types = cluster["available_node_types"]
    assert cluster["head_node_type"] in types
    workers = {name: t for name, t in types.items() if name != cluster["head_node_type"]}
    assert any(t.get("max_workers", 0) > t.get("min_workers", 0) for t in workers.values()), (
        "no autoscaling worker type"
    )
    gpu = [t for t in workers.values() if t["node_config"]["InstanceType"].startswith(("g", "p"))]
    assert gpu and all(t.get("min_workers", 0) == 0 for t in gpu), "the GPU type is optional: min_workers 0"
    for name, node_type in types.items():
        assert "instance-profile/" in node_type["node_config"]["IamInstanceProfile"]["Arn"], name
    setup = " ".join(cluster["setup_commands"])
    mounted = [remote for remote, local in cluster["file_mounts"].items() if local == "."]
    assert mounted and "pip install" in setup and mounted[0] in setup
    start = " ".join(cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"])
    assert start.count("--object-store-memory") == 2
    text = (REPO / "cluster.yaml").read_text()
    assert not re.search(r"(?i)aws_secret_access_key|aws_access_key_id", text)


def _manifests(name: str) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((REPO / "scripts" / name).read_text())}


def test_example_job_config_is_valid():
    from jobs.config import load_config

    config = load_config(REPO / "scripts" / "job.example.yaml")
    assert config.events.startswith("s3://") and config.root.startswith("s3://") and config.run_id is None


@pytest.mark.parametrize("name", ["kuberay-rayjob.yaml", "kuberay-raycronjob.yaml"])
def test_kuberay_manifests_run_the_pipeline_with_the_mounted_config(name, tmp_path):
    import ray

    from jobs.config import load_config

    docs = _manifests(name)
    assert docs["RayJob" if "RayJob" in docs else "RayCronJob"]["apiVersion"] == "ray.io/v1"
    spec = docs["RayJob"]["spec"] if "RayJob" in docs else docs["RayCronJob"]["spec"]["jobTemplate"]
    if "RayCronJob" in docs:
        assert len(docs["RayCronJob"]["spec"]["schedule"].split()) == 5
        assert '--run-id "$(date -u +%F)"' in spec["entrypoint"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    head = cluster["headGroupSpec"]["template"]["spec"]
    mount = head["containers"][0]["volumeMounts"][0]["mountPath"]
    assert spec["entrypoint"].startswith(f"python -m jobs run --config {mount}/job.yaml")
    assert head["volumes"][0]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    job_yaml = tmp_path / "job.yaml"
    job_yaml.write_text(docs["ConfigMap"]["data"]["job.yaml"])
    load_config(job_yaml)  # the shipped config validates
    account = docs["ServiceAccount"]["metadata"]["name"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    assert all(g["template"]["spec"]["serviceAccountName"] == account for g in groups)
    assert all(isinstance(v, str) for g in groups for v in g["rayStartParams"].values()), "rayStartParams are strings"
    gpu = [
        g
        for g in cluster["workerGroupSpecs"]
        if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
    ]
    assert gpu and all(g["minReplicas"] == 0 for g in gpu)


def test_cron_example_submits_with_wait():
    lines = [
        line for line in (REPO / "scripts" / "cron.example").read_text().splitlines() if line and line[0].isdigit()
    ]
    assert lines and all("submit --address" in line and "--config" in line and "--wait" in line for line in lines)
    assert all("%" not in line.replace("\\%", "") for line in lines), "a bare % ends a crontab command"
