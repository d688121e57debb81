"""The console contract: a user's mistake is one paragraph and exit 2, an unreachable store exit 3, never a
traceback on the console (the command's log file keeps it)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from jobs.cli import app


def test_an_unreachable_object_store_is_exit_3_in_one_paragraph(tmp_path, free_port):
    config = tmp_path / "job.yaml"
    config.write_text(
        f"storage:\n  endpoint_url: http://127.0.0.1:{free_port()}\n  retries: 1\n"
        "  connect_timeout_s: 1\n  read_timeout_s: 1\n"
    )
    result = CliRunner().invoke(
        app, ["resolve", "--events", "s3://bucket/events/", "--out", str(tmp_path / "r"), "--config", str(config)]
    )
    assert result.exit_code == 3, result.output
    assert "did not answer after retries" in result.output and "127.0.0.1" in result.output
    assert "Traceback" not in result.output


def test_an_unusable_output_path_is_exit_2_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = CliRunner().invoke(app, ["resolve", "--events", str(tmp_path), "--out", str(blocker / "run")])
    assert result.exit_code == 2, result.output
    assert str(blocker) in result.output and "Traceback" not in result.output


def test_config_show_describes_every_field(tmp_path):
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 0
    assert "read_timeout_s: 60.0  # seconds to wait for a response" in result.stdout
    config = tmp_path / "job.yaml"
    config.write_text("ray:\n  num_partitions: 32\n")
    shown = CliRunner().invoke(app, ["config", "show", "--config", str(config)])
    assert (
        "num_partitions: 32  # hash partitions for shuffles (identity, features); about 2-4 per worker CPU; "
        "default: 8" in shown.stdout
    )


@pytest.mark.parametrize("out", ["/proc/x", "/etc/hostname/sub"])
def test_an_unwritable_output_is_refused_before_any_input_is_read(tmp_path, out):
    """The events path does not exist: the error names the output, so nothing of the input was looked at."""
    missing_events = tmp_path / "no-such-events"
    result = CliRunner().invoke(app, ["resolve", "--events", str(missing_events), "--out", out])
    assert result.exit_code == 2, result.output
    assert f"cannot write to {out}" in result.output and str(missing_events) not in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    generated = CliRunner().invoke(app, ["generate", "--out", out, "--persons", "5"])
    assert generated.exit_code == 2 and f"cannot write to {out}" in generated.output


def test_a_missing_s3_bucket_is_refused_before_any_input_is_read(tmp_path, storage):
    config = tmp_path / "job.yaml"
    config.write_text(f"storage:\n  endpoint_url: {storage.endpoint_url}\n  region: us-east-1\n  retries: 1\n")
    result = CliRunner().invoke(
        app,
        ["resolve", "--events", str(tmp_path / "none"), "--out", "s3://no-such-bucket-h2/runs/r1"]
        + ["--config", str(config)],
    )
    assert result.exit_code == 2, result.output
    assert "no-such-bucket-h2" in result.output and str(tmp_path / "none") not in result.output


def test_a_failed_run_keeps_its_log_in_the_run_folder_and_the_console_names_it(tmp_path):
    """train before resolve: one paragraph naming RUN/logs/<timestamp>.log, which holds the traceback."""
    run = tmp_path / "root" / "runs" / "r1"
    result = CliRunner().invoke(app, ["train", "--run", str(run)])
    assert result.exit_code == 2, result.output
    logs = sorted((run / "logs").glob("*.log"))
    assert len(logs) == 1 and re.fullmatch(r"\d{8}T\d{6}Z\.log", logs[0].name)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"(log: {logs[0]})" in errors[0] and "has not produced yet" in errors[0]
    assert "Traceback" not in result.output
    kept = logs[0].read_text()
    assert "Traceback (most recent call last)" in kept and "UserError" in kept


@pytest.mark.parametrize("command", [["train"], ["score"], ["export"], ["evaluate-personas"]])
def test_stage_commands_take_the_run_folder_from_the_config(tmp_path, command):
    """No --run: the config's root and run_id (or run_date) name the run folder; neither: exit 2 saying so."""
    named = tmp_path / "named.yaml"
    named.write_text(f"root: {tmp_path / 'root'}\nrun_id: nightly-7\n")
    result = CliRunner().invoke(app, [*command, "--config", str(named)])
    assert result.exit_code == 2, result.output
    assert "of run nightly-7" in result.output and "has not produced yet" in result.output
    assert (tmp_path / "root" / "runs" / "nightly-7" / "logs").is_dir(), "the run's log went to the named folder"

    dated = tmp_path / "dated.yaml"
    dated.write_text(f"root: {tmp_path / 'root'}\nrun_date: 2026-07-01\n")
    result = CliRunner().invoke(app, [*command, "--config", str(dated)])
    assert result.exit_code == 2 and "of run 2026-07-01" in result.output

    unnamed = tmp_path / "unnamed.yaml"
    unnamed.write_text(f"root: {tmp_path / 'root'}\n")
    result = CliRunner().invoke(app, [*command, "--config", str(unnamed)])
    assert result.exit_code == 2 and "needs --run ROOT/runs/RUN_ID, or a --config that names the run" in result.output


def test_verbose_shows_the_traceback_on_the_console(tmp_path):
    quiet = CliRunner().invoke(app, ["train", "--run", str(tmp_path / "runs" / "r")])
    loud = CliRunner().invoke(app, ["--verbose", "train", "--run", str(tmp_path / "runs" / "r")])
    assert quiet.exit_code == loud.exit_code == 2
    assert "Traceback" not in quiet.output and "Traceback (most recent call last)" in loud.output


def test_a_partner_key_is_not_made_where_it_cannot_be_stored():
    result = CliRunner().invoke(app, ["serve", "keys", "create", "--partner", "p1", "--root", "/etc/hostname/x"])
    assert result.exit_code == 2, result.output
    assert "cannot write to /etc/hostname/x/online/keys" in result.output and "Traceback" not in result.output


def test_native_stderr_goes_to_the_log_and_python_stderr_to_the_console(tmp_path):
    """What native code writes to descriptor 2 (Ray's C++ warnings) lands in the command's log file; the
    console lines (Python's sys.stderr) stay on the terminal; both are as before once the command ends."""
    log_file = tmp_path / "command.log"
    script = (
        "import os, sys\n"
        "from jobs import cli\n"
        "with cli._native_stderr_to(sys.argv[1]):\n"
        "    os.write(2, b'native inside\\n')\n"
        "    print('console inside', file=sys.stderr)\n"
        "print('console after', file=sys.stderr, flush=True)\n"
        "os.write(2, b'native after\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(log_file)], capture_output=True, text=True, check=True)
    assert done.stderr.splitlines() == ["console inside", "console after", "native after"]
    assert log_file.read_text() == "native inside\n"


def test_s3_without_credentials_is_a_user_error_in_one_paragraph(tmp_path, free_port, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    config = tmp_path / "job.yaml"
    config.write_text(f"storage:\n  endpoint_url: http://127.0.0.1:{free_port()}\n  retries: 1\n")
    result = CliRunner().invoke(
        app, ["resolve", "--events", "s3://bucket/events/", "--out", str(tmp_path / "r"), "--config", str(config)]
    )
    assert result.exit_code == 2, result.output
    assert "S3 needs credentials" in result.output and "AWS_ACCESS_KEY_ID" in result.output
    assert "Traceback" not in result.output
