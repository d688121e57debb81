"""The `segments` command line: each command declares its options and calls one function.

Config is resolved once (YAML file, then flags) in `jobs.config.load_config`. A stage command runs that
stage of the run folder through the same runner as `segments run` (`jobs.run.pipeline`), so markers,
resume and summary.json are the same whichever way a stage was started. A `UserError` (exit 2: fix the
input or config) or `InfraError` (exit 3: retry later) anywhere below becomes a one-paragraph message on
stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from jobs.config import JobConfig, describe_config, load_config
from jobs.errors import UserError, classify
from jobs.run.logs import LOG_FORMAT

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Cross-partner personas and look-alike smart segments on Ray."
)
features_app = typer.Typer(
    no_args_is_help=False, help="Feature table as of a cut-off date; `features list` shows the catalogue."
)
exports_app = typer.Typer(
    no_args_is_help=True, help="What partners pull: list exports, presigned URLs, bucket policies."
)
config_app = typer.Typer(no_args_is_help=True, help="The resolved job config.")
serve_app = typer.Typer(
    no_args_is_help=False, help="Profiles and live events on Ray Serve; `serve keys create` makes a partner API key."
)
serve_keys_app = typer.Typer(no_args_is_help=True, help="Partner API keys of the online API (only hashes are stored).")
app.add_typer(features_app, name="features")
app.add_typer(exports_app, name="exports")
app.add_typer(config_app, name="config")
app.add_typer(serve_app, name="serve")
serve_app.add_typer(serve_keys_app, name="keys")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML job config; flags override it")]
RunOpt = Annotated[
    str | None,
    typer.Option(
        "--run",
        help="run folder: ROOT/runs/RUN_ID (local or s3://); default: the --config's root and run_id (or run_date)",
    ),
]
AddressOpt = Annotated[
    str | None, typer.Option("--address", help="Ray cluster address (default: RAY_ADDRESS or local Ray)")
]
RunDateOpt = Annotated[
    dt.datetime | None,
    typer.Option(
        "--run-date",
        formats=["%Y-%m-%d"],
        help="schedule date YYYY-MM-DD (the run id when none is given, and the exports' RUN_DATE): for backfills",
    ),
]
DateOpt = Annotated[dt.datetime | None, typer.Option("--as-of", formats=["%Y-%m-%d"], help="cut-off date YYYY-MM-DD")]
ExportsRootOpt = Annotated[str | None, typer.Option("--root", help="exports ROOT (default: config export.root)")]
StrictOpt = Annotated[
    bool,
    typer.Option("--strict", help="a segment with no acceptable model fails the run, exit 2 (training.strict)"),
]
ReplaceOpt = Annotated[
    bool,
    typer.Option(
        "--replace", help="replace the run date's exports that another run id wrote (export.replace in the config)"
    ),
]


# The console shows our own loggers' lines (progress, warnings to act on, the summary); everything else, and
# every traceback, goes to the log files only, unless `segments --verbose`.
PROJECT_LOGGERS = ("jobs", "features", "segments")
CONSOLE_FORMAT = "%(asctime)s %(message)s"


@dataclass
class _Console:
    verbose: bool = False


_console = _Console()


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="the console shows every library's log lines, Ray workers' output and tracebacks"
        ),
    ] = False,
) -> None:
    """Cross-partner personas and look-alike smart segments on Ray."""
    _console.verbose = verbose


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record comes (an embedding caller may swap it, then close it).

    Quiet (the default): only the project's own records; a record logged with `extra={"console": False}` (a
    traceback kept for the log file) is never shown."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "console", True):
            return
        if not self.verbose and record.name.split(".", 1)[0] not in PROJECT_LOGGERS:
            return
        self.stream = sys.stderr
        super().emit(record)


class _ConsoleLine(logging.Formatter):
    """A console line: time and message (WARNING/ERROR named), without the traceback (the log file keeps it)."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.msg
        record.exc_info, record.exc_text = None, None
        if record.levelno >= logging.WARNING:
            record.msg = f"{record.levelname}: {record.msg}"
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.msg = saved


