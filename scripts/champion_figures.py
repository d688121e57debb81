"""Per segment: the champion decision and every candidate's out-of-time figures, from a real `segments run`.

Generates events (`segments generate`, the default cross-partner profile or `--profile purchases-only`), runs
`segments run` as a user runs it (a subprocess: the real CLI, Ray and all; its stages up to train, where the
champion is decided), then reads what the run wrote:
each segment's model card (`champion` block: candidates, decision, reason) and metrics (the look-alike's and
the RFM baseline's full figures: PR-AUC, ROC-AUC, lift and capture at the scoring `top_percent`), and the
run's summary.json. Prints one table; `--out` keeps the figures as JSON.

    flock /tmp/segments-heavy.lock timeout 600 .venv/bin/python scripts/champion_figures.py --persons 20000
    flock /tmp/segments-heavy.lock timeout 600 .venv/bin/python scripts/champion_figures.py \
        --profile purchases-only --persons 8000 --days 548
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time

from jobs.config import JobConfig, StorageConfig
from jobs.model import bundle, champion
from jobs.model.quality import pct_label
from jobs.run.layout import MODELS, RunLayout
from jobs.storage import TableIn
from jobs.synthetic.reference import START

SEGMENTS = os.path.join(os.path.dirname(sys.executable), "segments")


def _cli(*args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([SEGMENTS, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"segments {args[0]} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def _figures(metrics: dict, name: str, at: str) -> dict:
    """PR-AUC, ROC-AUC, lift and capture at `at` of a candidate: the metrics file holds the full figures of
    the look-alike and the RFM baseline; other candidates (the previous champion) have the card's two AUCs."""
    full = {champion.XGBOOST: metrics.get("model"), champion.RFM: metrics.get("rfm_baseline")}.get(name) or {}
    return {"lift": (full.get("lift") or {}).get(at), "capture": (full.get("capture") or {}).get(at)}


def collect(work: str, profile: str, persons: int, days: int, seed: int) -> dict:
    events, root = os.path.join(work, "events"), os.path.join(work, "root")
    seconds = {"generate": _cli("generate", "--out", events, "--persons", str(persons), "--days", str(days),
                                "--seed", str(seed), "--profile", profile)}  # fmt: skip
    # the pipeline up to train (the champion decision); score, export and report add nothing to these figures
    stages = ["resolve", "features", "labels", "train"]
    # the run date is the day after the generated history (it may lie after today: events past the run date
    # would be quarantined as implausible)
    run_date = (START + dt.timedelta(days=days)).date().isoformat()
    settings = {"events": events, "root": root, "run_id": "figures", "run_date": run_date, "stages": stages}
    config = JobConfig(**settings)
    config_file = os.path.join(work, "job.json")  # JSON is YAML: the CLI reads it as its config
    with open(config_file, "w") as f:
        json.dump(settings, f)
    seconds["run"] = _cli("run", "--config", config_file)
    layout = RunLayout(os.path.join(root, "runs", "figures"))
    with open(layout.summary) as f:
        summary = json.load(f)
    models = TableIn(MODELS, layout.table(MODELS), StorageConfig())
    at = pct_label(config.scoring.top_percent / 100)
    segments = {}
    for segment in config.segments:
        try:
            card = json.loads(models.file(RunLayout.model_file(segment.name, bundle.CARD)))
            metrics = json.loads(models.file(RunLayout.model_file(segment.name, bundle.METRICS)))
        except FileNotFoundError:
            segments[segment.name] = {"status": "no model files"}
            continue
        block = card.get("champion") or {}
        segments[segment.name] = {
            "status": card.get("status"),
            "chosen": block.get("chosen"),
            "reason": block.get("reason") or card.get("reason"),
            "base_rate": (metrics.get("model") or {}).get("base_rate"),
            "candidates": {
                name: {"pr_auc": entry.get("pr_auc"), "roc_auc": entry.get("roc_auc"), "alarms": entry.get("alarms")}
                | _figures(metrics, name, at)
                for name, entry in (block.get("candidates") or {}).items()
            },
        }
    return {
        "profile": profile,
        "persons": persons,
        "days": days,
        "seed": seed,
        "top_percent": at,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "run_status": summary.get("status"),
        "segments": segments,
    }


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(result: dict) -> str:
    at = result["top_percent"]
    lines = [
        f"profile {result['profile']}, {result['persons']} persons, {result['days']} days, seed {result['seed']}: "
        f"run {result['run_status']} ({result['seconds']})",
        f"| segment | status / champion | candidate | PR-AUC | ROC-AUC | lift@{at} | capture@{at} | alarms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, seg in result["segments"].items():
        decision = f"{seg.get('status')} / {seg.get('chosen')}"
        for candidate, c in (seg.get("candidates") or {"-": {}}).items():
            mark = " ✔" if candidate == seg.get("chosen") else ""
            lines.append(
                f"| {name} | {decision} | {candidate}{mark} | {_f(c.get('pr_auc'))} | {_f(c.get('roc_auc'))} | "
                f"{_f(c.get('lift'))} | {_f(c.get('capture'))} | {'; '.join(c.get('alarms') or []) or '-'} |"
            )
        lines.append(f"|  | base rate {_f(seg.get('base_rate'))} | {seg.get('reason')} | | | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cross-partner", choices=["cross-partner", "purchases-only"])
    parser.add_argument("--persons", type=int, default=20000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", default=None, help="write the figures as JSON here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        result = collect(work, args.profile, args.persons, args.days, args.seed)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(table(result))


if __name__ == "__main__":
    main()
