"""The real stages under faults: a run killed with SIGKILL resumes to the same outputs, a Ray worker killed
mid-stage changes nothing, and `segments run --run-date` names a backfill run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.config import JobConfig, StorageConfig, load_config
from jobs.run.pipeline import run_pipeline
from jobs.stages import pipeline
from jobs.storage import MARKER, read_arrow

REPO = Path(__file__).resolve().parents[2]
VOLATILE = {"created_at", "write_id", "written_at", "generated_at", "published_at", "seconds"}
STAGE_NAMES = list(JobConfig().stages)


def _rows(table: pa.Table) -> list[str]:
    keep = [c for c in table.column_names if c not in VOLATILE]
    return sorted(json.dumps(row, sort_keys=True, default=str) for row in table.select(keep).to_pylist())


def _strip(value):
    if isinstance(value, dict):
        return {
            k: _strip(v) for k, v in value.items() if k not in VOLATILE and k != "inputs" and not k.endswith("write_id")
        }  # inputs: write ids
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def run_contents(root: Path, run_id: str) -> dict[str, object]:
    """Every published table of a run (rows, order-free), model cards, the plan and exports, minus ids/times."""
    storage = StorageConfig()
    contents: dict[str, object] = {}
    run = root / "runs" / run_id
    for marker in sorted(run.rglob(MARKER)):
        table = marker.parent
        if any(table.rglob("*.parquet")):
            contents[str(table.relative_to(run))] = _rows(read_arrow(str(table), storage))
    for card in sorted(run.rglob("model_card.json")):
        contents[card.parent.name + "/model_card.json"] = _strip(json.loads(card.read_text()))
    if (run / "plan.json").exists():
        contents["plan.json"] = json.loads((run / "plan.json").read_text())
    exports = root / "exports"
    for manifest in sorted(exports.rglob("manifest.json")) if exports.exists() else []:
        folder = manifest.parent
        parts = [pq.read_table(p) for p in sorted(folder.glob("*.parquet"))]
        contents[str(folder.relative_to(root))] = _rows(pa.concat_tables(parts)) if parts else []
        contents[str(manifest.relative_to(root))] = _strip(
            {k: v for k, v in json.loads(manifest.read_text()).items() if k not in {"parts", "run_id"}}
        )
    return contents


@pytest.fixture(scope="module")
def reference(small_run):
    """The session's small run (every stage, uninterrupted, on the test session's Ray) and its contents."""
    return {**small_run, "contents": run_contents(small_run["root"], small_run["run_id"])}


@pytest.fixture()
def cli_env():
    """Environment for `segments run` subprocesses: their own local Ray, never the test session's nor a
    `ray start` cluster (RAY_TMPDIR, short because Ray's sockets live under it)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "SEGMENTS_PROGRESS": "0"}
    env.pop("RAY_ADDRESS", None)
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rp-", dir="/tmp")
    yield env
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def _kill_tree(pids: set[int]) -> None:
    import psutil

    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


@pytest.mark.slow
def test_run_killed_with_sigkill_resumes_to_the_same_outputs(reference, cli_env, tmp_path):
    import psutil
    import yaml

    base = tmp_path
    config_file = base / "resume.yaml"
    config_file.write_text(yaml.safe_dump(reference["job"](base / "resumed")))
    run = base / "resumed" / "runs" / "r"
    command = [sys.executable, "-m", "jobs", "run", "--config", str(config_file)]
    log = open(base / "killed.log", "w")
    proc = subprocess.Popen(command, cwd=REPO, env=cli_env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while not (run / "_stages" / "resolve.json").exists():
        assert proc.poll() is None, (base / "killed.log").read_text()[-3000:]
        assert time.time() < deadline, "the first stage did not finish in time"
        time.sleep(0.2)
    time.sleep(1.0)  # into the next stage
    assert proc.poll() is None, "the run ended before it could be killed"
    family = {proc.pid} | {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _kill_tree(family - {proc.pid})  # its local Ray, had it outlived the driver
    log.close()
    assert not (run / "_stages" / f"{STAGE_NAMES[-1]}.json").exists()

    # the resume: a new process (this one) runs the same job over what the killed run left, on the session's
    # Ray, whose workers are warm (a second `segments run` process would start and stop a Ray of its own)
    summary = run_pipeline(load_config(None, reference["job"](base / "resumed")), pipeline())
    assert summary["status"] == "succeeded", summary
    assert summary["stages"]["resolve"]["status"] == "skipped"
    assert summary["stages"][STAGE_NAMES[-1]]["status"] == "ran"
    resumed = run_contents(base / "resumed", "r")
    assert resumed.keys() == reference["contents"].keys()
    for key, rows in reference["contents"].items():
        assert resumed[key] == rows, f"{key} differs from the uninterrupted run"


@pytest.mark.slow
def test_stage_survives_a_killed_ray_worker(reference, ray_cluster, tmp_path):
    import psutil

    raylets = [p for p in psutil.Process().children(recursive=True) if p.name() == "raylet"]
    assert raylets, "the test session's Ray has no raylet under this process"

    def busy_workers() -> dict[int, str]:
        busy = {}
        for worker in raylets[0].children():
            try:
                title = (worker.cmdline() or [""])[0]
            except psutil.Error:
                continue
            if title.startswith("ray::") and not title.startswith("ray::IDLE"):
                busy[worker.pid] = title
        return busy

    # actors alive before the stage (Ray Data's stats actor, an earlier stage's leftovers) are not its work
    before = busy_workers()
    internal = ("Actor", "Coordinator", "Requester", "Agent", "Manager", "Controller")
    killed: list[str] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set() and not killed:
            for pid, title in busy_workers().items():
                if pid not in before and not any(w in title for w in internal):
                    try:
                        psutil.Process(pid).kill()
                    except psutil.Error:
                        continue
                    killed.append(title)
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    root = tmp_path / "worker-killed"
    try:
        summary = run_pipeline(load_config(None, reference["job"](root, stages=["resolve"])), pipeline())
    finally:
        stop.set()
        thread.join(5)
    assert killed, "no busy Ray worker was seen to kill"
    assert summary["stages"]["resolve"]["status"] == "ran"
    contents = run_contents(root, "r")
    for table in ("events_resolved", "personas", "identity_map", "quarantine"):
        assert contents[table] == reference["contents"][table], (
            f"{table} differs after a worker was killed ({killed[0]})"
        )


def test_cli_run_date_flag_names_a_backfill_run(small_sample, ray_cluster, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from jobs.cli import app

    config_file = tmp_path / "job.yaml"
    job = small_sample["job"](tmp_path / "backfill")
    job.pop("run_id")
    config_file.write_text(yaml.safe_dump({**job, "stages": ["resolve"]}))
    result = CliRunner().invoke(app, ["run", "--config", str(config_file), "--run-date", "2026-03-18"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["run_id"] == "2026-03-18" and summary["run_date"] == "2026-03-18"
    assert (tmp_path / "backfill" / "runs" / "2026-03-18" / "_stages" / "resolve.json").exists()

    bad = CliRunner().invoke(app, ["run", "--config", str(config_file), "--run-date", "18/03/2026"])
    assert bad.exit_code == 2 and "--run-date" in bad.output


def test_cli_stage_commands_share_the_runner_and_bad_input_is_one_paragraph(small_sample, ray_cluster, tmp_path):
    from typer.testing import CliRunner

    from jobs.cli import app

    run = tmp_path / "runs" / "one"
    resolved = CliRunner().invoke(app, ["resolve", "--events", str(small_sample["events"]), "--out", str(run)])
    assert resolved.exit_code == 0, resolved.output
    assert json.loads(resolved.stdout)["stages"]["resolve"]["status"] == "ran"
    assert (run / "_stages" / "resolve.json").exists(), "a stage command leaves the same marker as `segments run`"

    missing = CliRunner().invoke(app, ["score", "--run", str(tmp_path / "runs" / "nothing")])
    assert missing.exit_code == 2, missing.output
    assert "Traceback" not in missing.output and "events_resolved" in missing.output

    nowhere = CliRunner().invoke(app, ["resolve", "--events", str(tmp_path / "no-such"), "--out", str(run)])
    assert nowhere.exit_code == 2 and "does not exist" in nowhere.output

    shown = CliRunner().invoke(app, ["config", "show"])
    assert shown.exit_code == 0 and "num_partitions: 8  # hash partitions" in shown.stdout


def _recipe_email_key(raw: str) -> str | None:
    """The manifest's email recipe (v2), written from its text alone: email-validator, no project code."""
    import hashlib
    import unicodedata

    from email_validator import EmailNotValidError, validate_email

    text = "".join(unicodedata.normalize("NFKC", raw).split()).lower()
    try:
        address = validate_email(text, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return None
    local, domain = address.local_part, address.domain
    if not any(ch.isalnum() for ch in local):
        return None
    local = local.split("+", 1)[0]
    domain = "gmail.com" if domain == "googlemail.com" else domain
    local = local.replace(".", "") if domain == "gmail.com" else local
    return hashlib.sha256(f"{local}@{domain}".encode()).hexdigest() if local else None


def _recipe_phone_key(raw: str, country: str | None) -> str | None:
    """The manifest's phone recipe (v1), written from its text alone: libphonenumber, no project code."""
    import hashlib
    import re

    import phonenumbers

    text = raw.strip()
    digits = re.sub(r"\D+", "", text)
    if not digits:
        return None
    if text.startswith("00"):
        text = "+" + text[2:]
    elif not text.startswith("+") and not country and len(digits) > 10:
        text = "+" + digits
    try:
        number = phonenumbers.parse(text, (country or "").upper() or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return hashlib.sha256(e164.encode()).hexdigest()


@pytest.mark.slow  # reads the exports of the session's whole small run
def test_every_export_key_is_rederived_from_the_manifest_recipe(reference):
    """A partner following the manifest's key recipe reproduces 100% of the contact keys of its export."""
    events = pa.concat_tables(
        [
            pq.read_table(p, columns=["partner_id", "email", "phone", "country"])
            for p in sorted(Path(reference["events"]).rglob("*.parquet"))
        ]
    ).to_pylist()
    derived: dict[str, set[str]] = {}
    for row in events:
        keys = derived.setdefault(row["partner_id"], set())
        if row["email"]:
            keys.add(_recipe_email_key(row["email"]))
        if row["phone"]:
            keys.add(_recipe_phone_key(row["phone"], row["country"]))
    checked = 0
    for manifest in sorted((reference["root"] / "exports").rglob("manifest.json")):
        recipe = json.loads(manifest.read_text())["key_recipe"]
        assert recipe["version"] == "v2" and recipe["email_sha256"] and recipe["phone_sha256"]
        partner = json.loads(manifest.read_text())["partner_id"]
        for part in sorted(manifest.parent.glob("*.parquet")):
            rows = pq.read_table(part).to_pylist()
            contact = [r["key"] for r in rows if r["key_type"] in ("email_sha256", "phone_sha256")]
            missing = [key for key in contact if key not in derived[partner]]
            assert not missing, f"{len(missing)} of {len(contact)} keys of {part} are not reproducible"
            checked += len(contact)
    assert checked > 50, "the export holds contact keys to check"

    from typer.testing import CliRunner

    from jobs.cli import app

    shown = CliRunner().invoke(
        app,
        ["exports", "keys", "--email", " Ann.Lee+promo@GoogleMail.com", "--phone", "0888 123 456", "--country", "BG"],
    )
    assert shown.exit_code == 0, shown.output
    printed = json.loads(shown.stdout)
    assert printed["email_sha256"] == _recipe_email_key(" Ann.Lee+promo@GoogleMail.com")
    assert printed["phone_sha256"] == _recipe_phone_key("0888 123 456", "BG")