def _configure_logging(verbose: bool) -> str:
    """Console (see `_CurrentStderr`) and the command's log file (returned): every record, with tracebacks."""
    console = _CurrentStderr(verbose)
    line_format, date_format = (LOG_FORMAT, None) if verbose else (CONSOLE_FORMAT, "%H:%M:%S")
    console.setFormatter(_ConsoleLine(line_format, datefmt=date_format))
    logging.basicConfig(level=logging.INFO, handlers=[console], force=True)
    logging.captureWarnings(True)  # library deprecation warnings: the log file (py.warnings), not the console
    for noisy in ("botocore", "s3fs", "aiobotocore", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    folder = Path(tempfile.gettempdir()) / "segments-logs"
    folder.mkdir(exist_ok=True)
    path = folder / f"segments-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    return str(path)


@contextlib.contextmanager
def _native_stderr_to(path: str) -> Iterator[None]:
    """Lines native code writes straight to file descriptor 2 go to the command's log file: Ray's C++ core
    worker prints its max_restarts warning (ray-project/ray#53727) for every actor Ray Data or Ray Train creates,
    and Ray's own handlers write to the stream they saw at import. Python's `sys.stderr` keeps the terminal
    (a duplicate of it): the console lines, progress bars and the error paragraph. Quiet mode only, and only
    when `sys.stderr` is the process's own: an embedding caller that swapped it (a test's CliRunner) keeps
    what it set."""
    try:
        fd = sys.__stderr__.fileno() if sys.stderr is sys.__stderr__ and not _console.verbose else None
    except (AttributeError, OSError, ValueError):  # no real descriptor behind it
        fd = None
    if fd is None:
        yield
        return
    sys.stderr.flush()
    terminal = open(os.dup(fd), "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    with open(path, "ab") as log_file:
        os.dup2(log_file.fileno(), fd)
    sys.stderr = terminal
    try:
        yield
    finally:
        terminal.flush()
        os.dup2(terminal.fileno(), fd)
        sys.stderr = sys.__stderr__
        terminal.close()


def _invoke(fn: Callable[[], Any]) -> Any:
    """Call one function; user mistakes and infrastructure faults become one paragraph and their exit code
    (2: fix the input or config, 3: retry later); anything else one paragraph and exit 1. Tracebacks go to the
    log files only (the run's under RUN/logs/ once there is a run folder), and to the console with --verbose."""
    command_log = _configure_logging(_console.verbose)
    with _native_stderr_to(command_log):
        return _report(fn, command_log)


def _report(fn: Callable[[], Any], command_log: str) -> Any:
    """`fn`'s result on stdout (JSON unless a string), or its exception as one paragraph and an exit code."""
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - the console gets one paragraph, the log file the traceback
        logging.getLogger("segments").error("command failed", exc_info=True, extra={"console": False})
        if _console.verbose:
            traceback.print_exception(exc, file=sys.stderr)
        log_file = getattr(exc, "log_file", None) or command_log  # the run's own log once there is a run folder
        known = classify(exc)
        if known is None:
            typer.echo(f"error: unexpected {type(exc).__name__}: {str(exc)[:500]} (traceback in {log_file})", err=True)
            raise typer.Exit(code=1) from None
        typer.echo(f"error: {str(known).rstrip()} (log: {log_file})", err=True)
        raise typer.Exit(code=known.exit_code) from None
    if isinstance(result, str):
        typer.echo(result)
    elif result is not None:
        typer.echo(json.dumps(result, indent=2, default=str))
    return result


def _config(config_file: Path | None, **overrides: Any) -> JobConfig:
    return load_config(config_file, {**overrides, "logging.verbose": True if _console.verbose else None})


def _run_dir(config: JobConfig, run_dir: str | None, command: str) -> str:
    """`--run`, else the run folder the config names: `root/runs/run_id` (or `root/runs/run_date`)."""
    from jobs.run.layout import RunLayout

    if run_dir is not None:
        return run_dir
    named = config.run_id or (config.run_date.isoformat() if config.run_date else None)
    if named is None:
        raise UserError(
            f"`segments {command}` needs --run ROOT/runs/RUN_ID, or a --config that names the run (run_id, or "
            "run_date for a scheduled run) under its root."
        )
    return RunLayout.for_run(config.root, named).run_dir


def _stages(config: JobConfig, names: Sequence[str], run_dir: str | None) -> dict[str, Any]:
    """Run the named stages of the run folder `run_dir` (default: the config's; the plan comes along when
    they need it)."""
    from jobs.run.layout import RunLayout
    from jobs.run.pipeline import run_pipeline
    from jobs.stages import pipeline

    layout = RunLayout(_run_dir(config, run_dir, names[-1]))
    return run_pipeline(config, pipeline(), names=names, layout=layout)


def _user_error(message: str) -> Callable[[], Any]:
    def fail() -> Any:
        raise UserError(message)

    return fail


@app.command()
def generate(
    out: Annotated[str, typer.Option("--out", help="folder (local or s3://) for the event files")],
    persons: Annotated[int, typer.Option(min=1, help="people behind the events")] = 2000,
    partners: Annotated[int, typer.Option(min=1, max=500, help="partner stores")] = 8,
    days: Annotated[
        int, typer.Option(min=1, help="days of events from 2026-01-01 (past today: run with the --run-date it prints)")
    ] = 180,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same files)")] = 7,
    profile: Annotated[
        str,
        typer.Option(
            help="cross-partner (every event type) or purchases-only (one partner, purchase rows with customer "
            "ids only, cohorts that arrive and lapse; --partners is ignored; try --days 548)"
        ),
    ] = "cross-partner",
    config_file: ConfigOpt = None,
) -> None:
    """Synthetic event logs in the input contract, with `true_person_id` ground truth."""
    from jobs.storage import check_writable
    from jobs.synthetic import write_events
    from jobs.synthetic.profiles import PROFILES

    def run() -> Any:
        storage = _config(config_file).storage
        check_writable(out, storage)
        if profile not in PROFILES:
            raise UserError(f"--profile {profile!r}: one of {', '.join(PROFILES)}")
        return write_events(out, storage, persons=persons, partners=partners, days=days, seed=seed, profile=profile)

    _invoke(run)


@app.command()
def resolve(
    events: Annotated[str, typer.Option("--events", help="events file, folder or glob (local or s3://)")],
    out: Annotated[str, typer.Option("--out", help="run folder to write: ROOT/runs/RUN_ID")],
    config_file: ConfigOpt = None,
    address: AddressOpt = None,
) -> None:
    """Personas: quarantine/, events_resolved/, identity_map/, identity_audit/, personas/."""
    _invoke(lambda: _stages(_config(config_file, **{"events": events, "ray.address": address}), ["resolve"], out))


@app.command("evaluate-personas")
def evaluate_personas(
    run: RunOpt = None,
    truth_column: Annotated[str | None, typer.Option("--truth-column", help="ground-truth person column")] = None,
    config_file: ConfigOpt = None,
    address: AddressOpt = None,
) -> None:
    """Pairwise precision / recall / F1 of the personas against ground truth."""
    _invoke(
        lambda: _stages(
            _config(config_file, **{"evaluation.truth_column": truth_column, "ray.address": address}), ["evaluate"], run
        )
    )


@features_app.callback(invoke_without_command=True)
def features(
    ctx: typer.Context,
    run: RunOpt = None,
    as_of: DateOpt = None,
    config_file: ConfigOpt = None,
    address: AddressOpt = None,
) -> None:
    """Feature tables of every persona at each cut-off of the run plan (`--as-of` sets the scoring cut-off)."""
    if ctx.invoked_subcommand is not None:
        return
    overrides = {"features.as_of": as_of.date() if as_of else None, "ray.address": address}
    _invoke(lambda: _stages(_config(config_file, **overrides), ["features"], run))


@features_app.command("list")
def features_list(
    markdown: Annotated[bool, typer.Option("--markdown", help="print FEATURES.md instead of a table")] = False,
    config_file: ConfigOpt = None,
) -> None:
    """The feature catalogue: name, group, window, description."""
    from features.docs import render_catalog

    _invoke(lambda: render_catalog(_config(config_file).features, markdown=markdown))


@app.command()
def train(
    run: RunOpt = None,
    segment: Annotated[str | None, typer.Option("--segment", help="train only this segment")] = None,
    strict: StrictOpt = False,
    config_file: ConfigOpt = None,
    address: AddressOpt = None,
) -> None:
    """Labels and look-alike models on Ray Train XGBoost, with their quality reports."""
    overrides = {
        "training.only_segments": [segment] if segment else None,
        "training.strict": strict or None,
        "ray.address": address,
    }
    _invoke(lambda: _stages(_config(config_file, **overrides), ["labels", "train"], run))


@app.command()
def score(run: RunOpt = None, config_file: ConfigOpt = None, address: AddressOpt = None) -> None:
    """Scores, percentiles and segment membership for every eligible persona, and the run's report."""
    _invoke(lambda: _stages(_config(config_file, **{"ray.address": address}), ["score", "report"], run))


@app.command()
def export(
    run: RunOpt = None,
    to: Annotated[
        str | None, typer.Option("--to", help="exports ROOT (local or s3://bucket/prefix); default: export.root")
    ] = None,
    replace: ReplaceOpt = False,
    config_file: ConfigOpt = None,
    address: AddressOpt = None,
) -> None:
    """Per-partner segment exports with manifests."""
    overrides = {"export.root": to, "export.replace": replace or None, "ray.address": address}
    _invoke(lambda: _stages(_config(config_file, **overrides), ["export"], run))


def _exports_root(config: JobConfig) -> str:
    from jobs.config import ExportView

    return ExportView.from_config(config).root


@exports_app.command("list")
def exports_list(
    partner: Annotated[str, typer.Option("--partner", help="partner id")],
    root: ExportsRootOpt = None,
    config_file: ConfigOpt = None,
) -> None:
    """The partner's published exports (segment, run date, rows)."""
    from jobs.exports.partners import list_exports

    def run() -> Any:
        config = _config(config_file, **{"export.root": root})
        return list_exports(_exports_root(config), partner, config.storage)

    _invoke(run)


@exports_app.command("url")
def exports_url(
    partner: Annotated[str, typer.Option("--partner", help="partner id")],
    segment: Annotated[str, typer.Option("--segment", help="segment name")],
    root: ExportsRootOpt = None,
    expires: Annotated[int | None, typer.Option("--expires", help="seconds the URLs stay valid")] = None,
    config_file: ConfigOpt = None,
) -> None:
    """Presigned URLs for the partner's latest export of a segment."""
    from jobs.exports.partners import presigned_urls

    def run() -> Any:
        config = _config(config_file, **{"export.root": root, "export.url_expires_seconds": expires})
        return presigned_urls(
            _exports_root(config), partner, segment, config.storage, config.export.url_expires_seconds
        )

    _invoke(run)


@exports_app.command("keys")
def exports_keys(
    email: Annotated[str | None, typer.Option("--email", help="an email as your store has it")] = None,
    phone: Annotated[str | None, typer.Option("--phone", help="a phone as your store has it")] = None,
    country: Annotated[str | None, typer.Option("--country", help="the contact's country (ISO 3166-1 alpha-2)")] = None,
) -> None:
    """The export keys a partner computes for its own contacts (the manifests' key_recipe)."""
    from jobs.exports.keys import KEY_RECIPE, contact_keys

    def run() -> Any:
        if email is None and phone is None:
            raise UserError(
                "`segments exports keys` needs --email and/or --phone (with --country for national numbers)."
            )
        return {"key_recipe": KEY_RECIPE["version"], **contact_keys(email=email, phone=phone, country=country)}

    _invoke(run)


@exports_app.command("policy")
def exports_policy(
    partner: Annotated[str, typer.Option("--partner", help="partner id")],
    principal: Annotated[str, typer.Option("--principal", help="the partner's AWS principal ARN")],
    root: Annotated[str | None, typer.Option("--root", help="exports ROOT (s3://bucket/prefix)")] = None,
    config_file: ConfigOpt = None,
) -> None:
    """The partner's S3 bucket policy as JSON: read-only on its own prefix."""
    from jobs.exports.partners import bucket_policy

    _invoke(lambda: bucket_policy(_exports_root(_config(config_file, **{"export.root": root})), partner, principal))


@app.command("run")
def run_command(
    config_file: Annotated[Path, typer.Option("--config", help="YAML job config")],
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="run id (default: from config or the run date)")
    ] = None,
    run_date: RunDateOpt = None,
    replace: ReplaceOpt = False,
    strict: StrictOpt = False,
    address: AddressOpt = None,
) -> None:
    """The whole pipeline, stage by stage, resuming finished stages."""
    from jobs.run.pipeline import run_pipeline
    from jobs.stages import pipeline

    overrides = {
        "run_id": run_id,
        "run_date": run_date.date() if run_date else None,
        "export.replace": replace or None,
        "training.strict": strict or None,
        "ray.address": address,
    }
    _invoke(lambda: run_pipeline(_config(config_file, **overrides), pipeline()))


