"""The console contract: a user's mistake is one paragraph and exit 2, an unreachable store exit 3, never a
traceback on the console (the command's log file keeps it)."""

from __future__ import annotations

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
        "num_partitions: 32  # hash partitions for shuffles (identity, features); scale with data; default: 8"
        in shown.stdout
    )
