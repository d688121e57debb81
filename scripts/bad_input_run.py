#!/usr/bin/env python
"""A `segments resolve` run over JSON Lines of which half the lines are broken (issue 14's figure).

Writes `--lines` lines of synthetic events (`jobs.synthetic`), `--mutated` of them broken at random by one
of the mutations below (seeded), runs the real CLI (`segments resolve`, its own local Ray) with
`input.max_quarantine_share: 1.0` so the run completes, and checks from its summary that every line is
accounted for: rows in = lines, rows in = rows resolved + rows quarantined. Prints the figures and the
quarantine reasons as JSON; exits 1 if a line is missing.

    .venv/bin/python scripts/bad_input_run.py --lines 20000 --mutated 10000
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _set(field, value):
    return lambda row: {**row, field: value}


# Each takes a good row (dict) and returns the bytes of one line.
MUTATIONS = {
    "price_text": lambda r: _dump(_set("price", "abc")(r)),
    "price_numeric_text": lambda r: _dump(_set("price", "12.50")(r)),
    "quantity_fraction": lambda r: _dump(_set("quantity", 1.5)(r)),
    "email_object": lambda r: _dump(_set("email", {"a": 1})(r)),
    "category_list": lambda r: _dump(_set("category", ["x"])(r)),
    "truncated": lambda r: _dump(r)[: len(_dump(r)) // 2],
    "invalid_utf8": lambda r: _dump(r)[:-2] + b"\xff\xfe}",
    "nul_in_event_id": lambda r: _dump(_set("event_id", "\x00" + str(r["event_id"]))(r)),
    "ts_9999": lambda r: _dump(_set("ts", "9999-01-01T00:00:00Z")(r)),
    "ts_1970": lambda r: _dump(_set("ts", "1970-01-01T00:00:00Z")(r)),
    "ts_number": lambda r: _dump(_set("ts", 1767225600)(r)),
    "late_key": lambda r: _dump(_set("campaign", "spring")(r)),
    "not_an_object": lambda r: b"[1, 2, 3]",
    "unknown_event_type": lambda r: _dump(_set("event_type", "teleport")(r)),
    "missing_partner": lambda r: _dump({k: v for k, v in r.items() if k != "partner_id"}),
    "huge_value": lambda r: _dump(_set("city", "x" * 100_000)(r)),
    "deep_nesting": lambda r: _dump(r)[:-1] + b', "deep": ' + b"[" * 25_000 + b"]" * 25_000 + b"}",
    "bool_price": lambda r: _dump(_set("price", True)(r)),
}


def _dump(row: dict) -> bytes:
    return json.dumps(row, ensure_ascii=False).encode("utf-8")


def write_input(folder: Path, lines: int, mutated: int, seed: int) -> dict[str, int]:
    import pyarrow.compute as pc

    from jobs.synthetic import generate_events

    table = generate_events(persons=max(50, lines // 10), partners=4, days=60, seed=seed)
    table = table.slice(0, lines)
    assert table.num_rows == lines, f"the generator gave {table.num_rows} events, fewer than {lines}"
    table = table.set_column(
        table.schema.get_field_index("ts"), "ts", pc.strftime(table.column("ts"), format="%Y-%m-%dT%H:%M:%SZ")
    )
    rng = random.Random(seed)
    broken = set(rng.sample(range(lines), mutated))
    used: dict[str, int] = {}
    names = sorted(MUTATIONS)
    with open(folder / "events.jsonl", "wb") as out:
        for i, row in enumerate(table.to_pylist()):
            row = {k: v for k, v in row.items() if v is not None}
            if i in broken:
                name = rng.choice(names)
                used[name] = used.get(name, 0) + 1
                out.write(MUTATIONS[name](row) + b"\n")
            else:
                out.write(_dump(row) + b"\n")
    return dict(sorted(used.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--mutated", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bad-input-"))
    events = work / "events"
    events.mkdir()
    mutations = write_input(events, args.lines, args.mutated, args.seed)
    config = work / "job.yaml"
    config.write_text(json.dumps({"input": {"max_quarantine_share": 1.0}, "run_date": "2026-11-30"}))
    out = work / "run"
    done = subprocess.run(
        [
            str(ROOT / ".venv/bin/segments"),
            "resolve",
            "--events",
            str(events),
            "--out",
            str(out),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        sys.exit(f"segments resolve exited {done.returncode}")
    result = json.loads((out / "summary.json").read_text())["stages"]["resolve"]["result"]
    figures = {
        "lines": args.lines,
        "mutated": args.mutated,
        "mutations_used": mutations,
        "rows_in": result["rows_in"],
        "rows_resolved": result["rows_out"],
        "rows_quarantined": result["quarantined"],
        "reasons": result["reasons"],
        "traceback_on_console": "Traceback" in done.stderr,
        "stage_seconds": result["stage_seconds"],
    }
    print(json.dumps(figures, indent=2))
    accounted = result["rows_in"] == args.lines == result["rows_out"] + result["quarantined"]
    if not accounted or figures["traceback_on_console"]:
        sys.exit("a line is not accounted for (or a traceback reached the console)")


if __name__ == "__main__":
    main()