@config_app.command("show")
def config_show(config_file: ConfigOpt = None) -> None:
    """The resolved config as YAML, each field with its description and default."""
    _invoke(lambda: describe_config(_config(config_file)))


@app.command()
def demo(
    out: Annotated[str, typer.Option("--out", help="where the demo writes (local folder)")] = "demo-out",
    persons: Annotated[
        int,
        typer.Option(
            min=1000, help="people in the sample (fewer than 1000 leave the segments below their training minimums)"
        ),
    ] = 3000,
) -> None:
    """Generate a sample, run the whole pipeline on a local Ray, print where everything landed."""
    from jobs.run.demo import run_demo

    _invoke(lambda: run_demo(out=out, persons=persons, verbose=_console.verbose))


@app.command()
def submit(
    address: Annotated[str, typer.Option("--address", help="Ray dashboard address, e.g. http://127.0.0.1:8265")],
    config_file: Annotated[Path, typer.Option("--config", help="YAML job config")],
    run_date: RunDateOpt = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the logs until the job ends")] = False,
) -> None:
    """Submit the whole pipeline to a Ray cluster as a Ray Job."""
    from jobs.run.submit import submit_job

    _invoke(
        lambda: submit_job(
            address=address, config_file=config_file, run_date=run_date.date() if run_date else None, wait=wait
        )
    )


@app.command()
def status(
    job_id: Annotated[str, typer.Argument(help="Ray job id")],
    address: Annotated[str, typer.Option("--address", help="Ray dashboard address")] = "http://127.0.0.1:8265",
) -> None:
    """Status of a submitted job."""
    from jobs.run.submit import job_status

    _invoke(lambda: job_status(address=address, job_id=job_id))


@app.command()
def logs(
    job_id: Annotated[str, typer.Argument(help="Ray job id")],
    address: Annotated[str, typer.Option("--address", help="Ray dashboard address")] = "http://127.0.0.1:8265",
) -> None:
    """Logs of a submitted job."""
    from jobs.run.submit import job_logs

    _invoke(lambda: job_logs(address=address, job_id=job_id))


@app.command()
def publish(
    run: RunOpt = None,
    store: Annotated[str | None, typer.Option("--store", help="embedded (default) or redis")] = None,
    config_file: ConfigOpt = None,
    address: AddressOpt = None,
) -> None:
    """Make a finished run the current one online (ROOT/online/current.json)."""
    from jobs.serving.publish import run_publish

    def run_it() -> Any:
        config = _config(config_file, **{"ray.address": address})
        return run_publish(config, run_dir=_run_dir(config, run, "publish"), store=store)

    _invoke(run_it)


@serve_app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    root: Annotated[str | None, typer.Option("--root", help="ROOT holding online/ (local or s3://)")] = None,
    port: Annotated[int | None, typer.Option("--port", help="HTTP port of the Serve proxy (default 8000)")] = None,
    config_file: ConfigOpt = None,
    address: AddressOpt = None,
) -> None:
    """Serve profile lookups and live events for the current release of ROOT."""
    if ctx.invoked_subcommand is not None:
        return
    from jobs.serving.app import run_serve

    if root is None:
        _invoke(_user_error("`segments serve` needs --root ROOT (or use `segments serve keys create`)."))
    _invoke(lambda: run_serve(_config(config_file, **{"serving.port": port, "ray.address": address}), root=root))


@serve_keys_app.command("create")
def serve_keys_create(
    partner: Annotated[str, typer.Option("--partner", help="partner id the key belongs to")],
    root: Annotated[str, typer.Option("--root", help="ROOT holding online/ (local or s3://)")],
    config_file: ConfigOpt = None,
) -> None:
    """A new API key for a partner, printed once; only its hash is stored under ROOT/online/keys/."""
    from jobs.run.layout import OnlineLayout
    from jobs.serving.partner_keys import create_key
    from jobs.storage import check_writable

    def run() -> Any:
        config = _config(config_file)
        check_writable(OnlineLayout(root).keys, config.storage)
        return create_key(config, partner=partner, root=root)

    _invoke(run)
